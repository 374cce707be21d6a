"""Admin operations on users, teams, memberships, policies and the installed-model registry.

Each takes the caller's Session, validates its input (InputError / NotFoundError / ConflictError
with a one-line reason), flushes but never commits, and returns a :class:`Change` describing
old -> new, so the caller can append the audit event in the same transaction. None of them checks
permissions: the caller (an API route after ``require``, or the local CLI) decides who may.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from appliance.auth import throttle
from appliance.auth.change import Change
from appliance.auth.passwords import check_password, hash_password
from appliance.auth.policy import DEFAULT_TEAM_POLICY, CaptureMode
from appliance.auth.roles import Role, parse_role
from appliance.db.models import InstalledModel, Membership, Policy, Team, User
from shared.errors import ConflictError, InputError, NotFoundError

__all__ = [
    "DEFAULT_TEAM",
    "POLICY_FIELDS",
    "UserInfo",
    "add_member",
    "create_team",
    "create_user",
    "disable_user",
    "enable_user",
    "get_policy",
    "get_user",
    "list_models",
    "list_teams",
    "list_users",
    "register_model",
    "remove_member",
    "reset_password",
    "set_model_active",
    "set_policy",
    "set_role",
    "unlock_user",
    "validate_username",
]

DEFAULT_TEAM = "default"
_NAME = re.compile(r"[a-z][a-z0-9._-]{0,63}")
POLICY_FIELDS = (
    "allowed_models",
    "requests_per_minute",
    "tokens_per_minute",
    "concurrent_streams",
    "max_prompt_tokens",
    "max_output_tokens",
    "capture_mode",
    "path_exclusions",
    "allow_thinking",
    "max_reasoning_tokens",
)
_QUOTA_FIELDS = (*POLICY_FIELDS[1:6], "max_reasoning_tokens")


@dataclass(frozen=True, kw_only=True)
class UserInfo:
    id: int
    username: str
    role: str
    teams: tuple[str, ...]
    disabled: bool
    must_change_password: bool
    created_at: dt.datetime


def _valid_name(kind: str, name: str) -> str:
    value = name.strip().lower()
    if not _NAME.fullmatch(value):
        raise InputError(f"invalid {kind} name {name!r}: 1..64 of a-z 0-9 . _ -, starting with a letter")
    return value


def validate_username(name: str) -> str:
    """The normalised (lowercase) username, or InputError saying what a valid one looks like."""
    return _valid_name("user", name)


def _role(value: str) -> Role:
    role = parse_role(value.strip().lower())
    if role is None:
        raise InputError(f"unknown role {value!r} (known: {', '.join(r.value for r in Role)})")
    return role


def _user(session: Session, username: str) -> User:
    user = session.scalar(select(User).where(User.username == username.strip().lower()))
    if user is None:
        raise NotFoundError(f"no user named {username!r}")
    return user


def _team(session: Session, name: str) -> Team:
    team = session.scalar(select(Team).where(Team.name == name.strip().lower()))
    if team is None:
        raise NotFoundError(f"no team named {name!r}")
    return team


def _active_admins(session: Session) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(User)
            .where(User.role == Role.ADMIN.value, User.disabled_at.is_(None))
        )
        or 0
    )


def one_time_password() -> str:
    """A random password for someone else to replace at first login (about 144 bits)."""
    while True:
        candidate = secrets.token_urlsafe(18)
        try:
            check_password(candidate)
        except InputError:
            continue
        return candidate


def get_user(session: Session, username: str) -> User:
    return _user(session, username)


def create_user(
    session: Session,
    username: str,
    *,
    role: str,
    now: dt.datetime,
    password: str | None = None,
    teams: Sequence[str] = (DEFAULT_TEAM,),
) -> tuple[Change, str | None]:
    """Add a user. Returns (change, generated one-time password or None).

    An account made for someone else (``enclave user add``, the admin API) passes no ``password``:
    one is generated, returned once, and must be changed at first sign-in, so whoever made the
    account never knows a password its holder keeps (separation of duties). ``password`` is for an
    account whose holder is the one creating it — ``enclave demo``'s operator — and is then theirs
    to keep. Teams that do not exist are a NotFoundError.
    """
    name = _valid_name("user", username)
    parsed = _role(role)
    if session.scalar(select(User.id).where(User.username == name)) is not None:
        raise ConflictError(f"user {name!r} already exists")
    generated = None
    if password is None:
        generated = password = one_time_password()
    else:
        check_password(password, username=name)
    team_rows = [_team(session, t) for t in dict.fromkeys(teams)]
    provisional = generated is not None
    user = User(
        username=name,
        password_hash=hash_password(password),
        role=parsed.value,
        must_change_password=provisional,
        created_at=now,
        password_changed_at=now,
        disabled_at=None,
    )
    session.add(user)
    session.flush()
    for team in team_rows:
        session.add(Membership(user_id=user.id, team_id=team.id, created_at=now))
    session.flush()
    change = Change(
        action="admin.user.created",
        target=f"user:{name}",
        target_id=user.id,
        old=None,
        new={
            "role": parsed.value,
            "teams": [t.name for t in team_rows],
            "must_change_password": provisional,
        },
    )
    return change, generated


def list_users(session: Session) -> list[UserInfo]:
    users = session.scalars(select(User).order_by(User.username)).all()
    names = {team_id: name for team_id, name in session.execute(select(Team.id, Team.name)).all()}
    return [
        UserInfo(
            id=u.id,
            username=u.username,
            role=u.role,
            teams=tuple(sorted(names[m.team_id] for m in u.memberships)),
            disabled=u.disabled,
            must_change_password=u.must_change_password,
            created_at=u.created_at,
        )
        for u in users
    ]


def disable_user(session: Session, username: str, *, now: dt.datetime) -> Change:
    """Disable a user: their tokens and sessions stop working on the next request."""
    user = _user(session, username)
    if user.disabled:
        raise ConflictError(f"user {user.username!r} is already disabled")
    if user.role == Role.ADMIN.value and _active_admins(session) <= 1:
        raise ConflictError(f"user {user.username!r} is the last active admin and cannot be disabled")
    user.disabled_at = now
    session.flush()
    return Change(
        action="admin.user.disabled",
        target=f"user:{user.username}",
        target_id=user.id,
        old={"disabled": False},
        new={"disabled": True},
    )


def enable_user(session: Session, username: str, *, now: dt.datetime) -> Change:
    user = _user(session, username)
    if not user.disabled:
        raise ConflictError(f"user {user.username!r} is not disabled")
    user.disabled_at = None
    session.flush()
    return Change(
        action="admin.user.enabled",
        target=f"user:{user.username}",
        target_id=user.id,
        old={"disabled": True},
        new={"disabled": False},
    )


def set_role(session: Session, username: str, role: str, *, now: dt.datetime) -> Change:
    """Change a user's role; takes effect on their next request. Keeps at least one admin."""
    user = _user(session, username)
    new = _role(role)
    old = user.role
    if old == new.value:
        raise ConflictError(f"user {user.username!r} already has role {new.value}")
    if old == Role.ADMIN.value and not user.disabled and _active_admins(session) <= 1:
        raise ConflictError(f"user {user.username!r} is the last active admin; make another admin first")
    user.role = new.value
    session.flush()
    return Change(
        action="admin.user.role_changed",
        target=f"user:{user.username}",
        target_id=user.id,
        old={"role": old},
        new={"role": new.value},
    )


