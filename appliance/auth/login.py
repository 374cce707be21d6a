"""Password login, logout and password change.

A successful :func:`login` returns a short-lived session token (shown once, stored as a digest).
A failed one raises AuthError *after* counting the failure in the caller's session: the caller
must still commit that session (with its audit event) before letting the error propagate,
otherwise the throttle never sees the failure. Every attempt, for a real user or not, costs one
Argon2id verification, and the message never says which part was wrong.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from appliance.auth import throttle
from appliance.auth.passwords import (
    check_password,
    hash_password,
    needs_rehash,
    verify_dummy,
    verify_password,
)
from appliance.auth.secrets import looks_like_token, new_secret, token_digest
from appliance.db.models import LoginSession, User
from shared.errors import AuthError, InputError

__all__ = ["DEFAULT_SESSION_TTL_S", "change_password", "login", "logout"]

DEFAULT_SESSION_TTL_S = 8 * 3600
_BAD_LOGIN = "invalid username or password"


def login(
    session: Session,
    username: str,
    password: str,
    *,
    address: str,
    now: dt.datetime,
    ttl_s: int = DEFAULT_SESSION_TTL_S,
) -> tuple[str, dt.datetime]:
    """Check ``username``/``password`` from client ``address``; return (session token, expiry).

    Raises ThrottledError (reason ``throttled`` or ``locked``; the attempt is not counted) or
    AuthError with reason ``unknown_user``, ``bad_password`` or ``disabled``. Does not commit.
    """
    name = username.strip().lower()
    user = session.scalar(select(User).where(User.username == name)) if name else None
    throttle.check(session, name, address, user_id=user.id if user else None, now=now)
    if user is None:
        verify_dummy(password)
        throttle.record_failure(session, name, address, now=now)
        raise AuthError(_BAD_LOGIN, reason="unknown_user")
    if not verify_password(password, user.password_hash):
        throttle.record_failure(session, name, address, now=now)
        raise AuthError(_BAD_LOGIN, reason="bad_password")
    if user.disabled:
        raise AuthError("account is disabled", reason="disabled")
    throttle.record_success(session, name, address, user_id=user.id, now=now)
    if needs_rehash(user.password_hash):
        # The cost was raised since this hash was made; the plaintext is at hand only now.
        user.password_hash = hash_password(password)
    raw = new_secret()
    expires_at = now + dt.timedelta(seconds=ttl_s)
    session.add(
        LoginSession(
            user_id=user.id,
            token_digest=token_digest(raw),
            address=address[:64],
            created_at=now,
            expires_at=expires_at,
            revoked_at=None,
        )
    )
    session.flush()
    return raw, expires_at


def logout(session: Session, raw_token: str, *, now: dt.datetime) -> int:
    """End the login session behind ``raw_token``; returns its user id. Does not commit."""
    raw = raw_token.strip()
    found = (
        session.scalar(select(LoginSession).where(LoginSession.token_digest == token_digest(raw)))
        if looks_like_token(raw)
        else None
    )
    if found is None:
        raise AuthError("not a login session token", reason="unknown_token")
    if found.revoked_at is None:
        found.revoked_at = now
        session.flush()
    return found.user_id


def change_password(
    session: Session,
    user_id: int,
    old_password: str,
    new_password: str,
    *,
    now: dt.datetime,
    address: str = "",
) -> None:
    """Replace a user's password after checking the old one; ends all their login sessions.

    The old password is checked first, throttled exactly like a login from ``address`` (a token
    must not become a password-guessing oracle): ThrottledError, or AuthError (reason
    ``bad_password``) for a wrong old password whatever the new one is. Only then is the new one
    judged: InputError if it fails the password rules or equals the old one. A wrong old password
    is counted on the session's transaction; the caller commits it with its audit record.
    """
    user = session.get(User, user_id)
    if user is None:
        raise AuthError(_BAD_LOGIN, reason="unknown_user")
    throttle.check(session, user.username, address, user_id=user.id, now=now)
    if not verify_password(old_password, user.password_hash):
        throttle.record_failure(session, user.username, address, now=now)
        raise AuthError("current password is wrong", reason="bad_password")
    throttle.record_success(session, user.username, address, user_id=user.id, now=now)
    check_password(new_password, username=user.username)
    if new_password == old_password:
        raise InputError("the new password must differ from the current one")
    user.password_hash = hash_password(new_password)
    user.must_change_password = False
    user.password_changed_at = now
    session.execute(
        update(LoginSession)
        .where(LoginSession.user_id == user.id, LoginSession.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    session.flush()
