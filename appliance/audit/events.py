"""What callers hand the audit log (:class:`AuditEvent`) and what it stores (:class:`AuditRecord`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from appliance.audit import models
from appliance.audit.capture import CAPTURE_MODES, CaptureMode, SealedBlob, digest_content, seal_content
from appliance.audit.chain import canonical_json, check_json_value
from appliance.audit.keys import AuditKeys
from appliance.audit.redact import redact
from shared.errors import InputError

__all__ = ["AuditEvent", "AuditRecord", "PreparedEvent", "prepare_event"]


@dataclass(frozen=True, kw_only=True)
class AuditEvent:
    """One thing that happened. ``details`` holds JSON values without floats; for admin changes
    put ``{"old": ..., "new": ...}`` there. ``content`` (e.g. ``{"prompt": ..., "completion": ...}``)
    is kept only as ``capture`` says: dropped (``none``), HMAC'ed (``digest``) or sealed."""

    action: str
    actor: str
    target: str = ""
    outcome: str = "success"
    request_id: str = ""
    client_address: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)
    content: Mapping[str, str] | None = None
    capture: CaptureMode = "none"


@dataclass(frozen=True, kw_only=True)
class AuditRecord:
    """A stored record, as read back or exported (``details``/``content`` parsed)."""

    seq: int
    time: str
    actor: str
    action: str
    target: str
    outcome: str
    request_id: str
    client_address: str
    details: dict[str, Any]
    content: dict[str, Any] | None
    prev_hash: str
    hash: str

    @classmethod
    def from_row(cls, row: Any) -> AuditRecord:
        return cls(
            seq=row.seq,
            time=row.time,
            actor=row.actor,
            action=row.action,
            target=row.target,
            outcome=row.outcome,
            request_id=row.request_id,
            client_address=row.client_address,
            details=json.loads(row.details),
            content=None if row.content is None else json.loads(row.content),
            prev_hash=row.prev_hash,
            hash=row.hash,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "time": self.time,
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "outcome": self.outcome,
            "request_id": self.request_id,
            "client_address": self.client_address,
            "details": self.details,
            "content": self.content,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


@dataclass(frozen=True)
class PreparedEvent:
    """An event redacted, validated and encoded: everything but seq, time and the chain links."""

    actor: str
    action: str
    target: str
    outcome: str
    request_id: str
    client_address: str
    details_json: str
    content_json: str | None
    sealed: SealedBlob | None


_LIMITS = (
    ("actor", models.ACTOR_LEN),
    ("action", models.ACTION_LEN),
    ("target", models.TARGET_LEN),
    ("outcome", models.OUTCOME_LEN),
    ("request_id", models.REQUEST_ID_LEN),
    ("client_address", models.CLIENT_ADDRESS_LEN),
)


def _text(name: str, value: object, limit: int) -> str:
    if not isinstance(value, str):
        raise InputError(f"audit {name} must be a string")
    value = redact(value)
    if len(value) > limit:
        raise InputError(f"audit {name} is longer than {limit} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"audit {name} is not valid Unicode text") from None
    return value


class _NotJson(Exception):
    pass


def _clean(value: Any) -> Any:
    """``value`` with every string redacted, in one walk that also checks the types the canonical
    encoding allows (exact types first: this runs for every event). On a bad value it raises
    _NotJson and :func:`check_json_value` is asked for the message that names the place."""
    kind = type(value)
    if kind is str:
        return redact(value)
    if kind is int or kind is bool or value is None:
        return value
    if kind is dict or isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if type(key) is not str and not isinstance(key, str):
                raise _NotJson
            out[redact(key)] = _clean(item)
        return out
    if kind is list or kind is tuple:
        return [_clean(item) for item in value]
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, int) and not isinstance(value, float):
        return value
    raise _NotJson


def prepare_event(event: AuditEvent, keys: AuditKeys) -> PreparedEvent:
    """Redact, validate and capture; raises InputError so a bad event never joins a batch."""
    texts = {name: _text(name, getattr(event, name), limit) for name, limit in _LIMITS}
    if not texts["action"] or not texts["outcome"]:
        raise InputError("audit action and outcome must not be empty")
    try:
        details = _clean(event.details)
    except _NotJson:
        check_json_value(event.details)  # raises the InputError that names the bad value
        raise InputError("audit details are not valid JSON") from None
    try:
        details_json = canonical_json(details)
        details_json.encode("utf-8")
    except (ValueError, UnicodeEncodeError):
        raise InputError("audit details are not valid JSON text") from None
    if event.capture not in CAPTURE_MODES:
        raise InputError(f"unknown capture mode {event.capture!r} (one of {', '.join(CAPTURE_MODES)})")
    content_json: str | None = None
    sealed: SealedBlob | None = None
    if event.content is not None and event.capture == "digest":
        content_json = canonical_json(digest_content(keys, event.content))
    elif event.content is not None and event.capture == "sealed":
        reference, sealed = seal_content(keys, event.content)
        content_json = canonical_json(reference)
    return PreparedEvent(
        actor=texts["actor"],
        action=texts["action"],
        target=texts["target"],
        outcome=texts["outcome"],
        request_id=texts["request_id"],
        client_address=texts["client_address"],
        details_json=details_json,
        content_json=content_json,
        sealed=sealed,
    )
