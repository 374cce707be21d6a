"""LDAP / Active Directory sign-in: ``POST /v1/auth/ldap/login`` (directory name + password -> the
appliance's own session token).

Throttled and audited like password login: a wrong password is counted and recorded
(``auth.ldap.failed`` with the reason) in a transaction that commits before the 401 goes out; a
success is ``auth.ldap.login`` with the groups the directory gave and any role/team change
(old -> new). Allowed whatever ``password_login`` says: the password is the directory's, not ours.
"""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Request

from appliance.api.auditing import signed_in_event, summary_event
from appliance.api.errors import ERROR_RESPONSES
from appliance.api.routes.auth import _LOGIN_RESPONSES, _attempted
from appliance.api.state import AppState, app_state, request_info
from appliance.audit.events import AuditEvent
from appliance.auth import ldap_login
from appliance.auth.ldap import DirectoryUser, LdapDirectory
from appliance.auth.sso import SignedIn
from shared.errors import AuthError, ConflictError, ThrottledError, UpstreamError
from shared.schemas import LoginRequest, LoginResponse

__all__ = ["router"]

router = APIRouter(prefix="/v1/auth/ldap", tags=["auth"])
# 409: LDAP is not configured here.
_RESPONSES = {**_LOGIN_RESPONSES, 409: ERROR_RESPONSES[400]}


def _directory(state: AppState) -> LdapDirectory:
    if state.ldap is None:
        raise ConflictError("LDAP sign-in is not configured on this appliance (ldap_url)")
    return state.ldap


def _failed(
    state: AppState, who: tuple[str, str], reason: str, message: str, address: str, request_id: str
) -> AuditEvent:
    return AuditEvent(
        action="auth.ldap.failed",
        actor=who[0],
        target=who[1],
        outcome="failure",
        request_id=request_id,
        client_address=address,
        details={"reason": reason, "message": message, "directory": _directory(state).url},
    )


def _precheck(state: AppState, body: LoginRequest, address: str) -> None:
    with state.read_uow() as session:
        ldap_login.precheck(
            session, body.username, address, throttle_key=state.throttle_key, now=state.clock.now()
        )


def _ask(directory: LdapDirectory, body: LoginRequest) -> DirectoryUser | AuthError:
    try:
        return directory.authenticate(ldap_login.normalize(body.username), body.password)
    except AuthError as exc:
        return exc


def _record(
    state: AppState,
    body: LoginRequest,
    verdict: DirectoryUser | AuthError | UpstreamError | ThrottledError,
    address: str,
    request_id: str,
) -> SignedIn:
    directory = _directory(state)
    with state.uow() as session:
        try:
            if isinstance(verdict, UpstreamError | ThrottledError):
                raise verdict
            done = ldap_login.sign_in(
                session,
                verdict,
                body.username,
                provider=f"ldap:{directory.url}",
                address=address,
                throttle_key=state.throttle_key,
                now=state.clock.now(),
                ttl_s=state.settings.session_ttl_s,
            )
        except (AuthError, UpstreamError) as exc:
            # Nothing but the throttle's count (kept: it is evidence too) was written.
            reason = "directory_unavailable" if isinstance(exc, UpstreamError) else str(exc.reason or "failed")
            record = True
            if isinstance(exc, ThrottledError):
                # Refused before the directory was asked: counted per source (appliance.api.flood).
                record, closed = state.auditor.failures.offer(
                    address, "auth.ldap.failed", reason, now=state.clock.monotonic()
                )
                for summary in closed:
                    state.audit_log.append_in(session, summary_event(summary))
            if record:
                state.audit_log.append_in(
                    session, _failed(state, _attempted(session, state, body.username), reason, str(exc), address, request_id)
                )
            session.commit()
            raise
        state.audit_log.append_in(
            session, signed_in_event("auth.ldap.login", done, {"directory": directory.url}, request_id, address)
        )
    return done


@router.post(
    "/login",
    response_model=LoginResponse,
    responses=_RESPONSES,
    summary="Sign in with the site directory's (LDAP / Active Directory) name and password",
)
async def login(body: LoginRequest, request: Request) -> LoginResponse:
    state = app_state(request)
    info = request_info(request)
    directory = _directory(state)
    verdict: DirectoryUser | AuthError | UpstreamError | ThrottledError
    try:
        await anyio.to_thread.run_sync(_precheck, state, body, info.client_address)
        # The directory's round trips, in no transaction; bounded like password checks.
        verdict = await anyio.to_thread.run_sync(_ask, directory, body, limiter=state.password_work)
    except (ThrottledError, UpstreamError) as exc:
        verdict = exc
    done = await anyio.to_thread.run_sync(_record, state, body, verdict, info.client_address, info.request_id)
    return LoginResponse(token=done.token, expires_at=done.expires_at)
