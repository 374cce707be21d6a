"""Sign-in, ``GET /v1/auth/methods`` (which sign-ins this appliance offers) and ``GET /v1/auth/me``:
who a token speaks for and what their teams allow."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.schemas._base import Response


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=255)
    password: str = Field(min_length=1, max_length=1024)


class LoginResponse(Response):
    token: str
    token_type: Literal["bearer"] = "bearer"
    expires_at: dt.datetime


class AuthMethod(Response):
    """One way to sign in. Says where to go, never how the appliance reaches its provider."""

    kind: Literal["password", "ldap", "sso"] = Field(
        description="password: local Enclave accounts; ldap: the site directory (LDAP / Active Directory); "
        "sso: the site's OpenID Connect identity provider"
    )
    display_name: str = Field(description="what a sign-in screen calls it, e.g. the directory's host name")
    login_path: str = Field(description="the route that begins this sign-in")


class AuthMethods(Response):
    """``GET /v1/auth/methods`` (no token needed): local password sign-in always, then what is configured."""

    methods: list[AuthMethod]


class MePolicy(Response):
    """The caller's effective policy: the conservative combination of their teams' policies."""

    allowed_models: list[list[str]] = Field(
        description="one pattern list per team; a model is allowed when it matches a pattern of every list "
        "(no lists: no model)"
    )
    requests_per_minute: int | None
    tokens_per_minute: int | None
    concurrent_streams: int | None
    max_prompt_tokens: int | None
    max_output_tokens: int | None
    capture_mode: Literal["none", "digest", "sealed"]
    path_exclusions: list[str] = Field(description="gitignore-style patterns of files never to index or send")
    allow_thinking: bool = Field(default=True, description="whether thinking mode may be asked for")
    max_reasoning_tokens: int | None = Field(
        default=None, description="thinking mode: reasoning tokens per answer at most (null: no cap)"
    )


class Me(Response):
    """Who the bearer token speaks for (``GET /v1/auth/me``)."""

    username: str
    role: str = Field(description="developer, auditor or admin (another value grants nothing)")
    permissions: list[str] = Field(description="what this credential may do: the role's, narrowed by scopes")
    teams: list[str]
    policy: MePolicy
    credential: Literal["api_token", "session"]
    scopes: list[str] | None = Field(description="an API token's scopes; null for a login session")
    expires_at: dt.datetime = Field(description="when this token or session stops working")
    must_change_password: bool
