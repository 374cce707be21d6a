"""Password login, logout and password change.

A successful :func:`login` returns a short-lived session token (shown once, stored as a digest).
A failed one raises AuthError *after* counting the failure in the caller's session: the caller
must still commit that session (with its audit event) before letting the error propagate,
otherwise the throttle never sees the failure. Every attempt, for a real user or not, costs one
Argon2id verification, and the message never says which part was wrong.

The Argon2 work happens outside the write transaction: :func:`read_candidate` (a read, no lock)
and :func:`verify_candidate` (no transaction at all) give :func:`login` a :class:`Verdict`, and
the write transaction only re-checks the throttle under its locks and records the outcome. A
login spray then queues on the Argon2 slots (``passwords.ARGON2_SLOTS``), not on the database's
write lock, which generation's audit records need too.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

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

__all__ = [
    "DEFAULT_SESSION_TTL_S",
    "Candidate",
    "Verdict",
    "change_password",
    "login",
    "logout",
    "read_candidate",
    "verify_candidate",
]

DEFAULT_SESSION_TTL_S = 8 * 3600
_BAD_LOGIN = "invalid username or password"


@dataclass(frozen=True)
class Candidate:
    """What a login attempt will be checked against, read before any write transaction."""

    user_id: int | None
    password_hash: str | None
    # The throttle would refuse the attempt now: spend no Argon2 on it.
    throttled: bool


@dataclass(frozen=True)
class Verdict:
    """A password checked against ``password_hash`` in no transaction (None: not checked)."""

    user_id: int | None
    password_hash: str | None
    matched: bool | None
    # The same password hashed at the current cost, when the stored hash is below it.
    new_hash: str | None = None


def read_candidate(
    session: Session, username: str, address: str, *, throttle_key: bytes, now: dt.datetime
) -> Candidate:
    """Read (no lock, nothing written) the account ``username`` names and the throttle's view."""
    name = username.strip().lower()
    row = session.execute(select(User.id, User.password_hash).where(User.username == name)).first() if name else None
    user_id, password_hash = (row.id, row.password_hash) if row is not None else (None, None)
    try:
        throttle.check(session, name, address, key=throttle_key, user_id=user_id, now=now, lock=False)
    except AuthError:
        return Candidate(user_id, password_hash, throttled=True)
    return Candidate(user_id, password_hash, throttled=False)


def verify_candidate(candidate: Candidate, password: str) -> Verdict:
    """The Argon2 work for one attempt (bounded process-wide); call it inside no transaction."""
    if candidate.throttled:
        return Verdict(candidate.user_id, candidate.password_hash, matched=None)
    if candidate.password_hash is None:
        verify_dummy(password)
        return Verdict(None, None, matched=False)
    matched = verify_password(password, candidate.password_hash)
    # The cost was raised since this hash was made; the plaintext is at hand only now.
    new_hash = hash_password(password) if matched and needs_rehash(candidate.password_hash) else None
    return Verdict(candidate.user_id, candidate.password_hash, matched=matched, new_hash=new_hash)


def _matches(user: User | None, password: str, verdict: Verdict | None) -> Verdict:
    current = user.password_hash if user is not None else None
    if (
        verdict is not None
        and verdict.matched is not None
        and verdict.user_id == (user.id if user is not None else None)
        and verdict.password_hash == current
    ):
        return verdict
    # No verdict, or the account changed since it was read: check here (rare, and still bounded).
    return verify_candidate(Candidate(user.id if user else None, current, throttled=False), password)


def login(
    session: Session,
    username: str,
    password: str,
    *,
    address: str,
    throttle_key: bytes,
    now: dt.datetime,
    ttl_s: int = DEFAULT_SESSION_TTL_S,
    verdict: Verdict | None = None,
) -> tuple[str, dt.datetime]:
    """Check ``username``/``password`` from client ``address``; return (session token, expiry).

    ``verdict`` is the password already checked outside this transaction (see the module's
    docstring); it is used when it was made against the hash the account still has.
    Raises ThrottledError (reason ``throttled`` or ``locked``; the attempt is not counted) or
    AuthError with reason ``unknown_user``, ``bad_password`` or ``disabled``. Does not commit.
    """
    name = username.strip().lower()
    user = session.scalar(select(User).where(User.username == name)) if name else None
    throttle.check(session, name, address, key=throttle_key, user_id=user.id if user else None, now=now)
    checked = _matches(user, password, verdict)
    if user is None:
        throttle.record_failure(session, name, address, key=throttle_key, now=now)
        raise AuthError(_BAD_LOGIN, reason="unknown_user")
    if not checked.matched:
        throttle.record_failure(session, name, address, key=throttle_key, now=now)
        raise AuthError(_BAD_LOGIN, reason="bad_password")
    if user.disabled:
        raise AuthError("account is disabled", reason="disabled")
    throttle.record_success(session, name, address, key=throttle_key, user_id=user.id, now=now)
    if checked.new_hash is not None:
        user.password_hash = checked.new_hash
    return open_session(session, user, address=address, now=now, ttl_s=ttl_s)


def open_session(
    session: Session, user: User, *, address: str, now: dt.datetime, ttl_s: int
) -> tuple[str, dt.datetime]:
    """A new login session for ``user`` (password or single sign-on): (raw token, expiry)."""
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
    throttle_key: bytes,
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
    throttle.check(session, user.username, address, key=throttle_key, user_id=user.id, now=now)
    if not verify_password(old_password, user.password_hash):
        throttle.record_failure(session, user.username, address, key=throttle_key, now=now)
        raise AuthError("current password is wrong", reason="bad_password")
    throttle.record_success(session, user.username, address, key=throttle_key, user_id=user.id, now=now)
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
