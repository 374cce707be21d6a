"""LDAP sign-in, the database half: the login throttle around the directory's verdict, then the
same group mapping, account link and session as single sign-on (:func:`appliance.auth.sso.enter`).

A wrong password or an unknown name is counted by :mod:`appliance.auth.throttle` exactly like a
local wrong password (keyed by the name as typed), and answers the same message; the directory is
asked in no transaction (:meth:`appliance.auth.ldap.LdapDirectory.authenticate`), between
:func:`precheck` (a read) and :func:`sign_in` (the write). Nothing commits.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from appliance.auth import sso, throttle
from appliance.auth.ldap import DirectoryUser
from appliance.db.models import User
from shared.errors import AuthError

__all__ = ["COUNTED", "normalize", "precheck", "sign_in"]

# Directory verdicts that are password guesses: counted by the throttle.
COUNTED = frozenset({"bad_password", "unknown_user", "ambiguous_user"})


def normalize(username: str) -> str:
    return username.strip().lower()


def _user_id(session: Session, name: str) -> int | None:
    return session.scalar(select(User.id).where(User.username == name))


def precheck(session: Session, username: str, address: str, *, throttle_key: bytes, now: dt.datetime) -> None:
    """Raise ThrottledError when the attempt must not reach the directory (read only, no lock)."""
    name = normalize(username)
    throttle.check(session, name, address, key=throttle_key, user_id=_user_id(session, name), now=now, lock=False)


def sign_in(
    session: Session,
    verdict: DirectoryUser | AuthError,
    username: str,
    *,
    provider: str,
    address: str,
    throttle_key: bytes,
    now: dt.datetime,
    ttl_s: int,
) -> sso.SignedIn:
    """Record the directory's ``verdict`` on ``username`` and, when it vouched, open a session.

    Raises ThrottledError (not counted), the verdict's AuthError (counted when in :data:`COUNTED`)
    or :func:`sso.enter`'s (``no_group``, ``disabled``, ``username_taken``).
    """
    name = normalize(username)
    throttle.check(session, name, address, key=throttle_key, user_id=_user_id(session, name), now=now)
    if isinstance(verdict, AuthError):
        if verdict.reason in COUNTED:
            throttle.record_failure(session, name, address, key=throttle_key, now=now)
        raise verdict
    if not name or len(name) > 64 or not name.isprintable():
        raise AuthError("invalid username or password", reason="unknown_user")
    # A refusal (no mapped group, disabled, name taken) leaves no half-made account behind.
    with session.begin_nested():
        done = sso.enter(
            session,
            provider=provider,
            source="ldap",
            subject=verdict.subject,
            username=lambda: name,
            member_of=verdict.groups,
            address=address,
            now=now,
            ttl_s=ttl_s,
        )
    throttle.record_success(session, name, address, key=throttle_key, user_id=done.user_id, now=now)
    return done
