"""The audit log over HTTP, under ``/v1/audit``: query (filters + cursor pagination), verify, export
(``jsonl`` | ``cef``), sealed-content read (and, with ``sealed_read_approvals = 2``, the read
requests a second auditor approves) and digest test. Nothing here can change a record.

Exports are written to a spooled temporary file in one worker thread (the log reads them from one
database snapshot), then streamed; every export and every content read is itself audited.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import AsyncIterator
from typing import IO, Any, Literal

import anyio
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from appliance.api.auditing import Caller, RequestInfo
from appliance.api.errors import ERROR_RESPONSES
from appliance.api.state import MAX_ID, AppState, app_state, caller_with, request_info
from appliance.audit import approvals
from appliance.audit.events import AuditEvent
from appliance.audit.query import AuditFilter
from appliance.auth.roles import Permission
from shared.errors import PermissionDeniedError

__all__ = ["router"]

router = APIRouter(prefix="/v1/audit", tags=["audit"])

_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    404: ERROR_RESPONSES[400] | {"description": "No such record or sealed content (or it was purged)"},
    409: ERROR_RESPONSES[400] | {"description": "Sealed content does not decrypt (altered)"},
}


class AuditRecordOut(BaseModel):
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


class AuditPage(BaseModel):
    records: list[AuditRecordOut]
    next_cursor: int | None = Field(description="pass as `cursor` for the next (older) page")


class CheckpointOut(BaseModel):
    seq: int
    head_hash: str
    time: str
    key_id: str
    signature: str


class VerifyOut(BaseModel):
    ok: bool
    total: int
    valid: int
    problem: str | None
    problem_seq: int | None
    last_checkpoint: CheckpointOut | None
    summary: str


class DigestTest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seq: int = Field(ge=1, le=MAX_ID)
    field: str = Field(min_length=1, max_length=64)
    candidate: str = Field(max_length=4 * 1024 * 1024)


class DigestResult(BaseModel):
    match: bool


def _utc(moment: dt.datetime | None) -> dt.datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment


@router.get("/events", response_model=AuditPage, responses=_RESPONSES, summary="Query records, newest first")
async def query_events(
    request: Request,
    actor: str | None = Query(default=None, max_length=255),
    action: str | None = Query(
        default=None, max_length=128, description="exact, or a prefix ending in '.' or '*'"
    ),
    target: str | None = Query(default=None, max_length=512),
    outcome: str | None = Query(default=None, max_length=32),
    request_id: str | None = Query(default=None, max_length=128),
    since: dt.datetime | None = Query(default=None, description="inclusive; UTC if no offset is given"),
    until: dt.datetime | None = Query(default=None, description="exclusive"),
    cursor: int | None = Query(default=None, ge=1, le=MAX_ID),
    limit: int = Query(default=100, ge=1, le=1000),
    caller: Caller = Depends(caller_with(Permission.AUDIT_READ)),
) -> AuditPage:
    log = app_state(request).audit_log
    filters = AuditFilter(
        actor=actor,
        action=action,
        target=target,
        outcome=outcome,
        request_id=request_id,
        since=_utc(since),
        until=_utc(until),
    )
    page = await anyio.to_thread.run_sync(lambda: log.query(filters, limit=limit, cursor=cursor))
    return AuditPage(
        records=[AuditRecordOut(**r.as_dict()) for r in page.records], next_cursor=page.next_cursor
    )


@router.get("/verify", response_model=VerifyOut, responses=_RESPONSES, summary="Verify the whole chain")
async def verify(
    request: Request, caller: Caller = Depends(caller_with(Permission.AUDIT_VERIFY))
) -> VerifyOut:
    state = app_state(request)
    report = await anyio.to_thread.run_sync(state.audit_log.verify)
    cp = report.last_checkpoint
    await state.auditor.record(
        caller,
        request_info(request),
        action="audit.verified",
        target="audit",
        outcome="success" if report.ok else "failure",
        details={
            "total": report.total,
            "valid": report.valid,
            "problem": str(report.problem) if report.problem else None,
        },
    )
    return VerifyOut(
        ok=report.ok,
        total=report.total,
        valid=report.valid,
        problem=str(report.problem) if report.problem else None,
        problem_seq=report.problem.seq if report.problem else None,
        last_checkpoint=CheckpointOut(
            seq=cp.seq, head_hash=cp.head_hash, time=cp.time, key_id=cp.key_id, signature=cp.signature
        )
        if cp
        else None,
        summary=report.summary(),
    )


def _spool(lines: Any) -> IO[bytes]:
    # Closed by _drain once streamed (or by the GC if the client never reads it).
    spool = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024)  # noqa: SIM115
    for line in lines:
        spool.write(line.encode("utf-8") + b"\n")
    spool.seek(0)
    return spool


async def _drain(spool: IO[bytes]) -> AsyncIterator[bytes]:
    try:
        while chunk := spool.read(64 * 1024):
            yield chunk
    finally:
        spool.close()


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={
        **_RESPONSES,
        200: {
            "description": "One record per line",
            "content": {
                "application/x-ndjson": {"schema": {"type": "string"}},
                "text/plain": {"schema": {"type": "string"}},
            },
        },
    },
    summary="Export records with every chain field (jsonl or CEF)",
)
async def export(
    request: Request,
    format: Literal["jsonl", "cef"] = Query(default="jsonl"),
    since: dt.datetime | None = Query(
        default=None, description="from the first record at or after this time"
    ),
    caller: Caller = Depends(caller_with(Permission.AUDIT_EXPORT)),
) -> StreamingResponse:
    state = app_state(request)
    # Record the export first: if the log cannot take the record, nothing leaves (fail closed).
    await state.auditor.record(
        caller,
        request_info(request),
        action="audit.exported",
        target="audit",
        details={"format": format, "since": since.isoformat() if since else None},
    )
    log = state.audit_log
    spool = await anyio.to_thread.run_sync(lambda: _spool(log.export(format, since=_utc(since))))
    media = "application/x-ndjson" if format == "jsonl" else "text/plain; charset=utf-8"
    return StreamingResponse(
        _drain(spool),
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="enclave-audit.{format}"'},
    )


_Ref = Path(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_decrypt = caller_with(Permission.AUDIT_DECRYPT)


class ReadRequestCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=512, description="why the content must be read")


class ReadRequestOut(BaseModel):
    id: int
    ref: str
    requested_by: str
    reason: str
    created_at: dt.datetime
    expires_at: dt.datetime
    approved_by: str | None
    approved_at: dt.datetime | None
    status: str


def _request_out(info: approvals.ReadRequest, now: dt.datetime) -> ReadRequestOut:
    return ReadRequestOut(
        id=info.id,
        ref=info.ref,
        requested_by=info.requested_by,
        reason=info.reason,
        created_at=info.created_at,
        expires_at=info.expires_at,
        approved_by=info.approved_by,
        approved_at=info.approved_at,
        status=info.status(now),
    )


def _take_approval(state: AppState, caller: Caller, ref: str, info: RequestInfo) -> dict[str, Any]:
    """Under ``sealed_read_approvals = 2``: use up the caller's approved request for ``ref`` (a
    refusal is recorded, then raised); what the read's record says about it."""
    with state.uow() as session:
        try:
            taken = approvals.take_approval(
                session, ref, requester_id=caller.principal.user_id, now=state.clock.now()
            )
        except PermissionDeniedError:
            state.audit_log.append_in(
                session,
                AuditEvent(
                    action="audit.content.read",
                    actor=caller.actor,
                    target=ref,
                    outcome="denied",
                    request_id=info.request_id,
                    client_address=info.client_address,
                    details={"reason": "no approved read request"},
                ),
            )
            session.commit()
            raise
    return {"approved_by": taken.approved_by, "read_request": taken.id}