def reset_password(
    session: Session, username: str, *, throttle_key: bytes, now: dt.datetime
) -> tuple[Change, str]:
    """Give a user a new one-time password (returned once) that they must change at next login."""
    user = _user(session, username)
    password = one_time_password()
    user.password_hash = hash_password(password)
    user.must_change_password = True
    user.password_changed_at = now
    throttle.reset_account(session, user.username, key=throttle_key)
    session.flush()
    change = Change(
        action="admin.user.password_reset",
        target=f"user:{user.username}",
        target_id=user.id,
        old=None,
        new={"must_change_password": True},
    )
    return change, password


def unlock_user(session: Session, username: str, *, throttle_key: bytes, now: dt.datetime) -> Change:
    """Clear a user's failed-login counters (after the 100-failure stop, or a long backoff)."""
    user = _user(session, username)
    cleared = throttle.reset_account(session, user.username, key=throttle_key)
    return Change(
        action="admin.user.unlocked",
        target=f"user:{user.username}",
        target_id=user.id,
        old={"throttle_counters": cleared},
        new={"throttle_counters": 0},
    )


# --- teams and policies -------------------------------------------------------------------------


def _validate_policy(values: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(values) - set(POLICY_FIELDS))
    if unknown:
        raise InputError(f"unknown policy field(s) {', '.join(unknown)} (known: {', '.join(POLICY_FIELDS)})")
    clean: dict[str, Any] = {}
    for key, value in values.items():
        if key in _QUOTA_FIELDS:
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise InputError(f"policy {key} must be a non-negative integer or unset, got {value!r}")
            clean[key] = value
        elif key == "allow_thinking":
            if not isinstance(value, bool):
                raise InputError(f"policy allow_thinking must be true or false, got {value!r}")
            clean[key] = value
        elif key == "capture_mode":
            try:
                clean[key] = CaptureMode(value).value
            except ValueError:
                modes = ", ".join(m.value for m in CaptureMode)
                raise InputError(f"policy capture_mode must be one of {modes}, got {value!r}") from None
        else:
            if isinstance(value, str) or not all(isinstance(v, str) and v.strip() for v in value):
                raise InputError(f"policy {key} must be a list of non-empty strings")
            clean[key] = [v.strip() for v in value]
    return clean


def _policy_dict(policy: Policy | None) -> dict[str, object] | None:
    if policy is None:
        return None
    return {name: getattr(policy, name) for name in POLICY_FIELDS}


