"""Session refresh: a login session traded for a new one, with the user's groups re-evaluated.

For a directory (LDAP) account the service account reads the user's groups as they are now and
the group mapping is applied again: a user removed from every mapped group, or from the directory,
loses the session instead (it is revoked). SCIM-provisioned accounts are re-mapped whenever the
IdP changes their groups, and local accounts by the admin, so theirs are simply renewed. An OIDC
session cannot be refreshed here: the appliance keeps no provider refresh token, so its holder
signs in again through the provider (a fresh ID token, fresh groups). Nothing commits.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from appliance.auth import groups
from appliance.auth.ldap import DirectoryUser
from appliance.auth.login import open_session
from appliance.db.identity_models import IdentityLink
from appliance.db.models import LoginSession, User
from shared.errors import AuthError, ConflictError

__all__ = ["Plan", "Renewed", "plan", "renew"]


@dataclass(frozen=True, kw_only=True)
class Plan:
    session_id: int
    username: str
    # Look the user up in the directory first (an LDAP-linked account).
    directory: bool
    sso_only: bool


@dataclass(frozen=True, kw_only=True)
class Renewed:
    token: str
    expires_at: dt.datetime
    changes: dict[str, object] | None


def plan(session: Session, session_id: int, *, ldap_provider: str | None) -> Plan:
    login = session.get(LoginSession, session_id)
    user = session.get(User, login.user_id) if login is not None else None
    if login is None or user is None:
        raise AuthError("session has ended", reason="revoked")
    providers = set(session.scalars(select(IdentityLink.provider).where(IdentityLink.user_id == user.id)))
    directory = ldap_provider is not None and ldap_provider in providers
    sso_only = not directory and any(p.startswith("oidc:") for p in providers)
    return Plan(session_id=login.id, username=user.username, directory=directory, sso_only=sso_only)


def renew(
    session: Session,
    planned: Plan,
    found: DirectoryUser | AuthError | None,
    *,
    address: str,
    now: dt.datetime,
    ttl_s: int,
) -> Renewed:
    """End the planned session and open a new one; ``found`` is the directory's answer for a
    directory account. Raises ConflictError (an OIDC session) or AuthError (``revoked``,
    ``expired``, ``no_group``, the directory's ``unknown_user``) — the last two after revoking the
    session, so the caller must commit before letting the error out."""
    if planned.sso_only:
        raise ConflictError("single sign-on sessions are not refreshed: sign in again through the identity provider")
    login = session.get(LoginSession, planned.session_id)
    if login is None or login.revoked_at is not None:
        raise AuthError("session has ended", reason="revoked")
    if now >= login.expires_at:
        raise AuthError("session has expired", reason="expired")
    user = session.get(User, login.user_id)
    if user is None or user.disabled:
        raise AuthError("account is disabled", reason="disabled")
    login.revoked_at = now
    changes = None
    if planned.directory:
        if isinstance(found, AuthError):
            raise AuthError("the directory no longer knows this account", reason=found.reason)
        resolved = groups.resolve(session, "ldap", found.groups if found is not None else ())
        if resolved is None:
            raise AuthError("none of your directory groups is allowed to use Enclave any more", reason="no_group")
        changes = groups.apply(session, user, resolved, now=now)
    token, expires = open_session(session, user, address=address, now=now, ttl_s=ttl_s)
    session.flush()
    return Renewed(token=token, expires_at=expires, changes=changes)
