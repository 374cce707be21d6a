"""The API's database paths on both backends (SQLite and PostgreSQL): sign-in, generation audited
before and after, an admin change with its audit record, and the audit routes reading it all back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from appliance.audit.verify import verify_export
from tests.appliance.api.conftest import PASSWORD, build_appliance

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_api_on_both_backends(tmp_path: Path, db_url: str) -> None:
    a = build_appliance(tmp_path, db_url)
    try:
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=a.app), base_url="http://t")
        r = await client.post("/v1/auth/login", json={"username": "dev", "password": PASSWORD})
        assert r.status_code == 200
        session = {"Authorization": f"Bearer {r.json()['token']}"}
        body = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        r = await client.post("/v1/chat/completions", json=body, headers=session)
        assert r.status_code == 200 and r.text.endswith("data: [DONE]\n\n")
        r = await client.put("/v1/admin/users/dev/role", json={"role": "auditor"}, headers=a.headers("adm"))
        assert r.status_code == 200
        # The role change applies to the very next request of the same session.
        assert (await client.post("/v1/chat/completions", json=body, headers=session)).status_code == 403
        page = (await client.get("/v1/audit/events", params={"limit": 1000}, headers=a.headers("aud"))).json()
        actions = [rec["action"] for rec in reversed(page["records"])]
        wanted = [
            "auth.login",
            "generation.requested",
            "generation.completed",
            "admin.user.role_changed",
            "authz.denied",
        ]
        assert [x for x in actions if x in wanted] == wanted
        role: Any = next(rec for rec in page["records"] if rec["action"] == "admin.user.role_changed")
        assert role["details"] == {"old": {"role": "developer"}, "new": {"role": "auditor"}}
        export = await client.get("/v1/audit/export", headers=a.headers("aud"))
        assert verify_export(export.text.splitlines(), keys=a.audit.keys).ok
    finally:
        a.close()
