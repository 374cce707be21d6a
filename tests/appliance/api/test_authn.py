"""The API's two-query token look-up decides exactly as ``appliance.auth.principal.authenticate``,
on SQLite and PostgreSQL, for every kind of credential and every way one can be refused."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import delete, select

from appliance.api.authn import NeedsWrite, authenticate_fast
from appliance.auth import admin as ops
from appliance.auth import tokens as token_ops
from appliance.auth.login import login, logout
from appliance.auth.principal import Principal, authenticate
from appliance.db.models import Policy, Team
from shared.errors import AuthError
from tests.appliance.api.conftest import PASSWORD, T0, Appliance, build_appliance
from tests.helpers.appliance_db import THROTTLE_KEY

Outcome = Principal | str


def _outcome(decide: Callable[[], Principal]) -> Outcome:
    try:
        return decide()
    except AuthError as exc:
        return f"refused: {exc.reason}"
    except NeedsWrite:
        return "needs write"


def _both(a: Appliance, token: str, now: dt.datetime) -> tuple[Outcome, Outcome]:
    # The ORM path first, committed: it writes a due last_used_at, as the API's fallback does.
    with a.uow() as session:
        orm = _outcome(lambda: authenticate(session, token, now=now))
    with a.uow.engine.connect() as conn:
        fast = _outcome(lambda: authenticate_fast(conn, token, now=now))
    return orm, fast


def _token(a: Appliance, username: str, **kwargs: object) -> tuple[str, int]:
    with a.uow() as session:
        user = ops.get_user(session, username)
        raw, info, _ = token_ops.create_token(
            session, user.id, name=f"t{len(a.tokens)}", expires_in=dt.timedelta(days=1), now=T0, **kwargs  # type: ignore[arg-type]
        )
        a.tokens[raw] = username
        return raw, info.id


@pytest.fixture
def appliance(tmp_path: Path, db_url: str) -> Appliance:
    a = build_appliance(tmp_path, db_url, policy={"path_exclusions": ["secrets/"], "capture_mode": "none"})
    with a.uow() as session:
        ops.create_team(session, "red", now=T0, policy={"allowed_models": ["deepseek-*"], "requests_per_minute": 5})
        ops.create_team(session, "bare", now=T0)
        session.execute(delete(Policy).where(Policy.team_id == select(Team.id).where(Team.name == "bare").scalar_subquery()))
        ops.create_user(session, "multi", role="developer", now=T0, password=PASSWORD, teams=["default", "red", "bare"])
        ops.create_user(session, "loner", role="developer", now=T0, password=PASSWORD, teams=[])
        ops.create_user(session, "fresh", role="auditor", now=T0)  # a one-time password to change
    return a


def test_the_fast_path_decides_as_authenticate(appliance: Appliance) -> None:
    a = appliance
    now = T0 + dt.timedelta(hours=1)
    credentials = dict(a.tokens)  # dev, aud, adm: API tokens with their role's full scopes
    credentials["scoped"] = _token(a, "dev", scopes=["models:read", "generate"])[0]
    credentials["multi"] = _token(a, "multi")[0]
    credentials["loner"] = _token(a, "loner")[0]
    credentials["fresh"] = _token(a, "fresh")[0]
    with a.uow() as session:
        credentials["session"] = login(session, "multi", PASSWORD, address="127.0.0.1", throttle_key=THROTTLE_KEY, now=T0, ttl_s=7200)[0]
        credentials["ended"] = login(session, "dev", PASSWORD, address="127.0.0.1", throttle_key=THROTTLE_KEY, now=T0, ttl_s=7200)[0]
    revoked, revoked_id = _token(a, "adm")
    credentials["revoked"] = revoked
    disabled = _token(a, "multi")[0]
    with a.uow() as session:
        token_ops.revoke_token(session, revoked_id, now=now)
        logout(session, credentials["ended"], now=now)
    credentials["unknown"] = "encl_" + "A" * 43
    credentials["malformed"] = "not-a-token"

    seen: dict[str, Outcome] = {}
    for name, token in credentials.items():
        orm, fast = _both(a, token, now)
        assert fast == orm, name
        seen[name] = fast
    assert isinstance(seen["multi"], Principal) and len(seen["multi"].policy.allowed_models) == 2
    assert isinstance(seen["loner"], Principal) and seen["loner"].policy.allowed_models == ()
    assert isinstance(seen["session"], Principal) and seen["session"].session_id is not None
    assert isinstance(seen["fresh"], Principal) and seen["fresh"].must_change_password
    assert seen["revoked"] == "refused: revoked" and seen["ended"] == "refused: revoked"
    assert seen["unknown"] == "refused: unknown_token" and seen["malformed"] == "refused: malformed"

    # Expiry, a disabled account, a role change: each shows on the very next look-up.
    later = T0 + dt.timedelta(days=31)  # past the fixture tokens' 30 days
    assert _both(a, credentials["dev"], later) == ("refused: expired", "refused: expired")
    with a.uow() as session:
        ops.disable_user(session, "multi", now=now)
        ops.set_role(session, "dev", "auditor", now=now)
    assert _both(a, disabled, now) == ("refused: disabled", "refused: disabled")
    orm, fast = _both(a, credentials["dev"], now)
    assert fast == orm and isinstance(fast, Principal) and fast.role is not None and fast.role.value == "auditor"


def test_a_due_last_used_bump_asks_for_the_write_path(appliance: Appliance) -> None:
    token, _ = _token(appliance, "dev")
    with appliance.uow.engine.connect() as conn:
        assert _outcome(lambda: authenticate_fast(conn, token, now=T0)) == "needs write"