@router.get(
    "/sealed/{ref}",
    response_model=dict[str, str],
    responses=_RESPONSES,
    summary="Decrypt sealed content (auditors; the read is itself audited first). With "
    "sealed_read_approvals = 2, only after another auditor approved the caller's read request",
)
async def read_sealed(request: Request, ref: str = _Ref, caller: Caller = Depends(_decrypt)) -> dict[str, str]:
    state = app_state(request)
    log = state.audit_log
    info = request_info(request)
    role = caller.principal.role.value if caller.principal.role else ""

    def run() -> dict[str, str]:
        approval = _take_approval(state, caller, ref, info) if state.settings.sealed_read_approvals > 1 else None
        return log.read_sealed(
            ref,
            actor=caller.actor,
            role=role,
            request_id=info.request_id,
            client_address=info.client_address,
            approval=approval,
        )

    return await anyio.to_thread.run_sync(run)


@router.post(
    "/sealed/{ref}/requests",
    response_model=ReadRequestOut,
    status_code=201,
    responses=_RESPONSES,
    summary="Ask another auditor to approve reading sealed content (sealed_read_approvals = 2)",
)
async def request_sealed_read(
    body: ReadRequestCreate, request: Request, ref: str = _Ref, caller: Caller = Depends(_decrypt)
) -> ReadRequestOut:
    state = app_state(request)
    info = request_info(request)

    def run() -> ReadRequestOut:
        now = state.clock.now()
        with state.uow() as session:
            made = approvals.request_read(
                session, ref, requester_id=caller.principal.user_id, reason=body.reason, now=now
            )
            state.audit_log.append_in(
                session,
                AuditEvent(
                    action="audit.content.read_requested",
                    actor=caller.actor,
                    target=ref,
                    request_id=info.request_id,
                    client_address=info.client_address,
                    details={"read_request": made.id, "reason": made.reason},
                ),
            )
        return _request_out(made, now)

    return await anyio.to_thread.run_sync(run)


