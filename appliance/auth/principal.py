"""Who is calling: :class:`Principal`, built from a bearer token by :func:`authenticate`.

Two kinds of bearer token exist, both ``TOKEN_PREFIX`` + 256 random bits and both stored only as
SHA-256 digests: API tokens (long-lived, scoped, see :mod:`appliance.auth.tokens`) and login
session tokens (short-lived, from :func:`appliance.auth.login.login`). Every request looks its
token up afresh, so revocation, expiry, a disabled account or a changed role take effect on the
next request. A principal's permissions are its role's, narrowed by the token's scopes; a user
who must change their password holds only ``password:change``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from appliance.auth.policy import NO_ACCESS, EffectivePolicy, effective_policy
from appliance.auth.roles import Permission, Role, parse_role, permissions_for
from appliance.auth.secrets import looks_like_token, token_digest
from appliance.db.models import ApiToken, LoginSession, Membership, User
from shared.errors import AuthError, PermissionDeniedError

__all__ = ["Principal", "authenticate", "principal_for_user", "require"]

# last_used_at is bookkeeping, not security: write it at most this often per token.
_LAST_USED_RESOLUTION = dt.timedelta(seconds=60)


@dataclass(frozen=True, kw_only=True)
class Principal:
    user_id: int
    username: str
    # None when the stored role is not one the permission table knows: such a user can do nothing.
    role: Role | None
    team_ids: tuple[int, ...]
    policy: EffectivePolicy
    # The API token's scopes; None for a login session (the role alone decides).
    token_scopes: frozenset[Permission] | None = None
    token_id: int | None = None
    session_id: int | None = None
    must_change_password: bool = False
    permissions: frozenset[Permission] = field(default=frozenset())

    @property
    def kind(self) -> str:
        """ "api_token", "session" or "local" (the operator at the appliance's own CLI)."""
        if self.token_id is not None:
            return "api_token"
        if self.session_id is not None:
            return "session"
        return "local"

    def can(self, permission: Permission | str) -> bool:
        try:
            wanted = Permission(permission)
        except ValueError:
            return False
        return wanted in self.permissions


def _permissions(
    role: Role | None, scopes: frozenset[Permission] | None, must_change: bool
) -> frozenset[Permission]:
    granted = permissions_for(role)
    if scopes is not None:
        granted &= scopes
    if must_change:
        granted &= {Permission.PASSWORD_CHANGE}
    return granted


def principal_for_user(
    session: Session,
    user: User,
    *,
    token_scopes: frozenset[Permission] | None = None,
    token_id: int | None = None,
    session_id: int | None = None,
) -> Principal:
    """The principal for ``user`` as it stands in the database now."""
    team_ids = tuple(
        session.scalars(
            select(Membership.team_id).where(Membership.user_id == user.id).order_by(Membership.team_id)
        ).all()
    )
    role = parse_role(user.role)
    return Principal(
        user_id=user.id,
        username=user.username,
        role=role,
        team_ids=team_ids,
        policy=effective_policy(session, user.id) if team_ids else NO_ACCESS,
        token_scopes=token_scopes,
        token_id=token_id,
        session_id=session_id,
        must_change_password=user.must_change_password,
        permissions=_permissions(role, token_scopes, user.must_change_password),
    )


def _parse_scopes(raw: list[str]) -> frozenset[Permission]:
    # A scope this code does not know grants nothing (deny by default), it is not an error.
    known = {p.value for p in Permission}
    return frozenset(Permission(s) for s in raw if s in known)


def _live_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise AuthError("invalid token", reason="unknown_user")
    if user.disabled:
        raise AuthError("account is disabled", reason="disabled")
    return user


def authenticate(session: Session, raw_token: str, *, now: dt.datetime) -> Principal:
    """The principal behind a bearer token (API token or login session).

    Raises AuthError with ``reason`` one of: ``malformed``, ``unknown_token``, ``revoked``,
    ``expired``, ``disabled``, ``unknown_user``. Does not commit; it may update the API token's
    ``last_used_at`` in ``session``.
    """
    raw = raw_token.strip()
    if not looks_like_token(raw):
        raise AuthError("invalid token", reason="malformed")
    digest = token_digest(raw)
    api = session.scalar(select(ApiToken).where(ApiToken.token_digest == digest))
    if api is not None:
        if api.revoked_at is not None:
            raise AuthError("token has been revoked", reason="revoked")
        if now >= api.expires_at:
            raise AuthError("token has expired", reason="expired")
        user = _live_user(session, api.user_id)
        if api.last_used_at is None or now - api.last_used_at >= _LAST_USED_RESOLUTION:
            api.last_used_at = now
        return principal_for_user(session, user, token_scopes=_parse_scopes(api.scopes), token_id=api.id)
    login = session.scalar(select(LoginSession).where(LoginSession.token_digest == digest))
    if login is None:
        raise AuthError("invalid token", reason="unknown_token")
    if login.revoked_at is not None:
        raise AuthError("session has ended", reason="revoked")
    if now >= login.expires_at:
        raise AuthError("session has expired", reason="expired")
    user = _live_user(session, login.user_id)
    return principal_for_user(session, user, session_id=login.id)


def require(principal: Principal, permission: Permission | str) -> None:
    """Raise PermissionDeniedError unless ``principal`` holds ``permission`` (unknown ones: never)."""
    if not principal.can(permission):
        role = principal.role.value if principal.role is not None else "unknown role"
        if principal.must_change_password:
            raise PermissionDeniedError("the password must be changed before anything else")
        raise PermissionDeniedError(f"{principal.username} ({role}) lacks permission {str(permission)!r}")
