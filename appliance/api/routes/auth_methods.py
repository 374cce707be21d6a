"""``GET /v1/auth/methods``: which sign-ins this appliance offers, asked before anyone has a token.

Sign-in screens show what is configured (local password always; the directory when ``ldap_url`` is
set; single sign-on when ``oidc_issuer`` is set) instead of offering a way that dead-ends. Each is
named by its host only: no bind DN, search base, client id or anything else about how the appliance
reaches its provider.
"""

from __future__ import annotations

import urllib.parse

from fastapi import APIRouter, Request

from appliance.api.state import AppState, app_state
from shared.schemas import AuthMethod, AuthMethods

__all__ = ["router"]

router = APIRouter(prefix="/v1/auth", tags=["auth"])


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).hostname or url


def offered(state: AppState) -> AuthMethods:
    methods = [AuthMethod(kind="password", display_name="Enclave account", login_path="/v1/auth/login")]
    if state.ldap is not None:
        methods.append(
            AuthMethod(
                kind="ldap",
                display_name=f"Directory ({_host(state.ldap.url)})",
                login_path="/v1/auth/ldap/login",
            )
        )
    if state.oidc is not None:
        methods.append(
            AuthMethod(
                kind="sso",
                display_name=f"Single sign-on ({_host(state.settings.oidc_issuer)})",
                login_path="/v1/auth/oidc/start",
            )
        )
    return AuthMethods(methods=methods)


@router.get("/methods", response_model=AuthMethods, summary="The sign-in methods this appliance offers")
async def methods(request: Request) -> AuthMethods:
    return offered(app_state(request))