@router.get(
    "/read-requests",
    response_model=list[ReadRequestOut],
    responses=_RESPONSES,
    summary="Read requests of sealed content waiting for a second auditor",
)
async def list_read_requests(request: Request, caller: Caller = Depends(_decrypt)) -> list[ReadRequestOut]:
    state = app_state(request)

    def run() -> list[ReadRequestOut]:
        now = state.clock.now()
        with state.read_uow() as session:
            return [_request_out(r, now) for r in approvals.pending(session, now=now)]

    return await anyio.to_thread.run_sync(run)


@router.post(
    "/read-requests/{request_id}/approve",
    response_model=ReadRequestOut,
    responses=_RESPONSES,
    summary="Approve another auditor's read request (never one's own); good for one read",
)
async def approve_read_request(
    request: Request,
    request_id: int = Path(ge=1, le=MAX_ID),
    caller: Caller = Depends(_decrypt),
) -> ReadRequestOut:
    state = app_state(request)
    info = request_info(request)

    def run() -> ReadRequestOut:
        now = state.clock.now()
        with state.uow() as session:
            approved = approvals.approve(session, request_id, approver_id=caller.principal.user_id, now=now)
            state.audit_log.append_in(
                session,
                AuditEvent(
                    action="audit.content.read_approved",
                    actor=caller.actor,
                    target=approved.ref,
                    request_id=info.request_id,
                    client_address=info.client_address,
                    details={"read_request": approved.id, "requested_by": approved.requested_by},
                ),
            )
        return _request_out(approved, now)

    return await anyio.to_thread.run_sync(run)


@router.post(
    "/digest-test",
    response_model=DigestResult,
    responses=_RESPONSES,
    summary="Whether a candidate text is what a record's digest was made of (audited)",
)
async def digest_test(
    body: DigestTest, request: Request, caller: Caller = Depends(caller_with(Permission.AUDIT_READ))
) -> DigestResult:
    log = app_state(request).audit_log
    info = request_info(request)
    role = caller.principal.role.value if caller.principal.role else ""
    match = await anyio.to_thread.run_sync(
        lambda: log.test_digest(
            body.seq,
            body.field,
            body.candidate,
            actor=caller.actor,
            role=role,
            request_id=info.request_id,
            client_address=info.client_address,
        )
    )
    return DigestResult(match=match)
