"""The audit log over HTTP, under ``/v1/audit``: query (filters + cursor pagination), verify, export
(``jsonl`` | ``cef``), sealed-content read and digest test. Nothing here can change a record.

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

from appliance.api.auditing import Caller
from appliance.api.errors import ERROR_RESPONSES
from appliance.api.state import MAX_ID, app_state, caller_with, request_info
from appliance.audit.query import AuditFilter
from appliance.auth.roles import Permission

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


@router.get(
    "/sealed/{ref}",
    response_model=dict[str, str],
    responses=_RESPONSES,
    summary="Decrypt sealed content (auditors; the read is itself audited first)",
)
async def read_sealed(
    request: Request,
    ref: str = Path(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"),
    caller: Caller = Depends(caller_with(Permission.AUDIT_DECRYPT)),
) -> dict[str, str]:
    log = app_state(request).audit_log
    info = request_info(request)
    role = caller.principal.role.value if caller.principal.role else ""
    return await anyio.to_thread.run_sync(
        lambda: log.read_sealed(
            ref, actor=caller.actor, role=role, request_id=info.request_id, client_address=info.client_address
        )
    )


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
