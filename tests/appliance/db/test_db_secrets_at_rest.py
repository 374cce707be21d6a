"""No password or token is stored in a form that equals or contains the secret."""

from __future__ import annotations

import datetime as dt
import sqlite3
from contextlib import closing
from pathlib import Path

from sqlalchemy.engine import make_url

from appliance.auth import admin, create_token, login
from tests.helpers.appliance_db import T0, THROTTLE_KEY, all_rows_text, at, migrated_uow

PASSWORD = "quartz-ember-willow-8812"


def _store_secrets(url: str) -> list[str]:
    with migrated_uow(url) as uow:
        with uow() as s:
            admin.create_team(s, "default", now=T0)
            change, _ = admin.create_user(s, "carol", role="developer", password=PASSWORD, now=T0)
            _, one_time = admin.create_user(s, "dave", role="admin", now=T0)
        with uow() as s:
            api_token, _, _ = create_token(s, change.target_id, name="ci", expires_in=dt.timedelta(days=7), now=at(1))
        with uow() as s:
            session_token, _ = login(s, "carol", PASSWORD, address="10.1.2.3", throttle_key=THROTTLE_KEY, now=at(2))
    assert one_time is not None
    secrets = [PASSWORD, one_time, api_token, session_token]
    # The random part alone must not appear either.
    return secrets + [t.split("_", 1)[1] for t in (api_token, session_token)]


def _sqlite_bytes(url: str) -> bytes:
    path = Path(make_url(url).database or "")
    return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())


def test_secrets_are_not_stored(db_url: str) -> None:
    secrets = _store_secrets(db_url)
    text = all_rows_text(db_url)
    assert "carol" in text  # the search sees the data it is meant to search
    for secret in secrets:
        assert secret not in text
    if db_url.startswith("sqlite"):
        before = _sqlite_bytes(db_url)
        # Outside any transaction (make_engine's connections BEGIN IMMEDIATE), so plain sqlite3.
        with closing(sqlite3.connect(make_url(db_url).database or "")) as conn:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0
        after = _sqlite_bytes(db_url)
        assert b"carol" in before and b"carol" in after
        for secret in secrets:
            assert secret.encode() not in before
            assert secret.encode() not in after
