"""``GET /v1/auth/methods``: what a sign-in screen may offer, asked without a token. Local password
always; the directory and single sign-on only where they are configured, each named by its host and
nothing that says how the appliance reaches it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.appliance.api.conftest import build_appliance

pytestmark = pytest.mark.anyio

LDAP = {
    "ldap_url": "ldaps://ldap.example.internal:636",
    "ldap_bind_dn": "cn=enclave,ou=services,dc=example,dc=internal",
    "ldap_bind_password": "service-bind-secret-2026",
    "ldap_user_base": "ou=people,dc=example,dc=internal",
}
SSO = {
    "oidc_issuer": "https://idp.example.internal/realms/staff",
    "oidc_client_id": "enclave-appliance-client",
    "oidc_client_secret": "oidc-client-secret-2026",
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _methods(tmp_path: Path, sqlite_url: str, **settings: object) -> httpx.Response:
    app = build_appliance(tmp_path, sqlite_url, **settings)
    transport = httpx.ASGITransport(app=app.app, client=("127.0.0.1", 50000))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.get("/v1/auth/methods")
    finally:
        app.close()


@pytest.fixture
async def plain(tmp_path: Path, sqlite_url: str) -> AsyncIterator[httpx.Response]:
    yield await _methods(tmp_path, sqlite_url)


async def test_local_password_only_when_nothing_else_is_configured(plain: httpx.Response) -> None:
    assert plain.status_code == 200
    assert plain.json() == {
        "methods": [{"kind": "password", "display_name": "Enclave account", "login_path": "/v1/auth/login"}]
    }


async def test_directory_and_sso_are_offered_by_host_with_nothing_secret(
    tmp_path: Path, sqlite_url: str
) -> None:
    done = await _methods(tmp_path, sqlite_url, **LDAP, **SSO)
    assert done.status_code == 200
    methods = {m["kind"]: m for m in done.json()["methods"]}
    assert list(methods) == ["password", "ldap", "sso"]
    assert methods["ldap"] == {
        "kind": "ldap",
        "display_name": "Directory (ldap.example.internal)",
        "login_path": "/v1/auth/ldap/login",
    }
    assert methods["sso"]["display_name"] == "Single sign-on (idp.example.internal)"
    assert methods["sso"]["login_path"] == "/v1/auth/oidc/start"
    for value in (*LDAP.values(), *SSO.values()):
        if "://" not in value:
            assert value not in done.text


async def test_ldap_alone(tmp_path: Path, sqlite_url: str) -> None:
    done = await _methods(tmp_path, sqlite_url, **LDAP)
    assert [m["kind"] for m in done.json()["methods"]] == ["password", "ldap"]


async def test_in_the_openapi_document(tmp_path: Path, sqlite_url: str) -> None:
    app = build_appliance(tmp_path, sqlite_url)
    transport = httpx.ASGITransport(app=app.app, client=("127.0.0.1", 50000))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            document = (await client.get("/openapi.json")).json()
    finally:
        app.close()
    get = document["paths"]["/v1/auth/methods"]["get"]
    assert get["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/AuthMethods"
    }
    assert "AuthMethod" in document["components"]["schemas"]
