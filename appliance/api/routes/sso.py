"""OpenID Connect sign-in: ``POST /v1/auth/oidc/start`` (-> the provider's authorization URL) and
``POST /v1/auth/oidc/callback`` (code + state -> the appliance's own session token).

Every outcome is audited: ``auth.sso.login`` (with group/role changes, old -> new) or
``auth.sso.failed`` with the failed check as ``reason`` (bad_signature, expired, wrong_audience,
wrong_issuer, wrong_nonce, no_group, ...). A failure commits its audit record before the 401 goes out.
"""

from __future__ import annotations

import datetime as dt

import anyio
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from appliance.api.auditing import signed_in_event
from appliance.api.errors import ERROR_RESPONSES
from appliance.api.state import AppState, app_state, request_info
from appliance.audit.events import AuditEvent
from appliance.auth import sso
from appliance.auth.oidc import OidcClient
from shared.errors import AuthError, ConflictError

__all__ = ["router"]

router = APIRouter(prefix="/v1/auth/oidc", tags=["auth"])
# 409: single sign-on is not configured here.
_RESPONSES = {**ERROR_RESPONSES, 409: ERROR_RESPONSES[400]}


class OidcStart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    redirect_uri: str = Field(min_length=1, max_length=512)


class OidcStarted(BaseModel):
    authorization_url: str
    state: str


class OidcCallback(BaseModel):
    model_config = ConfigDict(extra="forbid")
    state: str = Field(min_length=1, max_length=256)
    code: str = Field(min_length=1, max_length=2048)
    # RFC 9207: when the provider names itself in the redirect, it must be ours.
    iss: str | None = Field(default=None, max_length=512)


class SsoSession(BaseModel):
    token: str
    expires_at: dt.datetime
    username: str


def _client(state: AppState) -> OidcClient:
    if state.oidc is None:
        raise ConflictError("single sign-on is not configured on this appliance (oidc_issuer)")
    return state.oidc


def _start(state: AppState, body: OidcStart) -> OidcStarted:
    client = _client(state)
    allowed = tuple(u.strip() for u in state.settings.oidc_redirect_uris.split(",") if u.strip())
    redirect_uri = sso.check_redirect_uri(body.redirect_uri, allowed)
    with state.uow() as session:
        url, flow_state = sso.begin(session, client, redirect_uri, now=state.clock.now())
    return OidcStarted(authorization_url=url, state=flow_state)


@router.post("/start", response_model=OidcStarted, responses=_RESPONSES, summary="Begin an OIDC sign-in")
async def start(body: OidcStart, request: Request) -> OidcStarted:
    return await anyio.to_thread.run_sync(_start, app_state(request), body)


def _callback(state: AppState, body: OidcCallback, address: str, request_id: str) -> SsoSession:
    client = _client(state)
    settings = state.settings
    with state.uow() as session:
        try:
            if body.iss is not None and body.iss.rstrip("/") != client.issuer:
                raise AuthError(
                    f"redirect names issuer {body.iss!r}, not {client.issuer!r}", reason="wrong_issuer"
                )
            done = sso.finish(
                session,
                client,
                state=body.state,
                code=body.code,
                address=address,
                now=state.clock.now(),
                ttl_s=settings.session_ttl_s,
                username_claim=settings.oidc_username_claim,
                groups_claim=settings.oidc_groups_claim,
            )
        except AuthError as exc:
            session.rollback()
            state.audit_log.append_in(
                session,
                AuditEvent(
                    action="auth.sso.failed",
                    actor="anonymous",
                    target=f"idp:{client.issuer}",
                    outcome="failure",
                    request_id=request_id,
                    client_address=address,
                    details={"reason": str(getattr(exc, "reason", "") or "failed"), "message": str(exc)},
                ),
            )
            session.commit()
            raise
        state.audit_log.append_in(
            session, signed_in_event("auth.sso.login", done, {"issuer": client.issuer}, request_id, address)
        )
    return SsoSession(token=done.token, expires_at=done.expires_at, username=done.username)


@router.post(
    "/callback",
    response_model=SsoSession,
    responses=_RESPONSES,
    summary="Finish an OIDC sign-in: the appliance redeems the code and opens its own session",
)
async def callback(body: OidcCallback, request: Request) -> SsoSession:
    state = app_state(request)
    info = request_info(request)
    return await anyio.to_thread.run_sync(_callback, state, body, info.client_address, info.request_id)
