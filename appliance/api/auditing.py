"""The API's side of the audit log: who is calling (:class:`Caller`), about which request
(:class:`RequestInfo`), and :class:`Auditor`, which appends events durably off the event loop.

``AuditLog.append_async`` waits, without blocking the event loop, until the event is committed (group
commit); its latency feeds the ``enclave_audit_commit_seconds`` histogram. :meth:`Auditor.record`
lets :class:`AuditUnavailableError` through (callers fail closed with 503); :meth:`record_quietly`
is for events that follow one already committed (the end of a generation), where failing the
client's request would not make the log more complete.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.orm import Session

from appliance.api.clock import Clock
from appliance.api.flood import SUMMARY_ACTION, FailureAggregator, Summary
from appliance.api.metrics import Metrics
from appliance.api.quotas import QuotaLimits
from appliance.audit.events import AuditEvent
from appliance.audit.models import ACTOR_LEN, TARGET_LEN
from appliance.audit.redact import redact
from appliance.auth.principal import Principal
from appliance.auth.sso import SignedIn
from shared.errors import AuditUnavailableError, EnclaveError, InputError

__all__ = ["AuditSink", "Auditor", "Caller", "RequestInfo", "clip", "signed_in_event", "summary_event"]

log = logging.getLogger(__name__)


class AuditSink(Protocol):
    """What the API needs of :class:`appliance.audit.AuditLog`."""

    async def append_async(self, event: AuditEvent) -> int: ...

    def append_in(self, session: Session, event: AuditEvent) -> int: ...


@dataclass(frozen=True)
class RequestInfo:
    request_id: str
    client_address: str


@dataclass(frozen=True)
class Caller:
    """An authenticated principal plus what the API derives from its policy."""

    principal: Principal

    @property
    def actor(self) -> str:
        return self.principal.username

    @property
    def quota_key(self) -> int:
        return self.principal.user_id

    @property
    def limits(self) -> QuotaLimits:
        p = self.principal.policy
        return QuotaLimits(
            requests_per_minute=p.requests_per_minute,
            tokens_per_minute=p.tokens_per_minute,
            concurrent_streams=p.concurrent_streams,
            max_prompt_tokens=p.max_prompt_tokens,
            max_output_tokens=p.max_output_tokens,
        )

    @property
    def capture_mode(self) -> str:
        return str(self.principal.policy.capture_mode)

    def allows_model(self, model_id: str) -> bool:
        return self.principal.policy.allows_model(model_id)


class Auditor:
    def __init__(
        self, sink: AuditSink, *, metrics: Metrics, clock: Clock, failures: FailureAggregator | None = None
    ) -> None:
        self._sink = sink
        self._metrics = metrics
        self._clock = clock
        self.failures = failures or FailureAggregator(interval_s=60.0, per_source=10, per_interval=600)

    async def record_unauthenticated(
        self, info: RequestInfo, *, action: str, reason: str, **fields: Any
    ) -> None:
        """A failure by someone we cannot name: recorded on its own while its source is under the
        cap, else counted into its interval's summary (see appliance.api.flood)."""
        record, closed = self.failures.offer(info.client_address, action, reason, now=self._clock.monotonic())
        if not record:
            self._metrics.audit_suppressed.inc(action=action)
        await self.write_summaries(closed)
        if record:
            details = {"reason": reason, **dict(fields.pop("details", None) or {})}
            await self.record_quietly(None, info, action=action, details=details, **fields)

    async def write_summaries(self, summaries: list[Summary]) -> None:
        for summary in summaries:
            await self.record_quietly(None, RequestInfo("", ""), **summary_fields(summary))

    async def _append(self, event: AuditEvent) -> None:
        start = self._clock.monotonic()
        try:
            await self._sink.append_async(event)
        except (AuditUnavailableError, InputError):
            # InputError: the request carried something the log cannot store (text that is not
            # valid Unicode, say) — the client's to fix (400), and nothing is generated unrecorded.
            raise
        except EnclaveError as exc:
            raise AuditUnavailableError(f"audit log cannot record {event.action}: {exc}") from exc
        self._metrics.audit_commit.observe(self._clock.monotonic() - start)

    async def record(
        self,
        caller: Caller | None,
        info: RequestInfo,
        *,
        action: str,
        target: str = "",
        outcome: str = "success",
        details: Mapping[str, Any] | None = None,
        content: Mapping[str, Any] | None = None,
        actor: str | None = None,
    ) -> None:
        """Append one event and wait until it is durable; AuditUnavailableError if it cannot be."""
        event = AuditEvent(
            action=action,
            actor=clip(actor if actor is not None else (caller.actor if caller else "anonymous"), ACTOR_LEN),
            target=clip(target, TARGET_LEN),
            outcome=outcome,
            request_id=info.request_id,
            client_address=info.client_address,
            details=dict(details or {}),
            content=_content(content),
            capture=caller.capture_mode if caller and content is not None else "none",  # type: ignore[arg-type]
        )
        await self._append(event)

    async def record_quietly(self, caller: Caller | None, info: RequestInfo, **fields: Any) -> None:
        try:
            await self.record(caller, info, **fields)
        except (AuditUnavailableError, InputError) as exc:
            # One line: a traceback here is the same every time and an attacker can make it often.
            log.error("audit: could not record %s for %s: %s", fields.get("action"), info.request_id, exc)


def summary_fields(summary: Summary) -> dict[str, Any]:
    """The audit fields of an interval's ``auth.failures.suppressed`` record."""
    return {"action": SUMMARY_ACTION, "target": "", "outcome": "failure", "details": summary.details}


def summary_event(summary: Summary) -> AuditEvent:
    return AuditEvent(actor="anonymous", **summary_fields(summary))


def signed_in_event(
    action: str, done: SignedIn, source: Mapping[str, str], request_id: str, address: str
) -> AuditEvent:
    """The success record of an outside sign-in (SSO, LDAP): who, from which provider, with which groups."""
    return AuditEvent(
        action=action,
        actor=done.username,
        target=f"user:{done.username}",
        outcome="success",
        request_id=request_id,
        client_address=address,
        details={
            **source,
            "subject": done.subject,
            "groups": list(done.groups),
            "created": done.created,
            "changes": done.changes,
            "expires_at": done.expires_at.isoformat(),
        },
    )


def clip(text: str, limit: int) -> str:
    """``text`` (a request path, a typed user name) cut to fit a column of ``limit`` characters,
    saying how much was cut: an over-long path must still leave its record. Redacted first, so the
    cut cannot split a secret into pieces the redaction filter no longer recognises."""
    if len(text) <= limit:
        return text
    text = redact(text)
    if len(text) <= limit:
        return text
    marker = f"...[{len(text)} chars]"
    return text[: limit - len(marker)] + marker


def _content(content: Mapping[str, Any] | None) -> dict[str, str] | None:
    """Content fields as text: structured prompts (chat messages) become canonical JSON strings."""
    if content is None:
        return None
    out: dict[str, str] = {}
    for name, value in content.items():
        out[name] = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
    return out
