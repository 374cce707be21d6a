"""What a SCIM change does to Enclave: the account a provisioned ``User`` stands for, its active
state, and the teams and role its ``Group`` memberships earn through the group mapping (source
``scim``).

Deprovisioning (``active: false``, or DELETE) disables the account and revokes every API token and
login session it holds in the same transaction, so the next request with any of them is a 401
(authentication reads the database on every request; nothing is cached). A provisioned account has
no usable password: its holder signs in through the site's IdP (OIDC or LDAP), whose first sign-in
links to it by username (:func:`appliance.auth.sso.enter`). Nothing here commits.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from appliance.auth import groups
from appliance.auth.roles import Role
from appliance.db.identity_models import ScimResource
from appliance.db.models import ApiToken, LoginSession, User

__all__ = ["NO_PASSWORD", "deprovision", "enclave_username", "member_ids", "refresh_memberships", "upsert_user"]

# As appliance.auth.sso's: a hash verify_password never matches.
NO_PASSWORD = "!external"
_NAME = re.compile(r"[a-z][a-z0-9._-]{0,63}")
_BAD = re.compile(r"[^a-z0-9._-]+")


def enclave_username(user_name: str) -> str:
    """The Enclave username for a SCIM ``userName``: lower-cased, an e-mail's local part, any
    character usernames cannot hold turned into ``-`` (so ``J.Doe@corp`` is ``j.doe``)."""
    name = user_name.strip().lower()
    if "@" in name:
        name = name.split("@", 1)[0]
    if _NAME.fullmatch(name):
        return name
    name = _BAD.sub("-", name).strip("-") or "user"
    if not name[0].isalpha():
        name = f"u-{name}"
    return name[:64]


def _free_name(session: Session, wanted: str, resource_id: str) -> str:
    taken = session.scalar(select(User).where(User.username == wanted))
    if taken is None:
        return wanted
    # Two IdP names can fold to one username: the second keeps a piece of its own id.
    return f"{wanted[:55]}-{resource_id[:8]}"


def _adoptable(session: Session, user: User) -> bool:
    """An account made by an IdP sign-in (no password), not yet tied to another SCIM resource."""
    linked = session.scalar(select(ScimResource.id).where(ScimResource.user_id == user.id))
    return user.password_hash == NO_PASSWORD and linked is None


def _revoke_all(session: Session, user_id: int, now: dt.datetime) -> dict[str, int]:
    tokens = session.execute(
        update(ApiToken).where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None)).values(revoked_at=now)
    )
    sessions = session.execute(
        update(LoginSession)
        .where(LoginSession.user_id == user_id, LoginSession.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return {
        "tokens_revoked": int(getattr(tokens, "rowcount", 0) or 0),
        "sessions_revoked": int(getattr(sessions, "rowcount", 0) or 0),
    }


def deprovision(session: Session, user: User, now: dt.datetime) -> dict[str, Any]:
    """Disable ``user`` and revoke every token and session it holds, at once."""
    changes: dict[str, Any] = {}
    if user.disabled_at is None:
        user.disabled_at = now
        changes["disabled"] = {"old": False, "new": True}
    changes.update(_revoke_all(session, user.id, now))
    session.flush()
    return changes


def upsert_user(session: Session, row: ScimResource, user_name: str, active: bool, *, now: dt.datetime) -> dict[str, Any]:
    """Make the account ``row`` stands for match ``user_name`` and ``active``; returns what changed."""
    changes: dict[str, Any] = {}
    wanted = enclave_username(user_name)
    user = session.get(User, row.user_id) if row.user_id is not None else None
    if user is None:
        existing = session.scalar(select(User).where(User.username == wanted))
        if existing is not None and _adoptable(session, existing):
            user = existing
            changes["linked"] = existing.username
        else:
            user = User(
                username=_free_name(session, wanted, row.resource_id),
                password_hash=NO_PASSWORD,
                role=Role.DEVELOPER.value,
                must_change_password=False,
                created_at=now,
                password_changed_at=now,
                disabled_at=None,
            )
            session.add(user)
            session.flush()
            changes["created"] = user.username
        row.user_id = user.id
    elif wanted != user.username and enclave_username(user.username) != wanted:
        renamed = _free_name(session, wanted, row.resource_id)
        changes["username"] = {"old": user.username, "new": renamed}
        user.username = renamed
    if not active:
        changes.update(deprovision(session, user, now))
    elif user.disabled_at is not None:
        user.disabled_at = None
        changes["disabled"] = {"old": True, "new": False}
    session.flush()
    return changes


def member_ids(payload: dict[str, Any]) -> set[str]:
    """The ``value``s (SCIM ids) a stored Group's ``members`` name."""
    members = payload.get("members") or []
    return {str(m["value"]) for m in members if isinstance(m, dict) and m.get("value")}


def refresh_memberships(session: Session, user_resource_ids: Iterable[str], *, now: dt.datetime) -> dict[str, Any]:
    """Re-map the teams and role of the accounts behind ``user_resource_ids`` from the Groups that
    name them now; a user in no mapped group keeps no team. Returns username -> old/new."""
    wanted = set(user_resource_ids)
    if not wanted:
        return {}
    group_names: dict[str, set[str]] = {rid: set() for rid in wanted}
    for group in session.scalars(select(ScimResource).where(ScimResource.resource_type == "Group")):
        name = str(group.payload.get("displayName") or "")
        for rid in member_ids(group.payload) & wanted:
            group_names[rid].add(name)
    rows = session.scalars(
        select(ScimResource).where(ScimResource.resource_type == "User", ScimResource.resource_id.in_(wanted))
    )
    effects: dict[str, Any] = {}
    for row in rows:
        user = session.get(User, row.user_id) if row.user_id is not None else None
        if user is None:
            continue
        resolved = groups.resolve(session, "scim", group_names.get(row.resource_id, set()))
        if resolved is None:
            # In no mapped group: no team and the least role, so a group that granted admin
            # takes admin with it when the IdP removes the user.
            resolved = groups.Resolved(team_ids=(), role=Role.DEVELOPER)
        changed = groups.apply(session, user, resolved, now=now)
        if changed:
            effects[user.username] = changed
    return effects

