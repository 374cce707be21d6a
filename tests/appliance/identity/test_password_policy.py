"""password_login = "break_glass": a password signs in only the named local admin; refusals audited."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.appliance.api.conftest import PASSWORD, build_appliance

pytestmark = pytest.mark.anyio


async def test_only_the_break_glass_admin_may_use_a_password(tmp_path: Path, sqlite_url: str) -> None:
    app = build_appliance(tmp_path, sqlite_url, password_login="break_glass", break_glass_admin="adm")
    try:
        transport = httpx.ASGITransport(app=app.app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            refused = await client.post("/v1/auth/login", json={"username": "dev", "password": PASSWORD})
            assert refused.status_code == 401
            assert "single sign-on" in refused.json()["error"]["message"]
            allowed = await client.post("/v1/auth/login", json={"username": "adm", "password": PASSWORD})
            assert allowed.status_code == 200
        failed = app.records("auth.login.failed")
        assert failed[-1]["details"] == {"reason": "password_login_off"}
    finally:
        app.close()
