"""OIDC sign-in end to end against a real OpenID provider (npm oidc-provider on Node): the code
flow with PKCE driven browser-free, the appliance's own session at the end, and every bad ID token
(tampered, expired, wrong audience, wrong issuer) refused with a clear message and an audit record;
JWKS rotation picked up without a restart."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from appliance.auth import groups
from tests.appliance.api.conftest import T0, Appliance, build_appliance
from tests.helpers.oidc_idp import OidcIdp, ensure_oidc_provider, new_signing_key

CLIENT_ID = "enclave"
SECRET = "enclave-test-client-secret-0123456789"
ACCOUNTS = {
    "alice": {"preferred_username": "alice", "email": "alice@example.test", "groups": ["eng", "staff"]},
    "mallory": {"preferred_username": "mallory", "email": "mallory@example.test", "groups": ["contractors"]},
}


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcIdp]:
    root = ensure_oidc_provider()
    if root is None:
        pytest.skip("Node and npm are needed for the OpenID provider")
    client = {
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
        "application_type": "native",
        "redirect_uris": ["http://127.0.0.1/callback"],
        "token_endpoint_auth_method": "client_secret_basic",
    }
    provider = OidcIdp(
        root,
        tmp_path_factory.mktemp("idp"),
        clients=[client],
        accounts=ACCOUNTS,
        keys=[new_signing_key("k1")],
    )
    try:
        yield provider
    finally:
        provider.close()


class SwapIdToken(httpx.BaseTransport):
    """The network between appliance and provider: replaces the token endpoint's ID token when
    ``replace`` is set (a test's stand-in for a forged or replayed response)."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.replace: Any = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if self.replace is None or not request.url.path.endswith("/token"):
            return response
        response.read()
        body = response.json()
        body["id_token"] = self.replace(body["id_token"])
        return httpx.Response(response.status_code, json=body)


@pytest.fixture
def site(tmp_path: Path, sqlite_url: str, idp: OidcIdp) -> Iterator[tuple[Appliance, SwapIdToken]]:
    swap = SwapIdToken()
    app = build_appliance(
        tmp_path, sqlite_url, oidc_issuer=idp.issuer, oidc_client_id=CLIENT_ID, oidc_client_secret=SECRET
    )
    # The provider stamps real time; the appliance's movable clock starts at the real now.
    app.clock.offset = (dt.datetime.now(dt.UTC) - T0).total_seconds()
    from appliance.api.app import close_app, create_app

    close_app(app.app)
    app.app = create_app(
        settings=app.settings,
        uow=app.uow,
        audit_log=app.audit,
        engine=app.engine,
        clock=app.clock,
        idp_transport=swap,
    )
    with app.uow() as session:
        groups.add_mapping(session, "oidc", "eng", "default", "developer", now=T0)
    try:
        yield app, swap
    finally:
        app.close()


def _client(app: Appliance) -> httpx.Client:
    # A real HTTP client through the app (sync, via a portal) would need a server; the ASGI
    # transport is the appliance itself, while the provider is reached over real TCP.
    return httpx.Client(transport=_SyncAsgi(app), base_url="http://testserver")


class _SyncAsgi(httpx.BaseTransport):
    def __init__(self, app: Appliance) -> None:
        self.asgi = httpx.ASGITransport(app=app.app, client=("127.0.0.1", 50000))

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        import anyio

        async def run() -> httpx.Response:
            response = await self.asgi.handle_async_request(request)
            body = b"".join([chunk async for chunk in response.aiter_bytes()])  # type: ignore[attr-defined]
            return httpx.Response(response.status_code, headers=response.headers, content=body)

        return anyio.run(run)


def _sign_in(app: Appliance, idp: OidcIdp, login: str) -> httpx.Response:
    with _client(app) as api:
        started = api.post("/v1/auth/oidc/start", json={"redirect_uri": "http://127.0.0.1:53682/callback"})
        assert started.status_code == 200, started.text
        back = idp.sign_in(started.json()["authorization_url"], login)
        assert back.host == "127.0.0.1" and back.port == 53682
        params = dict(back.params)
        assert params["state"] == started.json()["state"]
        return api.post(
            "/v1/auth/oidc/callback",
            json={"state": params["state"], "code": params["code"], "iss": params.get("iss")},
        )


def test_api_sign_in_opens_an_appliance_session(site: tuple[Appliance, SwapIdToken], idp: OidcIdp) -> None:
    app, _ = site
    done = _sign_in(app, idp, "alice")
    assert done.status_code == 200, done.text
    token = done.json()["token"]
    assert done.json()["username"] == "alice"
    with _client(app) as api:
        me = api.get("/v1/auth/me", headers={"Authorization": f"Bearer {token}"}).json()
    assert me["username"] == "alice" and me["teams"] == ["default"] and me["role"] == "developer"
    record = app.records("auth.sso.login")[-1]
    assert record["actor"] == "alice"
    assert record["details"]["groups"] == ["eng", "staff"]  # type: ignore[index]
    # A second sign-in reuses the linked account.
    again = _sign_in(app, idp, "alice")
    assert again.status_code == 200 and app.records("auth.sso.login")[-1]["details"]["created"] is False  # type: ignore[index]


def test_user_in_no_mapped_group_is_refused(site: tuple[Appliance, SwapIdToken], idp: OidcIdp) -> None:
    app, _ = site
    done = _sign_in(app, idp, "mallory")
    assert done.status_code == 401
    assert "groups" in done.json()["error"]["message"]
    assert app.records("auth.sso.failed")[-1]["details"]["reason"] == "no_group"  # type: ignore[index]


def _claims(raw: str) -> dict[str, Any]:
    import base64
    import json

    payload = raw.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


@pytest.mark.parametrize(
    ("forge", "reason", "words"),
    [
        ("tampered", "bad_signature", "signature"),
        ("expired", "expired", "expired"),
        ("wrong_audience", "wrong_audience", "audience"),
        ("wrong_issuer", "wrong_issuer", "issuer"),
    ],
)
def test_bad_id_tokens_are_refused_and_audited(
    site: tuple[Appliance, SwapIdToken], idp: OidcIdp, forge: str, reason: str, words: str
) -> None:
    import base64
    import json

    app, swap = site

    def replace(raw: str) -> str:
        claims = _claims(raw)
        now = int(time.time())
        if forge == "tampered":
            head, _, sig = raw.split(".")
            claims["groups"] = ["eng", "admins"]
            body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
            return f"{head}.{body}.{sig}"
        if forge == "expired":
            claims.update(iat=now - 7200, exp=now - 3600)
        elif forge == "wrong_audience":
            claims["aud"] = "some-other-client"
        else:
            claims["iss"] = "https://idp.elsewhere.example"
        return idp.mint(claims)

    swap.replace = replace
    done = _sign_in(app, idp, "alice")
    assert done.status_code == 401, done.text
    assert words in done.json()["error"]["message"]
    record = app.records("auth.sso.failed")[-1]
    assert record["details"]["reason"] == reason  # type: ignore[index]
    assert record["outcome"] == "failure"
    assert not app.records("auth.sso.login")


def test_jwks_rotation_is_picked_up(site: tuple[Appliance, SwapIdToken], idp: OidcIdp) -> None:
    app, _ = site
    assert _sign_in(app, idp, "alice").status_code == 200
    old = idp.keys
    idp.rotate([new_signing_key("k2")])
    try:
        # The appliance still caches k1 only; a k2 token makes it refetch the key set once.
        done = _sign_in(app, idp, "alice")
        assert done.status_code == 200, done.text
    finally:
        idp.rotate(old)


def test_desktop_signs_in_through_the_browser_and_a_loopback_redirect(
    site: tuple[Appliance, SwapIdToken], idp: OidcIdp
) -> None:
    from desktop.client.sso import sign_in_with_browser

    app, _ = site

    def browser(url: str) -> None:
        # The system browser: the provider's pages, then the redirect to the client's listener.
        def run() -> None:
            back = idp.sign_in(url, "alice")
            assert back.host == "127.0.0.1"
            httpx.get(str(back), timeout=10)

        threading.Thread(target=run, daemon=True).start()

    with _client(app) as api:
        session = sign_in_with_browser(api, open_browser=browser, timeout_s=30)
        assert session.username == "alice"
        me = api.get("/v1/auth/me", headers={"Authorization": f"Bearer {session.token}"})
    assert me.status_code == 200 and me.json()["credential"] == "session"
