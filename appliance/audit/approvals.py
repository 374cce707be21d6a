"""Two-person reads of sealed content (``sealed_read_approvals = 2``).

One auditor asks to read a sealed ref (:func:`request_read`, with a reason); a *different* auditor
approves (:func:`approve`); the requester's next read of that ref takes the approval
(:func:`take_approval`) and its audit record names both. An approval is good for one read, by
its requester, of its ref, until the request expires (:data:`REQUEST_TTL`). Nobody approves their
own request, and an admin cannot stand in: only the auditor role holds ``audit:decrypt``.

Each function takes the caller's Session and flushes but never commits, so the caller appends the
audit record of the step in the same transaction. Time is passed in.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from appliance.audit.models import AuditSealedRow, SealedReadRequest
from appliance.db.models import User
from shared.errors import ConflictError, InputError, NotFoundError, PermissionDeniedError

__all__ = ["REQUEST_TTL", "ReadRequest", "approve", "pending", "request_read", "take_approval"]

# Long enough for a second auditor in another time zone to see the request, short enough that an
# approval does not linger as a standing permission.
REQUEST_TTL = dt.timedelta(hours=24)
_REASON_MAX = 512


@dataclass(frozen=True, kw_only=True)
class ReadRequest:
    id: int
    ref: str
    requested_by: str
    reason: str
    created_at: dt.datetime
    expires_at: dt.datetime
    approved_by: str | None
    approved_at: dt.datetime | None
    used_at: dt.datetime | None

    def status(self, now: dt.datetime) -> str:
        if self.used_at is not None:
            return "used"
        if now >= self.expires_at:
            return "expired"
        return "approved" if self.approved_by is not None else "pending"


def _name(session: Session, user_id: int | None) -> str | None:
    return None if user_id is None else session.scalar(select(User.username).where(User.id == user_id))


def _info(session: Session, row: SealedReadRequest) -> ReadRequest:
    return ReadRequest(
        id=row.id,
        ref=row.ref,
        requested_by=_name(session, row.requester_id) or "",
        reason=row.reason,
        created_at=row.created_at,
        expires_at=row.expires_at,
        approved_by=_name(session, row.approver_id),
        approved_at=row.approved_at,
        used_at=row.used_at,
    )


def request_read(session: Session, ref: str, *, requester_id: int, reason: str, now: dt.datetime) -> ReadRequest:
    """Ask for a second auditor's approval to read ``ref`` (which must exist and not be purged)."""
    reason = reason.strip()
    if not reason or len(reason) > _REASON_MAX:
        raise InputError(f"reason: say why the content must be read (1..{_REASON_MAX} characters)")
    sealed = session.scalar(select(AuditSealedRow.wrapped_key).where(AuditSealedRow.ref == ref))
    if sealed is None:
        raise NotFoundError(f"no sealed content {ref!r} (or it was purged)")
    row = SealedReadRequest(
        ref=ref, requester_id=requester_id, reason=reason, created_at=now, expires_at=now + REQUEST_TTL
    )
    session.add(row)
    session.flush()
    return _info(session, row)


def approve(session: Session, request_id: int, *, approver_id: int, now: dt.datetime) -> ReadRequest:
    """A second auditor's approval of request ``request_id``."""
    row = session.get(SealedReadRequest, request_id, with_for_update=True)
    if row is None:
        raise NotFoundError(f"no read request {request_id}")
    if row.requester_id == approver_id:
        raise PermissionDeniedError("a read request needs another auditor's approval, not its requester's")
    info = _info(session, row)
    if info.status(now) != "pending":
        raise ConflictError(f"read request {request_id} is {info.status(now)}, not pending")
    row.approver_id, row.approved_at = approver_id, now
    session.flush()
    return _info(session, row)


def take_approval(session: Session, ref: str, *, requester_id: int, now: dt.datetime) -> ReadRequest:
    """Use up the requester's approved, unexpired request for ``ref``; PermissionDeniedError if none."""
    row = session.scalar(
        select(SealedReadRequest)
        .where(
            SealedReadRequest.ref == ref,
            SealedReadRequest.requester_id == requester_id,
            SealedReadRequest.approver_id.is_not(None),
            SealedReadRequest.used_at.is_(None),
            SealedReadRequest.expires_at > now,
        )
        .order_by(SealedReadRequest.id)
        .limit(1)
        .with_for_update()
    )
    if row is None:
        raise PermissionDeniedError(
            "reading sealed content needs a second auditor's approval on this appliance: "
            f"POST /v1/audit/sealed/{ref}/requests, then have another auditor approve it"
        )
    row.used_at = now
    session.flush()
    return _info(session, row)


def pending(session: Session, *, now: dt.datetime) -> list[ReadRequest]:
    """Requests still waiting for approval, oldest first."""
    rows = session.scalars(
        select(SealedReadRequest)
        .where(
            SealedReadRequest.approver_id.is_(None),
            SealedReadRequest.used_at.is_(None),
            SealedReadRequest.expires_at > now,
        )
        .order_by(SealedReadRequest.id)
    ).all()
    return [_info(session, row) for row in rows]
