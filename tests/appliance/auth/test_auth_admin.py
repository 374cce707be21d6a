"""Admin operations: validation, old -> new changes, guard rails, effective policy."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from appliance.auth import admin
from appliance.auth.policy import NO_ACCESS, combine
from appliance.auth.principal import principal_for_user
from appliance.db.engine import UnitOfWork
from appliance.db.models import Policy
from shared.errors import ConflictError, InputError, NotFoundError
from tests.helpers.appliance_db import T0, at, migrated_uow

PASSWORD = "violet-harbour-tangent-57"


@pytest.fixture
def uow(db_url: str) -> Iterator[UnitOfWork]:
    with migrated_uow(db_url) as unit:
        with unit() as s:
            admin.create_team(s, "default", now=T0)
            admin.create_user(s, "root", role="admin", password=PASSWORD, now=T0)
        yield unit


def test_create_user_validation(uow: UnitOfWork) -> None:
    cases = [
        (dict(username="root", role="developer"), ConflictError, "already exists"),
        (dict(username="ROOT", role="developer"), ConflictError, "already exists"),
        (dict(username="eve", role="wizard"), InputError, "unknown role"),
        (dict(username="eve", role="developer", password="password12345678"), InputError, "blocklist"),
        (dict(username="eve", role="developer", password="short"), InputError, "too short"),
        (dict(username="bad name", role="developer"), InputError, "invalid user name"),
        (dict(username="eve", role="developer", teams=("nope",)), NotFoundError, "no team"),
    ]
    for kwargs, error, message in cases:
        with uow() as s, pytest.raises(error, match=message):
            admin.create_user(s, now=T0, **kwargs)  # type: ignore[arg-type]
    with uow() as s:
        assert [u.username for u in admin.list_users(s)] == ["root"]


def test_changes_carry_old_and_new(uow: UnitOfWork) -> None:
    with uow() as s:
        created, generated = admin.create_user(s, "eve", role="developer", now=T0)
        assert generated is not None and generated not in repr(created)
        assert created.new == {"role": "developer", "teams": ["default"], "must_change_password": True}
        changed = admin.set_role(s, "eve", "auditor", now=at(1))
        assert (changed.action, changed.old, changed.new) == ("admin.user.role_changed", {"role": "developer"}, {"role": "auditor"})
        disabled = admin.disable_user(s, "eve", now=at(2))
        assert (disabled.old, disabled.new) == ({"disabled": False}, {"disabled": True})
        policy = admin.set_policy(s, "default", now=at(3), capture_mode="sealed", requests_per_minute=5)
        assert policy.old is not None and policy.new is not None
        assert (policy.old["capture_mode"], policy.new["capture_mode"]) == ("digest", "sealed")
        assert policy.new["requests_per_minute"] == 5


def test_last_admin_is_kept(uow: UnitOfWork) -> None:
    with uow() as s, pytest.raises(ConflictError, match="last active admin"):
        admin.disable_user(s, "root", now=T0)
    with uow() as s, pytest.raises(ConflictError, match="last active admin"):
        admin.set_role(s, "root", "developer", now=T0)
    with uow() as s:
        admin.create_user(s, "root2", role="admin", now=T0)
        admin.set_role(s, "root", "developer", now=T0)


def test_policy_validation(uow: UnitOfWork) -> None:
    for kwargs in ({"capture_mode": "everything"}, {"requests_per_minute": -1}, {"colour": "red"},
                   {"allowed_models": "demo"}, {"max_output_tokens": True}):
        with uow() as s, pytest.raises(InputError):
            admin.set_policy(s, "default", now=T0, **kwargs)


def test_effective_policy_is_the_conservative_combination(uow: UnitOfWork) -> None:
    with uow() as s:
        admin.create_team(s, "secure", now=T0, policy={"allowed_models": ["demo*"], "requests_per_minute": 10,
                                                       "capture_mode": "sealed", "path_exclusions": ["vault/"]})
        admin.create_user(s, "frank", role="developer", now=T0, teams=("default", "secure"))
        admin.create_user(s, "loner", role="developer", now=T0, teams=())
        p = principal_for_user(s, admin.get_user(s, "frank"))
        assert p.policy.allows_model("demo-small") and not p.policy.allows_model("deepseek-v4-flash")
        assert p.policy.requests_per_minute == 10 and p.policy.capture_mode == "sealed"
        assert "vault/" in p.policy.path_exclusions and ".env" in p.policy.path_exclusions
        assert principal_for_user(s, admin.get_user(s, "loner")).policy == NO_ACCESS
    assert not NO_ACCESS.allows_model("anything")
    assert combine([Policy(team_id=1, allowed_models=["*"], capture_mode="none", path_exclusions=[],
                           requests_per_minute=None)]).requests_per_minute is None


def test_model_registry(uow: UnitOfWork) -> None:
    digest = "ab" * 32
    with uow() as s:
        change = admin.register_model(s, name="demo", version="1", path="models/demo-1", manifest_sha256=digest, now=T0)
        assert change.new == {"path": "models/demo-1", "manifest_sha256": digest}
        with pytest.raises(ConflictError):
            admin.register_model(s, name="demo", version="1", path="x", manifest_sha256=digest, now=T0)
        with pytest.raises(InputError):
            admin.register_model(s, name="demo", version="2", path="x", manifest_sha256="nothex", now=T0)
        admin.set_model_active(s, "demo", "1", False, now=at(1))
        assert admin.list_models(s, active_only=True) == []
        assert [m.name for m in admin.list_models(s)] == ["demo"]
