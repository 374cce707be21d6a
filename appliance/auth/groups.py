"""Group mapping: provider groups (OIDC ``groups`` claim, LDAP ``memberOf``) -> Enclave teams and
a role, as the admin configured them. :func:`resolve` is applied at every sign-in, so a user
removed from a group loses that team at their next sign-in (sessions are short, see
``session_ttl_s``); an outside user whose groups map to nothing is refused (fail closed).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from appliance.auth.change import Change
from appliance.auth.roles import Role, parse_role
from appliance.db.identity_models import GroupMapping
from appliance.db.models import Membership, Team, User
from shared.errors import ConflictError, InputError, NotFoundError

__all__ = [
    "SOURCES",
    "MappingInfo",
    "Resolved",
    "add_mapping",
    "apply",
    "list_mappings",
    "remove_mapping",
    "resolve",
]

SOURCES = ("oidc", "ldap", "scim")
# Higher wins when several groups map a user: a user in both an admin and a developer group is admin.
_RANK = {Role.DEVELOPER: 0, Role.AUDITOR: 1, Role.ADMIN: 2}


@dataclass(frozen=True, kw_only=True)
class MappingInfo:
    id: int
    source: str
    group: str
    team: str
    role: str


@dataclass(frozen=True, kw_only=True)
class Resolved:
    team_ids: tuple[int, ...]
    role: Role


def _source(source: str) -> str:
    if source not in SOURCES:
        raise InputError(f"group source must be one of {', '.join(SOURCES)}, got {source!r}")
    return source


def add_mapping(
    session: Session, source: str, group: str, team: str, role: str, *, now: dt.datetime
) -> Change:
    name = group.strip()
    if not name or len(name) > 255 or not name.isprintable():
        raise InputError("group must be 1..255 printable characters")
    parsed = parse_role(role)
    if parsed is None:
        raise InputError(f"unknown role {role!r} (known: {', '.join(r.value for r in Role)})")
    found = session.scalar(select(Team).where(Team.name == team))
    if found is None:
        raise NotFoundError(f"no team named {team!r}")
    exists = session.scalar(
        select(GroupMapping).where(
            GroupMapping.source == _source(source),
            GroupMapping.group_name == name,
            GroupMapping.team_id == found.id,
        )
    )
    if exists is not None:
        raise ConflictError(f"{source} group {name!r} already maps to team {team!r}")
    mapping = GroupMapping(
        source=source, group_name=name, team_id=found.id, role=parsed.value, created_at=now
    )
    session.add(mapping)
    session.flush()
    return Change(
        action="admin.group_mapping.added",
        target=f"group_mapping:{mapping.id}",
        target_id=mapping.id,
        old=None,
        new={"source": source, "group": name, "team": team, "role": parsed.value},
    )


def remove_mapping(session: Session, mapping_id: int) -> Change:
    mapping = session.get(GroupMapping, mapping_id)
    if mapping is None:
        raise NotFoundError(f"no group mapping with id {mapping_id}")
    team = session.get(Team, mapping.team_id)
    old: dict[str, object] = {
        "source": mapping.source,
        "group": mapping.group_name,
        "team": team.name if team else "",
        "role": mapping.role,
    }
    session.delete(mapping)
    session.flush()
    return Change(
        action="admin.group_mapping.removed",
        target=f"group_mapping:{mapping_id}",
        target_id=mapping_id,
        old=old,
        new=None,
    )


def list_mappings(session: Session, source: str | None = None) -> list[MappingInfo]:
    query = (
        select(GroupMapping, Team.name).join(Team, Team.id == GroupMapping.team_id).order_by(GroupMapping.id)
    )
    if source is not None:
        query = query.where(GroupMapping.source == _source(source))
    return [
        MappingInfo(id=m.id, source=m.source, group=m.group_name, team=team, role=m.role)
        for m, team in session.execute(query).all()
    ]


def resolve(session: Session, source: str, groups: Iterable[str]) -> Resolved | None:
    """The teams and role ``groups`` earn, or None when no group is mapped."""
    wanted = {g for g in groups if isinstance(g, str)}
    if not wanted:
        return None
    rows = session.scalars(
        select(GroupMapping).where(
            GroupMapping.source == _source(source), GroupMapping.group_name.in_(wanted)
        )
    ).all()
    if not rows:
        return None
    roles = [r for r in (parse_role(m.role) for m in rows) if r is not None]
    role = max(roles, key=lambda r: _RANK[r]) if roles else Role.DEVELOPER
    return Resolved(team_ids=tuple(sorted({m.team_id for m in rows})), role=role)


def apply(session: Session, user: User, resolved: Resolved, *, now: dt.datetime) -> dict[str, object] | None:
    """Make ``user``'s role and teams what ``resolved`` says; returns old -> new when it changed."""
    before = sorted(session.scalars(select(Membership.team_id).where(Membership.user_id == user.id)))
    after = list(resolved.team_ids)
    changed: dict[str, object] = {}
    if before != after:
        session.execute(
            delete(Membership).where(Membership.user_id == user.id, Membership.team_id.not_in(after))
        )
        for team_id in set(after) - set(before):
            session.add(Membership(user_id=user.id, team_id=team_id, created_at=now))
        changed["teams"] = {"old": before, "new": after}
    if user.role != resolved.role.value:
        changed["role"] = {"old": user.role, "new": resolved.role.value}
        user.role = resolved.role.value
    session.flush()
    return changed or None
