"""Sign-in, administration, audit, health and metrics routes in process (fake engine, real everything else)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from appliance.api.app import set_engine
from appliance.audit.verify import verify_export
from tests.appliance.api.conftest import PASSWORD, Appliance, build_appliance

pytestmark = pytest.mark.anyio

CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- auth -----------------------------------------------------------------------------------------


async def test_login_session_generates_then_logout_ends_it(
    appliance: Appliance, client: httpx.AsyncClient
) -> None:
    r = await client.post("/v1/auth/login", json={"username": "dev", "password": PASSWORD})
    assert r.status_code == 200, r.text
    token = r.json()["token"]
    assert r.json()["token_type"] == "bearer"
    r = await client.post("/v1/chat/completions", json=CHAT, headers=bearer(token))
    assert r.status_code == 200
    assert (await client.post("/v1/auth/logout", headers=bearer(token))).status_code == 204
    r = await client.post("/v1/chat/completions", json=CHAT, headers=bearer(token))
    assert r.status_code == 401
    actions = appliance.actions()
    assert actions.index("auth.login") < actions.index("auth.logout")


async def test_failed_login_is_401_audited_and_throttled(
    appliance: Appliance, client: httpx.AsyncClient
) -> None:
    r = await client.post("/v1/auth/login", json={"username": "dev", "password": "wrong password here!"})
    assert r.status_code == 401
    failed = appliance.records("auth.login.failed")
    assert failed[-1]["actor"] == "dev" and failed[-1]["details"] == {"reason": "bad_password"}
    statuses = []
    for _ in range(12):
        r = await client.post("/v1/auth/login", json={"username": "dev", "password": "wrong password here!"})
        statuses.append(r.status_code)
        if r.status_code == 429:
            assert int(r.headers["retry-after"]) >= 1
            break
    assert statuses[-1] == 429


async def test_own_tokens_create_list_revoke(appliance: Appliance, client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/auth/tokens",
        json={"name": "laptop", "expires_in_days": 7, "scopes": ["generate"]},
        headers=appliance.headers("dev"),
    )
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["info"]["scopes"] == ["generate"]
    r = await client.post("/v1/chat/completions", json=CHAT, headers=bearer(created["token"]))
    assert r.status_code == 200
    # The scoped token cannot list models: its scopes narrow the role.
    assert (await client.get("/v1/models", headers=bearer(created["token"]))).status_code == 403
    listed = (await client.get("/v1/auth/tokens", headers=appliance.headers("dev"))).json()
    laptop = next(t for t in listed if t["name"] == "laptop")
    # Its first use was recorded: the look-up took the write path for that one bump.
    assert laptop["last_used_at"] is not None
    r = await client.delete(f"/v1/auth/tokens/{created['info']['id']}", headers=appliance.headers("dev"))
    assert r.status_code == 204
    assert (
        await client.post("/v1/chat/completions", json=CHAT, headers=bearer(created["token"]))
    ).status_code == 401


# --- admin ----------------------------------------------------------------------------------------


async def test_admin_user_lifecycle_is_audited_with_old_and_new(
    appliance: Appliance, client: httpx.AsyncClient
) -> None:
    adm = appliance.headers("adm")
    r = await client.post("/v1/admin/users", json={"username": "eve", "role": "developer"}, headers=adm)
    assert r.status_code == 201, r.text
    assert r.json()["one_time_password"] and r.json()["user"]["must_change_password"] is True
    r = await client.put("/v1/admin/users/eve/role", json={"role": "auditor"}, headers=adm)
    assert r.status_code == 200 and r.json()["role"] == "auditor"
    changed = appliance.records("admin.user.role_changed")[-1]
    assert changed["actor"] == "adm"
    assert changed["details"] == {"old": {"role": "developer"}, "new": {"role": "auditor"}}
    assert (
        await client.post("/v1/admin/users", json={"username": "eve", "role": "developer"}, headers=adm)
    ).status_code == 409
    assert (
        await client.put("/v1/admin/users/nobody/role", json={"role": "admin"}, headers=adm)
    ).status_code == 404
    assert (
        await client.put("/v1/admin/users/eve/role", json={"role": "king"}, headers=adm)
    ).status_code == 400
    names = [u["username"] for u in (await client.get("/v1/admin/users", headers=adm)).json()]
    assert names == sorted(["adm", "aud", "dev", "eve"])


async def test_admin_routes_deny_developers(appliance: Appliance, client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/admin/users", headers=appliance.headers("dev"))
    assert r.status_code == 403
    assert appliance.records("authz.denied")[-1]["details"] == {"permission": "users:manage", "method": "GET"}


async def test_policy_change_applies_to_the_next_request(
    appliance: Appliance, client: httpx.AsyncClient
) -> None:
    adm = appliance.headers("adm")
    r = await client.patch(
        "/v1/admin/teams/default/policy", json={"allowed_models": ["other-*"]}, headers=adm
    )
    assert r.status_code == 200, r.text
    assert r.json()["allowed_models"] == ["other-*"]
    r = await client.post("/v1/chat/completions", json=CHAT, headers=appliance.headers("dev"))
    assert r.status_code == 404
    assert (await client.get("/v1/models", headers=appliance.headers("dev"))).json()["data"] == []
    assert appliance.records("admin.policy.changed")[-1]["details"]["new"]["allowed_models"] == ["other-*"]  # type: ignore[index]


async def test_teams_and_tokens_admin(appliance: Appliance, client: httpx.AsyncClient) -> None:
    adm = appliance.headers("adm")
    r = await client.post(
        "/v1/admin/teams", json={"name": "ml", "policy": {"capture_mode": "sealed"}}, headers=adm
    )
    assert r.status_code == 201, r.text
    r = await client.post("/v1/admin/teams/ml/members", json={"username": "dev"}, headers=adm)
    assert r.json()["members"] == ["dev"]
    r = await client.post("/v1/admin/tokens", json={"username": "dev", "name": "ci"}, headers=adm)
    assert r.status_code == 201
    token_id = r.json()["info"]["id"]
    assert (await client.delete(f"/v1/admin/tokens/{token_id}", headers=adm)).status_code == 204
    assert (await client.delete(f"/v1/admin/tokens/{token_id}", headers=adm)).status_code == 409
    assert (await client.get("/v1/admin/models", headers=adm)).json() == []


# --- audit ----------------------------------------------------------------------------------------


async def test_audit_query_filters_and_pages(appliance: Appliance, client: httpx.AsyncClient) -> None:
    for _ in range(3):
        await client.post("/v1/chat/completions", json=CHAT, headers=appliance.headers("dev"))
    aud = appliance.headers("aud")
    r = await client.get(
        "/v1/audit/events", params={"actor": "dev", "action": "generation.", "limit": 4}, headers=aud
    )
    assert r.status_code == 200, r.text
    page = r.json()
    assert len(page["records"]) == 4 and page["next_cursor"] is not None
    assert all(rec["action"].startswith("generation.") for rec in page["records"])
    r = await client.get(
        "/v1/audit/events",
        params={"actor": "dev", "action": "generation.", "cursor": page["next_cursor"]},
        headers=aud,
    )
    rest = r.json()
    assert len(rest["records"]) == 2 and rest["next_cursor"] is None
    seqs = [rec["seq"] for rec in page["records"] + rest["records"]]
    assert seqs == sorted(seqs, reverse=True)
    r = await client.get("/v1/audit/events", params={"outcome": "denied"}, headers=aud)
    assert r.json()["records"] == []
    assert (await client.get("/v1/audit/events", headers=appliance.headers("dev"))).status_code == 403


async def test_audit_verify_and_export_reverify(appliance: Appliance, client: httpx.AsyncClient) -> None:
    await client.post("/v1/chat/completions", json=CHAT, headers=appliance.headers("dev"))
    adm = appliance.headers("adm")  # admins may verify, not read
    r = await client.get("/v1/audit/verify", headers=adm)
    assert r.status_code == 200 and r.json()["ok"] is True and r.json()["valid"] == r.json()["total"]
    aud = appliance.headers("aud")
    r = await client.get("/v1/audit/export", params={"format": "jsonl"}, headers=aud)
    assert r.status_code == 200
    lines = r.text.splitlines()
    assert verify_export(lines, keys=appliance.audit.keys).ok
    assert [json.loads(line)["action"] for line in lines][-1] == "audit.exported"
    r = await client.get("/v1/audit/export", params={"format": "cef"}, headers=aud)
    assert r.text.startswith("CEF:0|Enclave|")
    assert (await client.get("/v1/audit/export", params={"format": "xml"}, headers=aud)).status_code == 400


async def test_sealed_content_readable_by_auditor_only(tmp_path: Path, sqlite_url: str) -> None:
    a = build_appliance(tmp_path, sqlite_url, policy={"capture_mode": "sealed"})
    try:
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=a.app), base_url="http://t")
        body = {"model": "fake-model", "prompt": "secret plan", "max_tokens": 2}
        assert (await client.post("/v1/completions", json=body, headers=a.headers("dev"))).status_code == 200
        content: Any = a.records("generation.requested")[-1]["content"]
        assert content["mode"] == "sealed"
        r = await client.get(f"/v1/audit/sealed/{content['ref']}", headers=a.headers("aud"))
        assert r.status_code == 200, r.text
        assert r.json()["prompt"] == json.dumps({"prompt": "secret plan"}, sort_keys=True)
        assert (
            await client.get(f"/v1/audit/sealed/{content['ref']}", headers=a.headers("adm"))
        ).status_code == 403
        assert "audit.content.read" in a.actions()
        missing = "00000000-0000-0000-0000-000000000000"
        assert (await client.get(f"/v1/audit/sealed/{missing}", headers=a.headers("aud"))).status_code == 404
    finally:
        a.close()


# --- health and metrics ---------------------------------------------------------------------------


async def test_ready_only_with_a_model(appliance: Appliance, client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok", "checks": {}}
    assert (await client.get("/readyz")).status_code == 200
    set_engine(appliance.app, None)
    r = await client.get("/readyz")
    assert r.status_code == 503 and r.json()["checks"]["model"] == "not loaded"
    r = await client.post("/v1/chat/completions", json=CHAT, headers=appliance.headers("dev"))
    assert r.status_code == 503


async def test_not_ready_without_database(
    appliance: Appliance, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    from appliance.db.engine import UnitOfWork, make_engine

    gone = make_engine(f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}")
    appliance.app.state.enclave.read_uow = UnitOfWork(gone)
    r = await client.get("/readyz")
    assert r.status_code == 503 and r.json()["checks"]["database"].startswith("unreachable")


async def test_metrics_count_requests_tokens_and_latencies(
    appliance: Appliance, client: httpx.AsyncClient
) -> None:
    await client.post("/v1/chat/completions", json=CHAT, headers=appliance.headers("dev"))
    text = (await client.get("/metrics")).text
    assert 'enclave_http_requests_total{method="POST",route="/v1/chat/completions",status="200"} 1' in text
    assert 'enclave_tokens_total{kind="completion"} 8' in text
    assert "enclave_time_to_first_token_seconds_count 1" in text
    assert "enclave_audit_commit_seconds_count 2" in text
    assert "enclave_engine_queue_depth 0" in text
    assert 'enclave_generations_total{endpoint="chat.completions",outcome="completed"} 1' in text


def test_read_path_cannot_write(appliance: Appliance) -> None:
    from sqlalchemy import text

    from shared.errors import DatabaseError

    reads = appliance.app.state.enclave.read_uow
    assert reads is not appliance.uow
    with pytest.raises(DatabaseError, match="readonly"), reads() as session:
        session.execute(text("UPDATE users SET role = 'admin'"))


# --- a token mints only what it holds (issue #12, item 1) ------------------------------------------


async def _mint(client: httpx.AsyncClient, token: str, **body: Any) -> httpx.Response:
    return await client.post("/v1/auth/tokens", json={"name": "child", **body}, headers=bearer(token))


async def test_a_narrow_token_cannot_mint_a_wider_one(appliance: Appliance, client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/auth/tokens",
        json={"name": "narrow", "expires_in_days": 7, "scopes": ["tokens:self"]},
        headers=appliance.headers("adm"),
    )
    assert r.status_code == 201, r.text
    narrow = r.json()["token"]
    # Explicit escalation: a scope the parent lacks, even one the role holds.
    r = await _mint(client, narrow, scopes=["users:manage"])
    assert r.status_code == 403 and "users:manage" in r.json()["error"]["message"]
    # No scopes asked: the child gets the parent's, not the role's.
    r = await _mint(client, narrow)
    assert r.status_code == 201, r.text
    assert r.json()["info"]["scopes"] == ["tokens:self"]
    child = r.json()["token"]
    assert (await client.get("/v1/admin/users", headers=bearer(child))).status_code == 403
    # It cannot outlive its parent: an explicit later expiry is refused, the default is bounded.
    assert (await _mint(client, narrow, expires_in_days=30)).status_code == 403
    assert r.json()["info"]["expires_at"] <= (await client.get("/v1/auth/me", headers=bearer(narrow))).json()[
        "expires_at"
    ]
    assert appliance.records("admin.token.created")[-1]["details"]["new"]["parent_token"] is not None


async def test_revoking_a_token_revokes_what_it_minted(appliance: Appliance, client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/auth/tokens",
        json={"name": "parent", "expires_in_days": 7, "scopes": ["generate", "tokens:self"]},
        headers=appliance.headers("dev"),
    )
    parent_id, parent = r.json()["info"]["id"], r.json()["token"]
    r = await _mint(client, parent, scopes=["generate", "tokens:self"])
    child = r.json()["token"]
    r = await _mint(client, child, scopes=["generate"])
    grandchild = r.json()["token"]
    assert (await client.post("/v1/chat/completions", json=CHAT, headers=bearer(grandchild))).status_code == 200
    # The owner's session revokes the parent; the whole family stops at once.
    r = await client.delete(f"/v1/auth/tokens/{parent_id}", headers=appliance.headers("dev"))
    assert r.status_code == 204
    for token in (parent, child, grandchild):
        assert (await client.post("/v1/chat/completions", json=CHAT, headers=bearer(token))).status_code == 401
    revoked = appliance.records("admin.token.revoked")[-1]
    assert len(revoked["details"]["new"]["also_revoked"]) == 2


# --- shared addresses and proxies (issue #12, item 3) ----------------------------------------------


async def _spray(client: httpx.AsyncClient, n: int = 50, **headers: str) -> None:
    for i in range(n):
        r = await client.post(
            "/v1/auth/login", json={"username": f"nobody{i}", "password": "a wrong guess 123"}, headers=headers
        )
        assert r.status_code in (401, 429)


async def test_a_spray_from_a_shared_address_does_not_lock_out_its_regular_users(
    appliance: Appliance, client: httpx.AsyncClient
) -> None:
    login = {"username": "dev", "password": PASSWORD}
    assert (await client.post("/v1/auth/login", json=login)).status_code == 200  # dev's usual address
    await _spray(client)
    # A stranger at that address is held back; dev, who signs in from it, is not.
    stranger = await client.post("/v1/auth/login", json={"username": "aud", "password": PASSWORD})
    assert stranger.status_code == 429
    assert (await client.post("/v1/auth/login", json=login)).status_code == 200


async def test_x_forwarded_for_is_believed_only_from_a_trusted_proxy(tmp_path: Path, sqlite_url: str) -> None:
    proxied = build_appliance(tmp_path / "p", sqlite_url, trusted_proxies="127.0.0.1")
    try:
        transport = httpx.ASGITransport(app=proxied.app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            await _spray(c, **{"X-Forwarded-For": "203.0.113.9"})
            # Another client behind the same proxy is a different address: not throttled.
            r = await c.post(
                "/v1/auth/login",
                json={"username": "aud", "password": PASSWORD},
                headers={"X-Forwarded-For": "198.51.100.7"},
            )
            assert r.status_code == 200, r.text
            assert proxied.records("auth.login")[-1]["client_address"] == "198.51.100.7"
            # A hop the client forged left of the proxy's own entry is not believed.
            await c.post(
                "/v1/auth/login",
                json={"username": "dev", "password": PASSWORD},
                headers={"X-Forwarded-For": "10.6.6.6, 198.51.100.8"},
            )
            assert proxied.records("auth.login")[-1]["client_address"] == "198.51.100.8"
    finally:
        proxied.close()


async def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(
    appliance: Appliance, client: httpx.AsyncClient
) -> None:
    # No trusted proxies configured: a spoofed header cannot dodge the address limit.
    for i in range(50):
        await client.post(
            "/v1/auth/login",
            json={"username": f"nobody{i}", "password": "a wrong guess 123"},
            headers={"X-Forwarded-For": f"192.0.2.{i}"},
        )
    r = await client.post(
        "/v1/auth/login", json={"username": "aud", "password": PASSWORD}, headers={"X-Forwarded-For": "192.0.2.200"}
    )
    assert r.status_code == 429
    assert appliance.records("auth.login.failed")[-1]["client_address"] == "127.0.0.1"


# --- the password-change route is no guessing oracle (issue #12, item 5) --------------------------


async def test_password_change_is_throttled_and_audited_like_login(
    appliance: Appliance, client: httpx.AsyncClient
) -> None:
    dev = appliance.headers("dev")
    wrong = {"old_password": "not my password 1", "new_password": "not my password 1"}
    first = await client.post("/v1/auth/password", json=wrong, headers=dev)
    # A wrong old password answers the same whatever the new one is (equal to it, or weak).
    assert first.status_code == 401
    weak = await client.post("/v1/auth/password", json={**wrong, "new_password": "x"}, headers=dev)
    assert weak.status_code in (401, 422) and "must differ" not in weak.text
    statuses = []
    for _ in range(12):
        r = await client.post("/v1/auth/password", json=wrong, headers=dev)
        statuses.append(r.status_code)
        if r.status_code == 429:
            break
    assert statuses[-1] == 429
    failed = appliance.records("auth.password.failed")
    assert len(failed) >= 6 and failed[-1]["details"]["reason"] in ("throttled", "locked")
    assert failed[0]["details"]["reason"] == "bad_password"


# --- a login spray holds no write lock and bounded Argon2 work (issue #12, item 15) ---------------


def _watch_argon2(appliance: Appliance, monkeypatch: pytest.MonkeyPatch) -> tuple[list[int], list[int]]:
    """Spy (calls through) on every Argon2 computation: how many write transactions were open on
    the appliance's database at that moment, and how many computations were running at once."""
    from sqlalchemy import event

    from appliance.auth import passwords

    open_writes = [0]
    seen_writes: list[int] = []
    running, peak = [0], [0]
    lock = threading.Lock()

    def began(_conn: object) -> None:
        open_writes[0] += 1

    def ended(_conn: object) -> None:
        open_writes[0] -= 1

    event.listen(appliance.uow.engine, "begin", began)
    event.listen(appliance.uow.engine, "commit", ended)
    event.listen(appliance.uow.engine, "rollback", ended)
    real_kdf = passwords.Argon2id

    class CountedKdf:
        def __init__(self, **kwargs: Any) -> None:
            self._kdf = real_kdf(**kwargs)

        def derive(self, secret: bytes) -> bytes:
            with lock:
                seen_writes.append(open_writes[0])
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            try:
                return self._kdf.derive(secret)
            finally:
                with lock:
                    running[0] -= 1

    monkeypatch.setattr(passwords, "Argon2id", CountedKdf)
    return seen_writes, peak


