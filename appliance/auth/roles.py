"""Roles and the permission table. Deny by default: what is not listed here is not allowed.

A role or permission this table does not know (a typo, a role added to the database by hand, a
permission a newer route asks for) grants nothing.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

__all__ = ["ROLE_PERMISSIONS", "Permission", "Role", "parse_role", "permissions_for"]


class Role(enum.StrEnum):
    DEVELOPER = "developer"
    AUDITOR = "auditor"
    ADMIN = "admin"


class Permission(enum.StrEnum):
    GENERATE = "generate"  # chat/completions on the models the policy allows
    MODELS_READ = "models:read"  # list installed models
    PROJECTS_USE = "projects:use"  # register and use projects
    TOKENS_SELF = "tokens:self"  # create, list and revoke one's own API tokens
    PASSWORD_CHANGE = "password:change"  # change one's own password
    AUDIT_READ = "audit:read"
    AUDIT_EXPORT = "audit:export"
    AUDIT_VERIFY = "audit:verify"
    AUDIT_DECRYPT = "audit:decrypt"  # open content sealed under the `sealed` capture mode
    USERS_MANAGE = "users:manage"  # add, list, disable users; set roles
    TEAMS_MANAGE = "teams:manage"  # teams and memberships
    TOKENS_MANAGE = "tokens:manage"  # anyone's API tokens
    POLICIES_MANAGE = "policies:manage"
    MODELS_MANAGE = "models:manage"  # install, activate, remove model bundles
    # Provision users and groups through /scim/v2: give the IdP a token scoped to this alone.
    SCIM_PROVISION = "scim:provision"


_COMMON = frozenset({Permission.TOKENS_SELF, Permission.PASSWORD_CHANGE, Permission.MODELS_READ})

# Nobody may alter or delete audit records, so no permission for it exists.
ROLE_PERMISSIONS: Mapping[Role, frozenset[Permission]] = {
    Role.DEVELOPER: _COMMON | {Permission.GENERATE, Permission.PROJECTS_USE},
    Role.AUDITOR: _COMMON
    | {Permission.AUDIT_READ, Permission.AUDIT_EXPORT, Permission.AUDIT_VERIFY, Permission.AUDIT_DECRYPT},
    Role.ADMIN: _COMMON
    | {
        Permission.USERS_MANAGE,
        Permission.TEAMS_MANAGE,
        Permission.TOKENS_MANAGE,
        Permission.POLICIES_MANAGE,
        Permission.MODELS_MANAGE,
        Permission.AUDIT_VERIFY,
        Permission.SCIM_PROVISION,
    },
}


def parse_role(value: str) -> Role | None:
    """The Role named ``value``, or None for a name the table does not know."""
    try:
        return Role(value)
    except ValueError:
        return None


def permissions_for(role: Role | str | None) -> frozenset[Permission]:
    """Every permission ``role`` holds; the empty set for an unknown role."""
    parsed = role if isinstance(role, Role) else parse_role(role) if isinstance(role, str) else None
    if parsed is None:
        return frozenset()
    return ROLE_PERMISSIONS.get(parsed, frozenset())
