"""Sign-in routes: ``POST /v1/auth/login`` (password -> short-lived session token),
``POST /v1/auth/logout``, ``GET /v1/auth/me`` (who the token speaks for, with the effective policy),
``POST /v1/auth/password`` and one's own API tokens under ``/v1/auth/tokens``.

A failed login is counted by the throttle and audited in the same transaction, which commits before
the 401 goes out — otherwise an attacker could retry without the throttle ever seeing a failure.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import anyio
from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from appliance.api.auditing import Caller, summary_event
from appliance.api.errors import ERROR_RESPONSES
from appliance.api.state import (
    ANY_PRINCIPAL,
    MAX_ID,
    AppState,
    app_state,
    bearer,
    caller_with,
    request_info,
)
from appliance.audit.events import AuditEvent
from appliance.auth import throttle
from appliance.auth import tokens as token_ops
from appliance.auth.login import Verdict, read_candidate, verify_candidate
from appliance.auth.login import change_password as auth_change_password
from appliance.auth.login import login as auth_login
from appliance.auth.login import logout as auth_logout
from appliance.auth.principal import Principal
from appliance.auth.roles import Permission
from appliance.db.models import ApiToken, LoginSession, Team, User
from shared.errors import AuthError, ThrottledError
from shared.schemas import LoginRequest, LoginResponse, Me, MePolicy

__all__ = ["TokenCreate", "TokenCreated", "TokenOut", "router"]

router = APIRouter(prefix="/v1/auth", tags=["auth"])

# 64 bits of the name's keyed digest: enough to tell which attempts typed the same name.
_NAME_DIGEST_CHARS = 16

_LOGIN_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: ERROR_RESPONSES[400],
    401: ERROR_RESPONSES[401],
    413: ERROR_RESPONSES[413],
    429: ERROR_RESPONSES[400] | {"description": "Too many failed attempts; see Retry-After"},
    503: ERROR_RESPONSES[503],
}


class PasswordChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    old_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=1, max_length=1024)


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)
    expires_in_days: int | None = Field(
        default=None, ge=1, le=365, description="default 90, and never past the expiry of the token making the request"
    )
    scopes: list[str] | None = Field(default=None, max_length=32)


class TokenOut(BaseModel):
    id: int
    username: str
    name: str
    scopes: list[str]
    created_at: dt.datetime
    expires_at: dt.datetime
    revoked_at: dt.datetime | None
    last_used_at: dt.datetime | None
    status: str


class TokenCreated(BaseModel):
    token: str = Field(description="shown once; store it now")
    info: TokenOut


def token_out(info: token_ops.TokenInfo, now: dt.datetime) -> TokenOut:
    return TokenOut(
        id=info.id,
        username=info.username,
        name=info.name,
        scopes=list(info.scopes),
        created_at=info.created_at,
        expires_at=info.expires_at,
        revoked_at=info.revoked_at,
        last_used_at=info.last_used_at,
        status=info.status(now),
    )


def _check_password(state: AppState, body: LoginRequest, address: str) -> Verdict:
    # A read and the Argon2 work, in no write transaction: a spray never holds the write lock.
    with state.read_uow() as session:
        candidate = read_candidate(
            session, body.username, address, throttle_key=state.throttle_key, now=state.clock.now()
        )
    return verify_candidate(candidate, body.password)


def _attempted(session: Session, state: AppState, typed: str) -> tuple[str, str]:
    """(actor, target) of a failed sign-in. A name no account has is often a password typed in
    the wrong field: the audit log keeps only its keyed digest (a prefix of the throttle's, so the
    two can be matched), never the text."""
    name = typed.strip().lower()
    if name and session.scalar(select(User.id).where(User.username == name)) is not None:
        return name, f"user:{name}"
    digest = throttle.name_digest(state.throttle_key, name)[:_NAME_DIGEST_CHARS]
    return "anonymous", f"unknown-user:{digest}"


def _login(
    state: AppState, body: LoginRequest, address: str, request_id: str, verdict: Verdict
) -> tuple[str, dt.datetime]:
    now = state.clock.now()
    username = body.username.strip().lower()[:64] or "anonymous"
    with state.uow() as session:
        try:
            if state.settings.password_login == "break_glass" and username != state.settings.break_glass_admin:
                # Policy: the site signs in through its identity provider; one local admin is kept
                # for when the provider is down.
                raise AuthError(
                    "password sign-in is off on this appliance; sign in with single sign-on",
                    reason="password_login_off",
                )
            token, expires = auth_login(
                session,
                body.username,
                body.password,
                address=address,
                throttle_key=state.throttle_key,
                now=now,
                ttl_s=state.settings.session_ttl_s,
                verdict=verdict,
            )
        except AuthError as exc:
            reason = str(getattr(exc, "reason", "") or "failed")
            actor, target = _attempted(session, state, body.username)
            record = True
            if isinstance(exc, ThrottledError):
                # Refused before any password check: repeats cost the sender nothing, so they are
                # counted per source rather than recorded each (appliance.api.flood).
                record, closed = state.auditor.failures.offer(
                    address, "auth.login.failed", reason, now=state.clock.monotonic()
                )
                for summary in closed:
                    state.audit_log.append_in(session, summary_event(summary))
                if not record:
                    state.metrics.audit_suppressed.inc(action="auth.login.failed")
            if record:
                state.audit_log.append_in(
                    session,
                    AuditEvent(
                        action="auth.login.failed",
                        actor=actor,
                        target=target,
                        outcome="failure",
                        request_id=request_id,
                        client_address=address,
                        details={"reason": reason},
                    ),
                )
            session.commit()
            raise
        state.audit_log.append_in(
            session,
            AuditEvent(
                action="auth.login",
                actor=username,
                target=f"user:{username}",
                outcome="success",
                request_id=request_id,
                client_address=address,
                details={"expires_at": expires.isoformat()},
            ),
        )
    return token, expires


@router.post("/login", response_model=LoginResponse, responses=_LOGIN_RESPONSES, summary="Password sign-in")
async def login(body: LoginRequest, request: Request) -> LoginResponse:
    state = app_state(request)
    info = request_info(request)
    verdict = await anyio.to_thread.run_sync(
        _check_password, state, body, info.client_address, limiter=state.password_work
    )
    token, expires = await anyio.to_thread.run_sync(
        _login, state, body, info.client_address, info.request_id, verdict
    )
    return LoginResponse(token=token, expires_at=expires)


def _logout(state: AppState, token: str, caller: Caller, request_id: str, address: str) -> None:
    with state.uow() as session:
        auth_logout(session, token, now=state.clock.now())
        state.audit_log.append_in(
            session,
            AuditEvent(
                action="auth.logout",
                actor=caller.actor,
                target=f"user:{caller.actor}",
                request_id=request_id,
                client_address=address,
            ),
        )


@router.post(
    "/logout",
    status_code=204,
    response_class=Response,
    responses=ERROR_RESPONSES,
    summary="End the login session whose token authenticates this request",
)
async def logout(
    request: Request,
    caller: Caller = Depends(caller_with(ANY_PRINCIPAL)),
    credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
) -> Response:
    state = app_state(request)
    info = request_info(request)
    token = credentials.credentials if credentials else ""
    await anyio.to_thread.run_sync(_logout, state, token, caller, info.request_id, info.client_address)
    return Response(status_code=204)


def _me(state: AppState, principal: Principal) -> Me:
    with state.read_uow() as session:
        teams = session.scalars(select(Team.name).where(Team.id.in_(principal.team_ids)).order_by(Team.name))
        team_names = list(teams)
        if principal.token_id is not None:
            expires = session.scalar(select(ApiToken.expires_at).where(ApiToken.id == principal.token_id))
        else:
            expires = session.scalar(select(LoginSession.expires_at).where(LoginSession.id == principal.session_id))
    if expires is None:
        # Deleted between authentication and this read: the credential is gone.
        raise AuthError("invalid token", reason="unknown_token")
    policy = principal.policy
    return Me(
        username=principal.username,
        role=principal.role.value if principal.role is not None else "",
        permissions=sorted(p.value for p in principal.permissions),
        teams=team_names,
        policy=MePolicy(
            allowed_models=[list(patterns) for patterns in policy.allowed_models],
            requests_per_minute=policy.requests_per_minute,
            tokens_per_minute=policy.tokens_per_minute,
            concurrent_streams=policy.concurrent_streams,
            max_prompt_tokens=policy.max_prompt_tokens,
            max_output_tokens=policy.max_output_tokens,
            capture_mode=policy.capture_mode.value,
            path_exclusions=list(policy.path_exclusions),
            allow_thinking=policy.allows_thinking,
            max_reasoning_tokens=policy.max_reasoning_tokens,
        ),
        credential="api_token" if principal.token_id is not None else "session",
        scopes=sorted(p.value for p in principal.token_scopes) if principal.token_scopes is not None else None,
        expires_at=expires,
        must_change_password=principal.must_change_password,
    )


@router.get(
    "/me",
    response_model=Me,
    responses=ERROR_RESPONSES,
    summary="Who this token speaks for: role, permissions, teams, effective policy, token scopes and expiry",
)
async def me(request: Request, caller: Caller = Depends(caller_with(ANY_PRINCIPAL))) -> Me:
    return await anyio.to_thread.run_sync(_me, app_state(request), caller.principal)


def _change_password(
    state: AppState, caller: Caller, body: PasswordChange, request_id: str, address: str
) -> None:
    with state.uow() as session:
        try:
            auth_change_password(
                session,
                caller.principal.user_id,
                body.old_password,
                body.new_password,
                throttle_key=state.throttle_key,
                now=state.clock.now(),
                address=address,
            )
        except AuthError as exc:
            # A wrong or throttled guess is evidence: counted and recorded durably, then refused.
            state.audit_log.append_in(
                session,
                AuditEvent(
                    action="auth.password.failed",
                    actor=caller.actor,
                    target=f"user:{caller.actor}",
                    outcome="failure",
                    request_id=request_id,
                    client_address=address,
                    details={"reason": str(getattr(exc, "reason", "") or "failed")},
                ),
            )
            session.commit()
            raise
        state.audit_log.append_in(
            session,
            AuditEvent(
                action="auth.password.changed",
                actor=caller.actor,
                target=f"user:{caller.actor}",
                request_id=request_id,
                client_address=address,
            ),
        )


@router.post(
    "/password",
    status_code=204,
    response_class=Response,
    # Throttled like login (429 with Retry-After).
    responses={**ERROR_RESPONSES, 429: _LOGIN_RESPONSES[429]},
    summary="Change one's own password (ends every login session)",
)
async def change_password(
    body: PasswordChange, request: Request, caller: Caller = Depends(caller_with(Permission.PASSWORD_CHANGE))
) -> Response:
    state = app_state(request)
    info = request_info(request)
    await anyio.to_thread.run_sync(
        _change_password, state, caller, body, info.request_id, info.client_address
    )
    return Response(status_code=204)


def _audit_change(
    state: AppState, session: Any, caller: Caller, change: Any, request_id: str, address: str
) -> None:
    state.audit_log.append_in(
        session,
        AuditEvent(
            action=change.action,
            actor=caller.actor,
            target=change.target,
            request_id=request_id,
            client_address=address,
            details={"old": change.old, "new": change.new},
        ),
    )


@router.get("/tokens", response_model=list[TokenOut], responses=ERROR_RESPONSES, summary="My API tokens")
async def my_tokens(
    request: Request, caller: Caller = Depends(caller_with(Permission.TOKENS_SELF))
) -> list[TokenOut]:
    state = app_state(request)

    def run() -> list[TokenOut]:
        with state.uow() as session:
            now = state.clock.now()
            return [
                token_out(t, now) for t in token_ops.list_tokens(session, user_id=caller.principal.user_id)
            ]

    return await anyio.to_thread.run_sync(run)


@router.post(
    "/tokens",
    response_model=TokenCreated,
    status_code=201,
    responses={**ERROR_RESPONSES, 404: ERROR_RESPONSES[400]},
    summary="Create an API token for myself",
)
async def create_my_token(
    body: TokenCreate, request: Request, caller: Caller = Depends(caller_with(Permission.TOKENS_SELF))
) -> TokenCreated:
    state = app_state(request)
    info = request_info(request)

    def run() -> TokenCreated:
        with state.uow() as session:
            now = state.clock.now()
            raw, token, change = token_ops.create_token(
                session,
                caller.principal.user_id,
                name=body.name,
                expires_in=None if body.expires_in_days is None else dt.timedelta(days=body.expires_in_days),
                now=now,
                scopes=body.scopes,
                parent_token_id=caller.principal.token_id,
            )
            _audit_change(state, session, caller, change, info.request_id, info.client_address)
            return TokenCreated(token=raw, info=token_out(token, now))

    return await anyio.to_thread.run_sync(run)


@router.delete(
    "/tokens/{token_id}",
    status_code=204,
    response_class=Response,
    responses={**ERROR_RESPONSES, 404: ERROR_RESPONSES[400], 409: ERROR_RESPONSES[400]},
    summary="Revoke one of my API tokens",
)
async def revoke_my_token(
    request: Request,
    token_id: int = Path(ge=1, le=MAX_ID),
    caller: Caller = Depends(caller_with(Permission.TOKENS_SELF)),
) -> Response:
    state = app_state(request)
    info = request_info(request)

    def run() -> None:
        with state.uow() as session:
            change = token_ops.revoke_token(
                session, token_id, now=state.clock.now(), owner_id=caller.principal.user_id
            )
            _audit_change(state, session, caller, change, info.request_id, info.client_address)

    await anyio.to_thread.run_sync(run)
    return Response(status_code=204)
