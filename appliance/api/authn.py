"""The per-request token look-up, in two Core queries instead of four ORM ones.

:func:`appliance.auth.principal.authenticate` is the definition; this is the same decision made
cheaply enough to run on every request (the ORM path measured ~2.7 ms a request on the 2-core box,
most of it ORM bookkeeping, the largest API-owned cost in a streamed generation):

1. the credential and its user, one join (API token first, then login session);
2. the user's team ids with their teams' policies, one outer join.

Nothing is cached: every request reads the database as it stands, so revocation, expiry, a disabled
account, a changed role, membership or policy take effect on the next request. Whenever the
API token's ``last_used_at`` is due for its (once a minute) bump, the caller falls back to the ORM
path, which writes it. ``tests/appliance/api/test_authn.py`` checks both paths decide alike.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Connection, bindparam, select

from appliance.auth.policy import NO_ACCESS, combine
from appliance.auth.principal import Principal
from appliance.auth.roles import Permission, parse_role, permissions_for
from appliance.auth.secrets import looks_like_token, token_digest
from appliance.db.models import ApiToken, LoginSession, Membership, Policy, Team, User
from shared.errors import AuthError

__all__ = ["LAST_USED_RESOLUTION", "NeedsWrite", "authenticate_fast"]

# As in appliance.auth.principal: last_used_at is bookkeeping, written at most this often per token.
LAST_USED_RESOLUTION = dt.timedelta(seconds=60)

_USER = (User.id.label("user_id"), User.username, User.role, User.disabled_at, User.must_change_password)
_API = (
    select(ApiToken.id.label("token_id"), ApiToken.scopes, ApiToken.expires_at, ApiToken.revoked_at, ApiToken.last_used_at, *_USER)
    .outerjoin(User, User.id == ApiToken.user_id)
    .where(ApiToken.token_digest == bindparam("digest"))
)
_SESSION = (
    select(LoginSession.id.label("session_id"), LoginSession.expires_at, LoginSession.revoked_at, *_USER)
    .outerjoin(User, User.id == LoginSession.user_id)
    .where(LoginSession.token_digest == bindparam("digest"))
)
_POLICY_COLUMNS = list(Policy.__table__.columns)
_TEAMS = (
    select(
        Membership.team_id.label("member_of"),
        Team.name.label("team_name"),
        *(c.label(f"policy_{c.key}") for c in _POLICY_COLUMNS),
    )
    .join(Team, Team.id == Membership.team_id)
    .outerjoin(Policy, Policy.team_id == Membership.team_id)
    .where(Membership.user_id == bindparam("user_id"))
    .order_by(Membership.team_id)
)


class NeedsWrite(Exception):
    """The token's ``last_used_at`` is due for its bump: authenticate through the write path."""


def _live_user(row: Any) -> None:
    if row.username is None:
        raise AuthError("invalid token", reason="unknown_user")
    if row.disabled_at is not None:
        raise AuthError("account is disabled", reason="disabled")


def _principal(
    conn: Connection,
    row: Any,
    *,
    token_scopes: frozenset[Permission] | None = None,
    token_id: int | None = None,
    session_id: int | None = None,
) -> Principal:
    team_rows = conn.execute(_TEAMS, {"user_id": row.user_id}).all()
    team_ids = tuple(r.member_of for r in team_rows)
    # Transient Policy objects (never added to a session), so the one `combine` decides.
    policies = [
        # With its team (the name): a refusal by policy names the team whose policy it is.
        Policy(
            team=Team(id=r.member_of, name=r.team_name),
            **{c.key: getattr(r, f"policy_{c.key}") for c in _POLICY_COLUMNS},
        )
        for r in team_rows
        if r.policy_id is not None
    ]
    role = parse_role(row.role)
    granted = permissions_for(role)
    if token_scopes is not None:
        granted &= token_scopes
    if row.must_change_password:
        granted &= {Permission.PASSWORD_CHANGE}
    return Principal(
        user_id=row.user_id,
        username=row.username,
        role=role,
        team_ids=team_ids,
        policy=combine(policies) if team_ids else NO_ACCESS,
        token_scopes=token_scopes,
        token_id=token_id,
        session_id=session_id,
        must_change_password=row.must_change_password,
        permissions=granted,
    )


def _scopes(raw: list[str]) -> frozenset[Permission]:
    # A scope this code does not know grants nothing (deny by default), it is not an error.
    known = {p.value for p in Permission}
    return frozenset(Permission(s) for s in raw if s in known)


def authenticate_fast(conn: Connection, raw_token: str, *, now: dt.datetime) -> Principal:
    """The principal behind a bearer token, as ``appliance.auth.principal.authenticate`` decides it.

    Raises AuthError with the same ``reason``s, and :class:`NeedsWrite` when the API token's
    ``last_used_at`` must be written (the caller then uses the ORM path in a write transaction).
    """
    raw = raw_token.strip()
    if not looks_like_token(raw):
        raise AuthError("invalid token", reason="malformed")
    digest = token_digest(raw)
    api = conn.execute(_API, {"digest": digest}).first()
    if api is not None:
        if api.revoked_at is not None:
            raise AuthError("token has been revoked", reason="revoked")
        if now >= api.expires_at:
            raise AuthError("token has expired", reason="expired")
        _live_user(api)
        if api.last_used_at is None or now - api.last_used_at >= LAST_USED_RESOLUTION:
            raise NeedsWrite
        return _principal(conn, api, token_scopes=_scopes(api.scopes), token_id=api.token_id)
    login = conn.execute(_SESSION, {"digest": digest}).first()
    if login is None:
        raise AuthError("invalid token", reason="unknown_token")
    if login.revoked_at is not None:
        raise AuthError("session has ended", reason="revoked")
    if now >= login.expires_at:
        raise AuthError("session has expired", reason="expired")
    _live_user(login)
    return _principal(conn, login, session_id=login.session_id)
