"""The permission table denies by default."""

from __future__ import annotations

import pytest

from appliance.auth import ROLE_PERMISSIONS, Permission, Principal, Role, permissions_for, require
from appliance.auth.policy import NO_ACCESS
from appliance.auth.principal import _permissions
from shared.errors import PermissionDeniedError


def _principal(role: Role | None, permissions: frozenset[Permission]) -> Principal:
    return Principal(user_id=1, username="u", role=role, team_ids=(), policy=NO_ACCESS, permissions=permissions)


def test_every_role_has_an_entry_and_unknown_roles_get_nothing() -> None:
    assert set(ROLE_PERMISSIONS) == set(Role)
    for unknown in ("root", "", "Admin ", "superuser", None):
        assert permissions_for(unknown) == frozenset()


def test_roles_are_separated() -> None:
    dev, aud, adm = (permissions_for(r) for r in ("developer", "auditor", "admin"))
    assert Permission.GENERATE in dev and Permission.GENERATE not in aud | adm
    assert Permission.AUDIT_DECRYPT in aud and Permission.AUDIT_DECRYPT not in dev | adm
    assert Permission.USERS_MANAGE in adm and Permission.USERS_MANAGE not in dev | aud
    assert Permission.AUDIT_READ not in adm  # admins administer; auditors read the log


def test_require_denies_unknown_permissions_and_unlisted_ones() -> None:
    admin = _principal(Role.ADMIN, permissions_for(Role.ADMIN))
    require(admin, Permission.USERS_MANAGE)
    require(admin, "users:manage")
    for wanted in ("audit:delete", "generate", "", "USERS:MANAGE"):
        with pytest.raises(PermissionDeniedError):
            require(admin, wanted)
    nobody = _principal(None, _permissions(None, None, False))
    for perm in Permission:
        with pytest.raises(PermissionDeniedError):
            require(nobody, perm)


def test_scopes_and_forced_password_change_only_narrow() -> None:
    dev = Role.DEVELOPER
    assert _permissions(dev, frozenset({Permission.GENERATE, Permission.USERS_MANAGE}), False) == {Permission.GENERATE}
    assert _permissions(dev, frozenset(), False) == frozenset()
    assert _permissions(Role.ADMIN, None, True) == {Permission.PASSWORD_CHANGE}
