"""A secret typed into the sign-in form's user name field is never stored in clear (issue 12, item 8).

People paste passwords and tokens into the wrong field. The throttle's counters and the audit log's
record of the failure must keep neither the text nor its lowercase form; they keep a keyed digest,
which still lets the throttle count the attempts and an auditor tell the attempts on one name apart.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from appliance.auth import throttle
from appliance.db.models import LoginThrottle
from tests.appliance.api.conftest import PASSWORD, build_appliance
from tests.helpers.appliance_db import all_rows_text

pytestmark = pytest.mark.anyio

SECRET = "Quartz-Hunter2-Lantern-Secret-9431"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_password_typed_as_the_user_name_is_not_stored_in_clear(tmp_path: Path, db_url: str) -> None:
    appliance = build_appliance(tmp_path, db_url)
    try:
        transport = httpx.ASGITransport(app=appliance.app, client=("192.0.2.7", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            statuses = [
                (await client.post("/v1/auth/login", json={"username": SECRET, "password": "a wrong guess 1234"})).status_code
                for _ in range(throttle.FREE_ATTEMPTS + 2)
            ]
            # A real account's failure still names it: only names no account has are digested.
            wrong = await client.post("/v1/auth/login", json={"username": "dev", "password": "not it at all 99"})
            right = await client.post("/v1/auth/login", json={"username": "dev", "password": PASSWORD})
        assert statuses == [401] * throttle.FREE_ATTEMPTS + [429, 429]  # the digest is what is counted
        assert (wrong.status_code, right.status_code) == (401, 200)
        with appliance.uow() as s:
            assert (s.scalar(select(func.count()).select_from(LoginThrottle)) or 0) >= 3
        failed = appliance.records("auth.login.failed")
        digest = throttle.name_digest(appliance.app.state.enclave.throttle_key, SECRET)[:16]
        named = [(r["actor"], r["target"]) for r in failed]
        assert named[-1] == ("dev", "user:dev")
        assert len(named) > throttle.FREE_ATTEMPTS and set(named[:-1]) == {("anonymous", f"unknown-user:{digest}")}
    finally:
        appliance.close()
    text = all_rows_text(db_url)
    assert "user:dev" in text and "auth.login.failed" in text  # the search sees what it is meant to search
    assert SECRET not in text and SECRET.lower() not in text
    if db_url.startswith("sqlite"):
        path = make_url(db_url).database or ""
        with closing(sqlite3.connect(path)) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        raw = b"".join(p.read_bytes() for p in (Path(path), Path(f"{path}-wal")) if p.exists())
        assert SECRET.encode() not in raw and SECRET.lower().encode() not in raw
