"""Housekeeping drops dead rows and never lifts a lock."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select

from appliance.auth import admin, create_token, login, revoke_token
from appliance.auth.maintenance import purge
from appliance.db.models import ApiToken, LoginSession, LoginThrottle
from tests.helpers.appliance_db import T0, THROTTLE_KEY, at, migrated_uow

PASSWORD = "violet-harbour-tangent-57"


def test_purge(db_url: str) -> None:
    with migrated_uow(db_url) as uow:
        with uow() as s:
            admin.create_team(s, "default", now=T0)
            change, _ = admin.create_user(s, "kim", role="developer", password=PASSWORD, now=T0)
            _, old_token, _ = create_token(s, change.target_id, name="old", expires_in=dt.timedelta(days=1), now=T0)
            _, live_token, _ = create_token(s, change.target_id, name="live", expires_in=dt.timedelta(days=365), now=T0)
            revoke_token(s, live_token.id, now=at(10))
            login(s, "kim", PASSWORD, address="10.0.0.1", throttle_key=THROTTLE_KEY, now=T0, ttl_s=60)
            s.add(LoginThrottle(scope="account", key="victim", failures=100, window_start=T0, last_failure_at=T0))
            s.add(LoginThrottle(scope="address", key="10.9.9.9", failures=3, window_start=T0, last_failure_at=T0))
        later = at(100 * 86_400)
        with uow() as s:
            counts = purge(s, now=later)
        assert counts == {"login_sessions": 1, "address_windows": 1, "api_tokens": 2}
        with uow() as s:
            assert s.scalar(select(func.count()).select_from(LoginSession)) == 0
            assert s.scalar(select(func.count()).select_from(ApiToken)) == 0
            kept = s.scalars(select(LoginThrottle.key)).all()
            assert kept == ["victim"]  # a locked account stays locked
            assert old_token.id != live_token.id
