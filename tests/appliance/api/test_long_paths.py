"""A very long path with a refused token still leaves its audit record, and no traceback
(issue 12, item 9: 600 characters went over the target column and logged ~3 KB per request)."""

from __future__ import annotations

import datetime as dt
import logging

import httpx
import pytest

from appliance.audit.models import TARGET_LEN
from appliance.auth import admin as ops
from appliance.auth import tokens as token_ops
from tests.appliance.api.conftest import T0, Appliance

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


LONG = "/v1/admin/users/" + "x" * 600 + "/disable"


async def test_long_path_with_expired_and_revoked_tokens_is_audited_in_one_line(
    appliance: Appliance, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with appliance.uow() as session:
        user = ops.get_user(session, "adm")
        revoked, info, _ = token_ops.create_token(
            session, user.id, name="gone", expires_in=dt.timedelta(days=90), now=T0
        )
        token_ops.revoke_token(session, info.id, now=T0)
    caplog.set_level(logging.INFO)
    r = await client.post(LONG, headers={"Authorization": f"Bearer {revoked}"})
    assert r.status_code == 401
    appliance.clock.advance(31 * 86400)  # past the fixture tokens' 30 days
    r = await client.post(LONG, headers=appliance.headers("dev"))
    assert r.status_code == 401
    records = [*appliance.records("auth.token.rejected"), *appliance.records("auth.token.used_after_expiry")]
    assert [r["details"] for r in records] == [{"reason": "revoked"}, {"reason": "expired"}]
    for record in records:
        target = str(record["target"])
        assert len(target) <= TARGET_LEN
        assert target.startswith("/v1/admin/users/xxx") and target.endswith(f"[{len(LONG)} chars]")
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
