"""API tokens: created with scopes and a mandatory expiry, shown once, stored as a digest.

A token created with another token (``parent_token_id``: the caller was an API token) holds at most
that token's scopes and expires no later than it; it records its parent, and revoking a token revokes
every token minted from it, transitively, in the same transaction. So a narrow token can never mint a
wider one, and a leaked token's offspring die with it.

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
from shared.errors import ConflictError, InputError, NotFoundError, PermissionDeniedError

__all__ = ["DEFAULT_TOKEN_LIFETIME", "MAX_TOKEN_LIFETIME", "TokenInfo", "create_token", "list_tokens", "revoke_token"]

MAX_TOKEN_LIFETIME = dt.timedelta(days=365)
DEFAULT_TOKEN_LIFETIME = dt.timedelta(days=90)


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


def _scopes(user: User, scopes: Iterable[Permission | str] | None, parent: ApiToken | None) -> list[str]:
    held = permissions_for(user.role)
    if parent is not None:
        held = frozenset(p for p in held if p.value in parent.scopes)
    if scopes is None:
        if not held:
            raise PermissionDeniedError("this token holds no scope its new token's owner may have")
        return sorted(p.value for p in held)
    wanted: list[str] = []
    for raw in scopes:
        try:
            perm = Permission(raw)
        except ValueError:
            known = ", ".join(sorted(p.value for p in Permission))
            raise InputError(f"unknown scope {str(raw)!r} (known: {known})") from None
        if parent is not None and perm.value not in parent.scopes:
            raise PermissionDeniedError(
                f"a token can only grant scopes it holds itself; this one lacks {perm.value!r}"
            )
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
    expires_in: dt.timedelta | None,
    now: dt.datetime,
    scopes: Iterable[Permission | str] | None = None,
    parent_token_id: int | None = None,
) -> tuple[str, TokenInfo, Change]:
    """Create an API token for ``user_id``; returns (raw token — show it once, info, change).

    ``scopes`` default to everything the owner's role allows; a scope the role does not hold is
    an InputError. ``expires_in`` must be positive and at most 365 days; None means 90 days, or
    less where the parent expires sooner. With ``parent_token_id`` (the token making the request)
    the new token is also bounded by that token: a scope it lacks is a PermissionDeniedError, and so
    is an explicit expiry after its own.
    """
    user = session.get(User, user_id)
    if user is None:
        raise NotFoundError(f"no user with id {user_id}")
    if user.disabled:
        raise ConflictError(f"user {user.username} is disabled")
    label = name.strip()
    if not label or len(label) > 64 or not label.isprintable():
        raise InputError("token name must be 1..64 printable characters")
    parent = _live_parent(session, parent_token_id, now) if parent_token_id is not None else None
    if expires_in is None:
        expires_in = DEFAULT_TOKEN_LIFETIME
        if parent is not None:
            expires_in = min(expires_in, parent.expires_at - now)
    if expires_in <= dt.timedelta(0):
        raise InputError("token expiry must be in the future")
    if expires_in > MAX_TOKEN_LIFETIME:
        raise InputError(f"token expiry must be at most {MAX_TOKEN_LIFETIME.days} days")
    if parent is not None and now + expires_in > parent.expires_at:
        raise PermissionDeniedError(
            f"a token cannot outlive the token that creates it (that one expires {parent.expires_at.isoformat()})"
        )
    granted = _scopes(user, scopes, parent)
    raw = new_secret()
    token = ApiToken(
        user_id=user.id,
        name=label,
        token_digest=token_digest(raw),
        scopes=granted,
        parent_id=parent.id if parent is not None else None,
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
            "parent_token": parent.id if parent is not None else None,
        },
    )
    return raw, info, change


def _live_parent(session: Session, token_id: int, now: dt.datetime) -> ApiToken:
    parent = session.get(ApiToken, token_id)
    if parent is None or parent.revoked_at is not None or now >= parent.expires_at:
        raise PermissionDeniedError("the token making this request is no longer valid")
    return parent


def _descendants(session: Session, token_id: int) -> list[ApiToken]:
    """Every unrevoked token minted from ``token_id``, directly or through others."""
    found: list[ApiToken] = []
    frontier = [token_id]
    seen = {token_id}
    while frontier:
        children = session.scalars(
            select(ApiToken).where(ApiToken.parent_id.in_(frontier)).order_by(ApiToken.id)
        ).all()
        frontier = [c.id for c in children if c.id not in seen]
        seen.update(frontier)
        found.extend(c for c in children if c.revoked_at is None)
    return found


def revoke_token(session: Session, token_id: int, *, now: dt.datetime, owner_id: int | None = None) -> Change:
    """Revoke token ``token_id`` (only if owned by ``owner_id``, when given). Effective at once."""
    token = session.get(ApiToken, token_id)
    if token is None or (owner_id is not None and token.user_id != owner_id):
        raise NotFoundError(f"no token with id {token_id}")
    if token.revoked_at is not None:
        raise ConflictError(f"token {token_id} is already revoked")
    token.revoked_at = now
    minted = _descendants(session, token.id)
    for child in minted:
        child.revoked_at = now
    session.flush()
    new: dict[str, object] = {"status": "revoked"}
    if minted:
        new["also_revoked"] = [child.id for child in minted]
    return Change(
        action="admin.token.revoked",
        target=f"token:{token.id}",
        target_id=token.id,
        old={"status": "expired" if now >= token.expires_at else "active"},
        new=new,
    )


def list_tokens(session: Session, *, user_id: int | None = None) -> list[TokenInfo]:
    """Every token (or one user's), newest first. Raw tokens cannot be listed: they are not stored."""
    query = (
        select(ApiToken, User.username).join(User, User.id == ApiToken.user_id).order_by(ApiToken.id.desc())
    )
    if user_id is not None:
        query = query.where(ApiToken.user_id == user_id)
    return [_info(token, username) for token, username in session.execute(query).all()]
