"""``POST /v1/auth/refresh``: a login session token traded for a new one (the old one ends), with
the user's groups re-evaluated first (see :mod:`appliance.auth.refresh`). Audited
``auth.session.refreshed`` (with any role/team change, old -> new) or ``auth.session.refresh_failed``;
a refusal that ends the session commits that, and its record, before the 401 goes out."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Depends, Request

from appliance.api.auditing import Caller, RequestInfo
from appliance.api.errors import ERROR_RESPONSES
from appliance.api.state import ANY_PRINCIPAL, AppState, app_state, caller_with, request_info
from appliance.audit.events import AuditEvent
from appliance.auth import refresh
from appliance.auth.ldap import DirectoryUser
from shared.errors import AuthError, ConflictError
from shared.schemas import LoginResponse

__all__ = ["router"]

router = APIRouter(prefix="/v1/auth", tags=["auth"])


def _plan(state: AppState, caller: Caller) -> refresh.Plan:
    if caller.principal.session_id is None:
        raise ConflictError("only login sessions are refreshed; an API token keeps its own expiry")
    provider = f"ldap:{state.ldap.url}" if state.ldap is not None else None
    with state.read_uow() as session:
        return refresh.plan(session, caller.principal.session_id, ldap_provider=provider)


def _look_up(state: AppState, planned: refresh.Plan) -> DirectoryUser | AuthError | None:
    if not planned.directory or state.ldap is None:
        return None
    try:
        return state.ldap.lookup(planned.username)
    except AuthError as exc:
        return exc


def _renew(
    state: AppState, caller: Caller, planned: refresh.Plan, found: DirectoryUser | AuthError | None, info: RequestInfo
) -> refresh.Renewed:
    with state.uow() as session:
        try:
            done = refresh.renew(
                session, planned, found, address=info.client_address, now=state.clock.now(), ttl_s=state.settings.session_ttl_s
            )
        except AuthError as exc:
            state.audit_log.append_in(
                session,
                AuditEvent(
                    action="auth.session.refresh_failed",
                    actor=caller.actor,
                    target=f"user:{caller.actor}",
                    outcome="failure",
                    request_id=info.request_id,
                    client_address=info.client_address,
                    details={"reason": exc.reason, "message": str(exc)},
                ),
            )
            session.commit()
            raise
        state.audit_log.append_in(
            session,
            AuditEvent(
                action="auth.session.refreshed",
                actor=caller.actor,
                target=f"user:{caller.actor}",
                request_id=info.request_id,
                client_address=info.client_address,
                details={"changes": done.changes, "expires_at": done.expires_at.isoformat()},
            ),
        )
    return done


@router.post(
    "/refresh",
    response_model=LoginResponse,
    responses={**ERROR_RESPONSES, 409: ERROR_RESPONSES[400]},
    summary="Trade this login session for a new one, with the user's groups re-evaluated",
)
async def refresh_session(request: Request, caller: Caller = Depends(caller_with(ANY_PRINCIPAL))) -> LoginResponse:
    state = app_state(request)
    info = request_info(request)
    planned = await anyio.to_thread.run_sync(_plan, state, caller)
    found = await anyio.to_thread.run_sync(_look_up, state, planned, limiter=state.password_work)
    done = await anyio.to_thread.run_sync(_renew, state, caller, planned, found, info)
    return LoginResponse(token=done.token, expires_at=done.expires_at)
