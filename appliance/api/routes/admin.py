"""Administration under ``/v1/admin``: users, teams and their policies, API tokens, installed models.

Every change runs one of :mod:`appliance.auth`'s operations and appends its audit event (old -> new)
in the same transaction, so a change and its record commit together or not at all.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from appliance.api.auditing import Caller
from appliance.api.errors import ERROR_RESPONSES
from appliance.api.routes.auth import TokenCreated, TokenOut, token_out
from appliance.api.state import MAX_ID, AppState, app_state, caller_with, request_info
from appliance.audit.events import AuditEvent
from appliance.auth import admin as ops
from appliance.auth import tokens as token_ops
from appliance.auth.change import Change
from appliance.auth.roles import Permission
from appliance.db.models import Team
from shared.errors import NotFoundError

__all__ = ["router"]

T = TypeVar("T")

router = APIRouter(prefix="/v1/admin", tags=["admin"])

_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    404: ERROR_RESPONSES[400] | {"description": "No such user, team, token or model"},
    409: ERROR_RESPONSES[400] | {"description": "The change conflicts with the current state"},
}

# Annotated, so FastAPI copies the constraint per parameter (a shared default would be shared state).
Name = Annotated[str, Path(min_length=1, max_length=64)]


# --- bodies and views ---------------------------------------------------------------------------


class UserOut(BaseModel):
    id: int
    username: str
    role: str
    teams: list[str]
    disabled: bool
    must_change_password: bool
    created_at: dt.datetime


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=64)
    role: str = Field(min_length=1, max_length=32)
    # No password: the account's first one is generated (see admin.create_user); a body naming one
    # is refused (400, extra fields are forbidden).
    teams: list[str] = Field(default_factory=lambda: [ops.DEFAULT_TEAM], max_length=64)


class UserCreated(BaseModel):
    user: UserOut
    one_time_password: str = Field(
        description="generated, shown once; the user must change it at first sign-in"
    )


class RoleChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: str = Field(min_length=1, max_length=32)


class PasswordReset(BaseModel):
    one_time_password: str


class PolicyBody(BaseModel):
    """Fields of a team policy; ``None`` in a quota means no limit."""

    model_config = ConfigDict(extra="forbid")
    allowed_models: list[str] | None = Field(default=None, max_length=256)
    requests_per_minute: int | None = Field(default=None, ge=0, le=2**31 - 1)
    tokens_per_minute: int | None = Field(default=None, ge=0, le=2**31 - 1)
    concurrent_streams: int | None = Field(default=None, ge=0, le=2**31 - 1)
    max_prompt_tokens: int | None = Field(default=None, ge=0, le=2**31 - 1)
    max_output_tokens: int | None = Field(default=None, ge=0, le=2**31 - 1)
    capture_mode: str | None = Field(default=None, max_length=16)
    path_exclusions: list[str] | None = Field(default=None, max_length=1024)
    allow_thinking: bool | None = Field(default=None, description="may members use thinking mode")
    max_reasoning_tokens: int | None = Field(
        default=None, ge=0, le=2**31 - 1, description="thinking mode: reasoning tokens per answer at most"
    )


class TeamCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)
    policy: PolicyBody | None = None


class TeamOut(BaseModel):
    id: int
    name: str
    members: list[str]
    policy: dict[str, Any] | None


class Member(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=64)


class AdminTokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=64)
    expires_in_days: int | None = Field(
        default=None, ge=1, le=365, description="default 90, and never past the expiry of the token making the request"
    )
    scopes: list[str] | None = Field(default=None, max_length=32)


class ModelOut(BaseModel):
    id: int
    name: str
    version: str
    path: str
    manifest_sha256: str
    installed_at: dt.datetime
    active: bool


# --- helpers ------------------------------------------------------------------------------------


def _user_out(user: ops.UserInfo) -> UserOut:
    return UserOut(
        id=user.id,
        username=user.username,
        role=user.role,
        teams=list(user.teams),
        disabled=user.disabled,
        must_change_password=user.must_change_password,
        created_at=user.created_at,
    )


def _all_users(session: Session) -> list[UserOut]:
    return [_user_out(u) for u in ops.list_users(session)]


def _find_user(session: Session, username: str) -> UserOut:
    name = username.strip().lower()
    return next(u for u in _all_users(session) if u.username == name)


async def _change(
    request: Request, caller: Caller, operation: Callable[[Session, dt.datetime], tuple[Change, T]]
) -> T:
    """Run ``operation`` and append its audit event in one transaction, off the event loop."""
    state: AppState = app_state(request)
    info = request_info(request)

    def run() -> T:
        with state.uow() as session:
            change, result = operation(session, state.clock.now())
            state.audit_log.append_in(
                session,
                AuditEvent(
                    action=change.action,
                    actor=caller.actor,
                    target=change.target,
                    request_id=info.request_id,
                    client_address=info.client_address,
                    details={"old": change.old, "new": change.new},
                ),
            )
            return result

    return await anyio.to_thread.run_sync(run)


async def _read(request: Request, operation: Callable[[Session], T]) -> T:
    state = app_state(request)

    def run() -> T:
        with state.uow() as session:
            return operation(session)

    return await anyio.to_thread.run_sync(run)


# --- users --------------------------------------------------------------------------------------

_users = caller_with(Permission.USERS_MANAGE)


@router.get("/users", response_model=list[UserOut], responses=_RESPONSES, summary="List users")
async def list_users(request: Request, caller: Caller = Depends(_users)) -> list[UserOut]:
    return await _read(request, _all_users)


@router.post(
    "/users", response_model=UserCreated, status_code=201, responses=_RESPONSES, summary="Add a user"
)
async def create_user(body: UserCreate, request: Request, caller: Caller = Depends(_users)) -> UserCreated:
    def op(session: Session, now: dt.datetime) -> tuple[Change, UserCreated]:
        change, generated = ops.create_user(
            session,
            body.username,
            role=body.role,
            now=now,
            teams=body.teams,
        )
        assert generated is not None  # no password passed: one was generated
        return change, UserCreated(user=_find_user(session, body.username), one_time_password=generated)

    return await _change(request, caller, op)


@router.post(
    "/users/{username}/disable", response_model=UserOut, responses=_RESPONSES, summary="Disable a user"
)
async def disable_user(request: Request, username: Name, caller: Caller = Depends(_users)) -> UserOut:
    return await _change(
        request, caller, lambda s, now: (ops.disable_user(s, username, now=now), _find_user(s, username))
    )


@router.post(
    "/users/{username}/enable", response_model=UserOut, responses=_RESPONSES, summary="Enable a user"
)
async def enable_user(request: Request, username: Name, caller: Caller = Depends(_users)) -> UserOut:
    return await _change(
        request, caller, lambda s, now: (ops.enable_user(s, username, now=now), _find_user(s, username))
    )


@router.put(
    "/users/{username}/role", response_model=UserOut, responses=_RESPONSES, summary="Set a user's role"
)
async def set_role(
    body: RoleChange, request: Request, username: Name, caller: Caller = Depends(_users)
) -> UserOut:
    return await _change(
        request,
        caller,
        lambda s, now: (ops.set_role(s, username, body.role, now=now), _find_user(s, username)),
    )


@router.post(
    "/users/{username}/reset-password",
    response_model=PasswordReset,
    responses=_RESPONSES,
    summary="Give a user a one-time password",
)
async def reset_password(request: Request, username: Name, caller: Caller = Depends(_users)) -> PasswordReset:
    def op(session: Session, now: dt.datetime) -> tuple[Change, PasswordReset]:
        change, password = ops.reset_password(session, username, throttle_key=app_state(request).throttle_key, now=now)
        return change, PasswordReset(one_time_password=password)

    return await _change(request, caller, op)


@router.post(
    "/users/{username}/unlock",
    response_model=UserOut,
    responses=_RESPONSES,
    summary="Clear a user's failed-login counters",
)
async def unlock_user(request: Request, username: Name, caller: Caller = Depends(_users)) -> UserOut:
    return await _change(
        request,
        caller,
        lambda s, now: (
            ops.unlock_user(s, username, throttle_key=app_state(request).throttle_key, now=now),
            _find_user(s, username),
        ),
    )


# --- teams and policies -------------------------------------------------------------------------

_teams = caller_with(Permission.TEAMS_MANAGE)
_policies = caller_with(Permission.POLICIES_MANAGE)


def _team_out(session: Session, team: Team) -> TeamOut:
    names = {u.id: u.username for u in _all_users(session)}
    return TeamOut(
        id=team.id,
        name=team.name,
        members=sorted(names[m.user_id] for m in team.memberships),
        policy=ops.get_policy(session, team.name),
    )


def _team_named(session: Session, name: str) -> TeamOut:
    team = session.scalar(select(Team).where(Team.name == name.strip().lower()))
    if team is None:
        raise NotFoundError(f"no team named {name!r}")
    return _team_out(session, team)


def _policy_values(body: PolicyBody) -> dict[str, Any]:
    return body.model_dump(exclude_unset=True)


@router.get("/teams", response_model=list[TeamOut], responses=_RESPONSES, summary="List teams and policies")
async def list_teams(request: Request, caller: Caller = Depends(_teams)) -> list[TeamOut]:
    return await _read(
        request, lambda s: [_team_out(s, t) for t in s.scalars(select(Team).order_by(Team.name)).all()]
    )


@router.post("/teams", response_model=TeamOut, status_code=201, responses=_RESPONSES, summary="Create a team")
async def create_team(body: TeamCreate, request: Request, caller: Caller = Depends(_teams)) -> TeamOut:
    def op(session: Session, now: dt.datetime) -> tuple[Change, TeamOut]:
        policy = _policy_values(body.policy) if body.policy else None
        change = ops.create_team(session, body.name, now=now, policy=policy)
        return change, _team_named(session, body.name)

    return await _change(request, caller, op)


@router.post(
    "/teams/{team}/members", response_model=TeamOut, responses=_RESPONSES, summary="Add a member to a team"
)
async def add_member(body: Member, request: Request, team: Name, caller: Caller = Depends(_teams)) -> TeamOut:
    return await _change(
        request,
        caller,
        lambda s, now: (ops.add_member(s, body.username, team, now=now), _team_named(s, team)),
    )


@router.delete(
    "/teams/{team}/members/{username}",
    response_model=TeamOut,
    responses=_RESPONSES,
    summary="Remove a member from a team",
)
async def remove_member(
    request: Request, team: Name, username: Name, caller: Caller = Depends(_teams)
) -> TeamOut:
    return await _change(
        request,
        caller,
        lambda s, now: (ops.remove_member(s, username, team, now=now), _team_named(s, team)),
    )


@router.get(
    "/teams/{team}/policy",
    response_model=dict[str, Any] | None,
    responses=_RESPONSES,
    summary="A team's policy",
)
async def get_policy(
    request: Request, team: Name, caller: Caller = Depends(_policies)
) -> dict[str, Any] | None:
    return await _read(request, lambda s: ops.get_policy(s, team))


@router.patch(
    "/teams/{team}/policy",
    response_model=dict[str, Any] | None,
    responses=_RESPONSES,
    summary="Change fields of a team's policy",
)
async def set_policy(
    body: PolicyBody, request: Request, team: Name, caller: Caller = Depends(_policies)
) -> dict[str, Any] | None:
    return await _change(
        request,
        caller,
        lambda s, now: (ops.set_policy(s, team, now=now, **_policy_values(body)), ops.get_policy(s, team)),
    )


# --- tokens -------------------------------------------------------------------------------------

_tokens = caller_with(Permission.TOKENS_MANAGE)


@router.get("/tokens", response_model=list[TokenOut], responses=_RESPONSES, summary="Every API token")
async def list_tokens(request: Request, caller: Caller = Depends(_tokens)) -> list[TokenOut]:
    now = app_state(request).clock.now()
    return await _read(request, lambda s: [token_out(t, now) for t in token_ops.list_tokens(s)])


@router.post(
    "/tokens",
    response_model=TokenCreated,
    status_code=201,
    responses=_RESPONSES,
    summary="Create an API token for a user",
)
async def create_token(
    body: AdminTokenCreate, request: Request, caller: Caller = Depends(_tokens)
) -> TokenCreated:
    def op(session: Session, now: dt.datetime) -> tuple[Change, TokenCreated]:
        user = ops.get_user(session, body.username)
        raw, info, change = token_ops.create_token(
            session,
            user.id,
            name=body.name,
            expires_in=None if body.expires_in_days is None else dt.timedelta(days=body.expires_in_days),
            now=now,
            scopes=body.scopes,
            parent_token_id=caller.principal.token_id,
        )
        return change, TokenCreated(token=raw, info=token_out(info, now))

    return await _change(request, caller, op)


@router.delete(
    "/tokens/{token_id}",
    status_code=204,
    response_class=Response,
    responses=_RESPONSES,
    summary="Revoke an API token",
)
async def revoke_token(
    request: Request, token_id: int = Path(ge=1, le=MAX_ID), caller: Caller = Depends(_tokens)
) -> Response:
    await _change(request, caller, lambda s, now: (token_ops.revoke_token(s, token_id, now=now), None))
    return Response(status_code=204)


# --- models -------------------------------------------------------------------------------------

_models = caller_with(Permission.MODELS_MANAGE)


def _model_out(row: Any) -> ModelOut:
    return ModelOut(
        id=row.id,
        name=row.name,
        version=row.version,
        path=row.path,
        manifest_sha256=row.manifest_sha256,
        installed_at=row.installed_at,
        active=row.active,
    )


@router.get("/models", response_model=list[ModelOut], responses=_RESPONSES, summary="Installed model bundles")
async def list_models(request: Request, caller: Caller = Depends(_models)) -> list[ModelOut]:
    return await _read(request, lambda s: [_model_out(m) for m in ops.list_models(s)])


def _set_active(
    name: str, version: str, active: bool
) -> Callable[[Session, dt.datetime], tuple[Change, ModelOut]]:
    def op(session: Session, now: dt.datetime) -> tuple[Change, ModelOut]:
        change = ops.set_model_active(session, name, version, active, now=now)
        row = next(m for m in ops.list_models(session) if m.name == name and m.version == version)
        return change, _model_out(row)

    return op


@router.post(
    "/models/{name}/{version}/activate",
    response_model=ModelOut,
    responses=_RESPONSES,
    summary="Mark an installed model active",
)
async def activate_model(
    request: Request, name: Name, version: Name, caller: Caller = Depends(_models)
) -> ModelOut:
    return await _change(request, caller, _set_active(name, version, True))


@router.post(
    "/models/{name}/{version}/deactivate",
    response_model=ModelOut,
    responses=_RESPONSES,
    summary="Mark an installed model inactive",
)
async def deactivate_model(
    request: Request, name: Name, version: Name, caller: Caller = Depends(_models)
) -> ModelOut:
    return await _change(request, caller, _set_active(name, version, False))