async def test_login_checks_the_password_outside_the_write_transaction(
    appliance: Appliance, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen_writes, _ = _watch_argon2(appliance, monkeypatch)
    good = await client.post("/v1/auth/login", json={"username": "dev", "password": PASSWORD})
    bad = await client.post("/v1/auth/login", json={"username": "dev", "password": "not it at all 99"})
    unknown = await client.post("/v1/auth/login", json={"username": "ghost", "password": PASSWORD})
    assert (good.status_code, bad.status_code, unknown.status_code) == (200, 401, 401)
    # One Argon2 verification per attempt, none of them while the database's write lock is held
    # (on main each ran inside BEGIN IMMEDIATE: 48 sprayers meant 48 x 50 ms of held write lock).
    # (The first unknown user also makes the dummy hash once.)
    assert len(seen_writes) >= 3 and not any(seen_writes)
    assert [r["details"]["reason"] for r in appliance.records("auth.login.failed")] == ["bad_password", "unknown_user"]


async def test_a_48_way_login_spray_runs_bounded_argon2_and_every_login_answers(
    appliance: Appliance, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from appliance.auth.passwords import ARGON2_SLOTS

    _, peak = _watch_argon2(appliance, monkeypatch)

    async def attempt(i: int) -> int:
        body = {"username": "dev", "password": PASSWORD} if i % 8 == 0 else {"username": f"spray{i}", "password": "guess guess 123"}
        return (await client.post("/v1/auth/login", json=body)).status_code

    async with anyio.create_task_group() as tg:
        results: dict[int, int] = {}

        async def run(i: int) -> None:
            results[i] = await attempt(i)

        for i in range(48):
            tg.start_soon(run, i)
    assert sorted(set(results.values())) == [200, 401]  # no 500/503 "database is locked"
    assert sum(1 for s in results.values() if s == 200) == 6
    assert 1 <= peak[0] <= ARGON2_SLOTS
    # Generation's worker threads were never all taken: the spray ran on its own few.
    assert (await client.post("/v1/chat/completions", json=CHAT, headers=appliance.headers("dev"))).status_code == 200


# --- separation of duties (issue #12, item 6) -----------------------------------------------------


async def test_an_account_an_admin_creates_starts_with_a_one_time_password(
    appliance: Appliance, client: httpx.AsyncClient
) -> None:
    chosen = "admin-chosen-passphrase-4417"
    # The admin cannot choose the password: the field is refused by name, and nothing is created.
    r = await client.post(
        "/v1/admin/users",
        json={"username": "mallory", "role": "auditor", "password": chosen},
        headers=appliance.headers("adm"),
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "password", r.text
    assert appliance.records("admin.user.created") == []
    r = await client.post("/v1/admin/users", json={"username": "mallory", "role": "auditor"}, headers=appliance.headers("adm"))
    assert r.status_code == 201, r.text
    one_time = r.json()["one_time_password"]
    assert r.json()["user"]["must_change_password"] is True and one_time != chosen
    assert appliance.records("admin.user.created")[-1]["details"]["new"]["must_change_password"] is True
    assert one_time not in json.dumps(appliance.records("admin.user.created"))
    # The admin who saw it can sign in, but reads nothing before changing it (which the real user
    # then notices: their one-time password no longer works, and the change is audited).
    session = (await client.post("/v1/auth/login", json={"username": "mallory", "password": one_time})).json()["token"]
    assert (await client.get("/v1/audit/events", headers=bearer(session))).status_code == 403
    me = (await client.get("/v1/auth/me", headers=bearer(session))).json()
    assert me["must_change_password"] is True and me["permissions"] == ["password:change"]


async def test_a_login_session_mints_within_the_role_only(appliance: Appliance, client: httpx.AsyncClient) -> None:
    session = (await client.post("/v1/auth/login", json={"username": "dev", "password": PASSWORD})).json()["token"]
    # A session has no scopes of its own: the role bounds what it mints, and nothing more.
    r = await _mint(client, session, scopes=["users:manage"])
    assert r.status_code == 400 and "users:manage" in r.json()["error"]["message"]
    r = await _mint(client, session)
    assert r.status_code == 201, r.text
    assert set(r.json()["info"]["scopes"]) == {"generate", "models:read", "projects:use", "tokens:self", "password:change"}
    assert appliance.records("admin.token.created")[-1]["details"]["new"]["parent_token"] is None
