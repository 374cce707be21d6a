"""Tamper-evident audit log that fails closed.

Use it like this (one ``AuditLog`` per process per database; thread-safe)::

    from appliance.audit import AuditEvent, AuditLog, load_audit_keys

    audit = AuditLog(engine, load_audit_keys(settings),          # settings.keys_dir
                     checkpoint_every=settings.audit_checkpoint_every,
                     checkpoint_interval_s=settings.audit_checkpoint_interval_s)
    # or: audit = AuditLog.from_settings(settings, engine)

    seq = audit.append(AuditEvent(action="auth.login.failed", actor="alice", outcome="failure",
                                  request_id=rid, client_address=ip, details={"reason": "bad password"}))
    seq = await audit.append_async(AuditEvent(action="generation.requested", actor=user, target=project,
                                              details={"model": m}))   # BEFORE any token; on
                                                                        # AuditUnavailableError -> 503
    with uow() as session:                      # admin change and its event: one transaction
        user.role = "admin"
        audit.append_in(session, AuditEvent(action="admin.user.role_changed", actor=admin,
                                            target=f"user:{user.name}",
                                            details={"old": {"role": "developer"}, "new": {"role": "admin"}}))
    audit.append(AuditEvent(action="generation.completed", actor=user, target=project,
                            details={"finish_reason": "stop", "prompt_tokens": 12, "latency_ms": 840},
                            content={"prompt": prompt, "completion": text}, capture=policy.capture_mode))

Appending
    ``append(event) -> int``                the seq, once the event is durably committed (group
                                            commit: concurrent appends share one transaction)
    ``await append_async(event) -> int``    the same without blocking an event loop
    ``submit(event) -> Future[int]``        the same as a future
    ``append_in(session_or_connection, event) -> int``   inside the caller's transaction
    All raise :class:`shared.errors.AuditUnavailableError` when the store cannot commit (full disk,
    read-only, unreachable) — the caller must then refuse what it was about to do — and
    :class:`shared.errors.InputError` for a malformed event (float in details, field too long).

:class:`AuditEvent` fields: ``action`` (``auth.login.failed``, ``generation.completed``,
``admin.user.role_changed``, ...), ``actor``, ``target``, ``outcome`` (``success`` | ``failure`` |
``denied`` | ...), ``request_id``, ``client_address``, ``details`` (JSON without floats; admin changes
put ``{"old": ..., "new": ...}``), ``content`` (``{"prompt": ..., "completion": ...}``) and
``capture`` (``"none"`` | ``"digest"`` | ``"sealed"``, from the policy). Every string is redacted
(:func:`redact`) before it is digested, sealed or stored.

Checkpoints and verification
    ``checkpoint() -> Checkpoint``          sign (seq, head hash, time) now; also made automatically
                                            every ``checkpoint_every`` events / ``checkpoint_interval_s``
    ``verify(*, checkpoint=None) -> VerifyReport``   ``.ok``, ``.summary()``, ``.problem`` (seq, kind)
    ``verify_export(lines, keys=..., checkpoint=...)``  third-party check of a JSONL/CEF export
    ``write_checkpoint_file(cp, path)`` / ``read_checkpoint_file(path)``

Reading (auditor features; the caller enforces the route permission, these re-check ``role``)
    ``query(AuditFilter(...), limit=100, cursor=None) -> Page``   newest first; ``page.next_cursor``
    ``export("jsonl" | "cef", since=datetime | None) -> Iterator[str]``
    ``read_sealed(ref, actor=..., role=...) -> dict[str, str]``   decrypt sealed content; the read
        (``audit.content.read``) is durably appended before the plaintext is returned, and if it
        cannot be, nothing is returned; non-auditors get PermissionDeniedError (and a ``denied``
        record)
    ``test_digest(seq, field, candidate, actor=..., role=...) -> bool``   check a candidate text
    ``purge_sealed(before, actor=..., reason="") -> int``   crypto-shred sealed content captured
        before ``before`` (recorded as ``audit.content.purged`` with the range shredded);
        ``enclave audit purge --before 90d`` from the shell

Retention (:mod:`appliance.audit.retention`)
    ``apply_sealed_retention(log, settings) -> int | None``   shred sealed content older than
        ``settings.audit_sealed_retention_days`` (0 = keep forever -> None). The serve runtime calls
        it periodically (e.g. hourly, from a timer thread or ``asyncio.to_thread``); it records a
        purge only when something was shredded and raises AuditUnavailableError on an outage

Keys: ``create_audit_keys(settings.keys_dir)`` (``enclave init``), ``load_audit_keys(settings)``;
see :mod:`appliance.audit.keys`. The record encoding is specified in :mod:`appliance.audit.chain`,
the checkpoint signature in :mod:`appliance.audit.checkpoints`.

Forwarding: ``SyslogForwarder.from_settings(settings, engine)`` (None unless ``audit_syslog`` is
set) then ``.start()`` / ``.stop()``; it tails committed records to an RFC 5424 collector over TCP
with octet counting, resuming from ``<data>/audit_syslog.cursor``.
"""

from __future__ import annotations

from appliance.audit.capture import CAPTURE_MODES, CaptureMode
from appliance.audit.checkpoints import Checkpoint, read_checkpoint_file, write_checkpoint_file
from appliance.audit.events import AuditEvent, AuditRecord
from appliance.audit.keys import AuditKeys, create_audit_keys, load_audit_keys, load_public_key
from appliance.audit.log import AUDITOR_ROLE, AuditLog
from appliance.audit.query import EXPORT_FORMATS, AuditFilter, Page
from appliance.audit.redact import redact
from appliance.audit.retention import apply_sealed_retention, parse_cutoff
from appliance.audit.syslog import SyslogForwarder
from appliance.audit.verify import Problem, VerifyReport, verify_export, verify_export_file

__all__ = [
    "AUDITOR_ROLE",
    "CAPTURE_MODES",
    "EXPORT_FORMATS",
    "AuditEvent",
    "AuditFilter",
    "AuditKeys",
    "AuditLog",
    "AuditRecord",
    "CaptureMode",
    "Checkpoint",
    "Page",
    "Problem",
    "SyslogForwarder",
    "VerifyReport",
    "apply_sealed_retention",
    "create_audit_keys",
    "load_audit_keys",
    "load_public_key",
    "parse_cutoff",
    "read_checkpoint_file",
    "redact",
    "verify_export",
    "verify_export_file",
    "write_checkpoint_file",
]