def create_team(
    session: Session, name: str, *, now: dt.datetime, policy: Mapping[str, Any] | None = None
) -> Change:
    """Create a team with a policy (``DEFAULT_TEAM_POLICY`` overridden by ``policy``)."""
    team_name = _valid_name("team", name)
    if session.scalar(select(Team.id).where(Team.name == team_name)) is not None:
        raise ConflictError(f"team {team_name!r} already exists")
    values = _validate_policy({**DEFAULT_TEAM_POLICY, **(policy or {})})
    team = Team(name=team_name, created_at=now)
    session.add(team)
    session.flush()
    session.add(Policy(team_id=team.id, updated_at=now, **values))
    session.flush()
    return Change(
        action="admin.team.created", target=f"team:{team_name}", target_id=team.id, old=None, new=values
    )


def list_teams(session: Session) -> list[Team]:
    return list(session.scalars(select(Team).order_by(Team.name)).all())


def get_policy(session: Session, team: str) -> dict[str, object] | None:
    return _policy_dict(_team(session, team).policy)


def set_policy(session: Session, team: str, *, now: dt.datetime, **values: Any) -> Change:
    """Update some fields of a team's policy (creating it from the defaults if it has none)."""
    row = _team(session, team)
    clean = _validate_policy(values)
    if not clean:
        raise InputError("no policy field to change")
    old = _policy_dict(row.policy)
    if row.policy is None:
        row.policy = Policy(team_id=row.id, updated_at=now, **_validate_policy(DEFAULT_TEAM_POLICY))
    for key, value in clean.items():
        setattr(row.policy, key, value)
    row.policy.updated_at = now
    session.flush()
    return Change(
        action="admin.policy.changed",
        target=f"team:{row.name}",
        target_id=row.id,
        old=old,
        new=_policy_dict(row.policy),
    )


def add_member(session: Session, username: str, team: str, *, now: dt.datetime) -> Change:
    user, row = _user(session, username), _team(session, team)
    if session.get(Membership, (user.id, row.id)) is not None:
        raise ConflictError(f"user {user.username!r} is already in team {row.name!r}")
    session.add(Membership(user_id=user.id, team_id=row.id, created_at=now))
    session.flush()
    return Change(
        action="admin.team.member_added",
        target=f"user:{user.username}",
        target_id=user.id,
        old=None,
        new={"team": row.name},
    )


def remove_member(session: Session, username: str, team: str, *, now: dt.datetime) -> Change:
    user, row = _user(session, username), _team(session, team)
    membership = session.get(Membership, (user.id, row.id))
    if membership is None:
        raise NotFoundError(f"user {user.username!r} is not in team {row.name!r}")
    session.delete(membership)
    session.flush()
    return Change(
        action="admin.team.member_removed",
        target=f"user:{user.username}",
        target_id=user.id,
        old={"team": row.name},
        new=None,
    )


# --- installed models ---------------------------------------------------------------------------


def register_model(
    session: Session,
    *,
    name: str,
    version: str,
    path: str,
    manifest_sha256: str,
    now: dt.datetime,
    installed_by: int | None = None,
    details: Mapping[str, Any] | None = None,
) -> Change:
    """Record an installed (already verified) model bundle."""
    if not re.fullmatch(r"[0-9a-f]{64}", manifest_sha256):
        raise InputError("manifest_sha256 must be 64 lowercase hex digits")
    if not name.strip() or not version.strip():
        raise InputError("model name and version must not be empty")
    exists = session.scalar(
        select(InstalledModel.id).where(InstalledModel.name == name, InstalledModel.version == version)
    )
    if exists is not None:
        raise ConflictError(f"model {name} version {version} is already installed")
    row = InstalledModel(
        name=name,
        version=version,
        path=path,
        manifest_sha256=manifest_sha256,
        installed_at=now,
        installed_by=installed_by,
        active=True,
        details=dict(details or {}),
    )
    session.add(row)
    session.flush()
    return Change(
        action="admin.model.installed",
        target=f"model:{name}@{version}",
        target_id=row.id,
        old=None,
        new={"path": path, "manifest_sha256": manifest_sha256},
    )


def list_models(session: Session, *, active_only: bool = False) -> list[InstalledModel]:
    query = select(InstalledModel).order_by(InstalledModel.name, InstalledModel.installed_at.desc())
    if active_only:
        query = query.where(InstalledModel.active.is_(True))
    return list(session.scalars(query).all())


def set_model_active(session: Session, name: str, version: str, active: bool, *, now: dt.datetime) -> Change:
    row = session.scalar(
        select(InstalledModel).where(InstalledModel.name == name, InstalledModel.version == version)
    )
    if row is None:
        raise NotFoundError(f"no installed model {name} version {version}")
    if row.active == active:
        raise ConflictError(f"model {name} version {version} is already {'active' if active else 'inactive'}")
    row.active = active
    session.flush()
    return Change(
        action="admin.model.activated" if active else "admin.model.deactivated",
        target=f"model:{name}@{version}",
        target_id=row.id,
        old={"active": not active},
        new={"active": active},
    )
