"""``GET /v1/auth/me``: who a token speaks for, as the database says now."""

from __future__ import annotations

import httpx
import pytest

from tests.appliance.api.conftest import PASSWORD, T0, Appliance

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_developer_token_sees_role_permissions_teams_and_policy(
    appliance: Appliance, client: httpx.AsyncClient
) -> None:
    r = await client.get("/v1/auth/me", headers=appliance.headers("dev"))
    assert r.status_code == 200, r.text
    me = r.json()
    assert (me["username"], me["role"], me["teams"]) == ("dev", "developer", ["default"])
    assert "generate" in me["permissions"] and "audit:read" not in me["permissions"]
    assert me["credential"] == "api_token" and me["scopes"] is not None
    assert me["expires_at"].startswith("2026-01-31T12:00:00")  # T0 + the fixture's 30 days
    assert me["policy"]["allowed_models"] == [["*"]]
    assert me["policy"]["capture_mode"] == "digest"
    assert ".env" in me["policy"]["path_exclusions"] and me["policy"]["requests_per_minute"] == 60
    assert "authz.denied" not in appliance.actions()


async def test_auditor_and_admin_each_see_their_own_role(appliance: Appliance, client: httpx.AsyncClient) -> None:
    aud = (await client.get("/v1/auth/me", headers=appliance.headers("aud"))).json()
    adm = (await client.get("/v1/auth/me", headers=appliance.headers("adm"))).json()
    assert aud["role"] == "auditor" and "audit:read" in aud["permissions"] and "users:manage" not in aud["permissions"]
    assert adm["role"] == "admin" and "users:manage" in adm["permissions"] and "audit:read" not in adm["permissions"]


async def test_scoped_token_shows_scopes_and_narrowed_permissions(
    appliance: Appliance, client: httpx.AsyncClient
) -> None:
    r = await client.post(
        "/v1/auth/tokens",
        json={"name": "ci", "expires_in_days": 7, "scopes": ["models:read"]},
        headers=appliance.headers("dev"),
    )
    assert r.status_code == 201, r.text
    me = (await client.get("/v1/auth/me", headers=bearer(r.json()["token"]))).json()
    assert me["scopes"] == ["models:read"] and me["permissions"] == ["models:read"]
    assert me["expires_at"] == r.json()["info"]["expires_at"]


async def test_session_policy_change_and_revocation_show_on_the_next_request(
    appliance: Appliance, client: httpx.AsyncClient
) -> None:
    login = (await client.post("/v1/auth/login", json={"username": "dev", "password": PASSWORD})).json()
    me = (await client.get("/v1/auth/me", headers=bearer(login["token"]))).json()
    assert me["credential"] == "session" and me["scopes"] is None
    assert me["expires_at"] == login["expires_at"]
    r = await client.patch(
        "/v1/admin/teams/default/policy",
        json={"path_exclusions": ["confidential/"], "capture_mode": "sealed"},
        headers=appliance.headers("adm"),
    )
    assert r.status_code == 200, r.text
    me = (await client.get("/v1/auth/me", headers=bearer(login["token"]))).json()
    assert me["policy"]["path_exclusions"] == ["confidential/"] and me["policy"]["capture_mode"] == "sealed"
    await client.post("/v1/auth/logout", headers=bearer(login["token"]))
    assert (await client.get("/v1/auth/me", headers=bearer(login["token"]))).status_code == 401
    assert (await client.get("/v1/auth/me")).status_code == 401


async def test_user_who_must_change_password_may_still_ask(appliance: Appliance, client: httpx.AsyncClient) -> None:
    from appliance.auth import admin as ops

    with appliance.uow() as session:
        _, one_time = ops.create_user(session, "newbie", role="developer", now=T0)
    assert one_time is not None
    login = (await client.post("/v1/auth/login", json={"username": "newbie", "password": one_time})).json()
    me = (await client.get("/v1/auth/me", headers=bearer(login["token"]))).json()
    assert me["must_change_password"] is True and me["permissions"] == ["password:change"]
