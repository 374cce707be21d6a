"""API tokens: created with scopes and a mandatory expiry, shown once, stored as a digest.

Nothing here commits: the caller's transaction also carries the audit event for the change.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from appliance.auth.change import Change
from appliance.auth.roles import Permission, permissions_for
from appliance.auth.secrets import new_secret, token_digest
from appliance.db.models import ApiToken, User
from shared.errors import ConflictError, InputError, NotFoundError

__all__ = ["MAX_TOKEN_LIFETIME", "TokenInfo", "create_token", "list_tokens", "revoke_token"]

MAX_TOKEN_LIFETIME = dt.timedelta(days=365)


@dataclass(frozen=True, kw_only=True)
class TokenInfo:
    id: int
    user_id: int
    username: str
    name: str
    scopes: tuple[str, ...]
    created_at: dt.datetime
    expires_at: dt.datetime
    revoked_at: dt.datetime | None
    last_used_at: dt.datetime | None

    def status(self, now: dt.datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if now >= self.expires_at else "active"


def _info(token: ApiToken, username: str) -> TokenInfo:
    return TokenInfo(
        id=token.id,
        user_id=token.user_id,
        username=username,
        name=token.name,
        scopes=tuple(token.scopes),
        created_at=token.created_at,
        expires_at=token.expires_at,
        revoked_at=token.revoked_at,
        last_used_at=token.last_used_at,
    )


def _scopes(user: User, scopes: Iterable[Permission | str] | None) -> list[str]:
    held = permissions_for(user.role)
    if scopes is None:
        return sorted(p.value for p in held)
    wanted: list[str] = []
    for raw in scopes:
        try:
            perm = Permission(raw)
        except ValueError:
            known = ", ".join(sorted(p.value for p in Permission))
            raise InputError(f"unknown scope {str(raw)!r} (known: {known})") from None
        if perm not in held:
            raise InputError(f"role {user.role} cannot grant scope {perm.value!r}")
        if perm.value not in wanted:
            wanted.append(perm.value)
    if not wanted:
        raise InputError("a token needs at least one scope")
    return sorted(wanted)


def create_token(
    session: Session,
    user_id: int,
    *,
    name: str,
    expires_in: dt.timedelta,
    now: dt.datetime,
    scopes: Iterable[Permission | str] | None = None,
) -> tuple[str, TokenInfo, Change]:
    """Create an API token for ``user_id``; returns (raw token — show it once, info, change).

    ``scopes`` default to everything the owner's role allows; a scope the role does not hold is
    an InputError. ``expires_in`` must be positive and at most 365 days.
    """
    user = session.get(User, user_id)
    if user is None:
        raise NotFoundError(f"no user with id {user_id}")
    if user.disabled:
        raise ConflictError(f"user {user.username} is disabled")
    label = name.strip()
    if not label or len(label) > 64 or not label.isprintable():
        raise InputError("token name must be 1..64 printable characters")
    if expires_in <= dt.timedelta(0):
        raise InputError("token expiry must be in the future")
    if expires_in > MAX_TOKEN_LIFETIME:
        raise InputError(f"token expiry must be at most {MAX_TOKEN_LIFETIME.days} days")
    raw = new_secret()
    token = ApiToken(
        user_id=user.id,
        name=label,
        token_digest=token_digest(raw),
        scopes=_scopes(user, scopes),
        created_at=now,
        expires_at=now + expires_in,
        revoked_at=None,
        last_used_at=None,
    )
    session.add(token)
    session.flush()
    info = _info(token, user.username)
    change = Change(
        action="admin.token.created",
        target=f"token:{token.id}",
        target_id=token.id,
        old=None,
        new={
            "user": user.username,
            "name": label,
            "scopes": list(info.scopes),
            "expires_at": info.expires_at.isoformat(),
        },
    )
    return raw, info, change


def revoke_token(session: Session, token_id: int, *, now: dt.datetime, owner_id: int | None = None) -> Change:
    """Revoke token ``token_id`` (only if owned by ``owner_id``, when given). Effective at once."""
    token = session.get(ApiToken, token_id)
    if token is None or (owner_id is not None and token.user_id != owner_id):
        raise NotFoundError(f"no token with id {token_id}")
    if token.revoked_at is not None:
        raise ConflictError(f"token {token_id} is already revoked")
    token.revoked_at = now
    session.flush()
    return Change(
        action="admin.token.revoked",
        target=f"token:{token.id}",
        target_id=token.id,
        old={"status": "expired" if now >= token.expires_at else "active"},
        new={"status": "revoked"},
    )


def list_tokens(session: Session, *, user_id: int | None = None) -> list[TokenInfo]:
    """Every token (or one user's), newest first. Raw tokens cannot be listed: they are not stored."""
    query = (
        select(ApiToken, User.username).join(User, User.id == ApiToken.user_id).order_by(ApiToken.id.desc())
    )
    if user_id is not None:
        query = query.where(ApiToken.user_id == user_id)
    return [_info(token, username) for token, username in session.execute(query).all()]
