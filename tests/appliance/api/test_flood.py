"""Unauthenticated floods and a filling disk (issue 12 item 2): repeated failures from a source are
counted into one record per interval, capped per source and in all; below the free-space threshold
new work is refused and /readyz, /metrics raise the alarm."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from appliance.api.app import close_app
from appliance.api.flood import source_of
from tests.appliance.api.conftest import Appliance, build_appliance

pytestmark = pytest.mark.anyio

UNKNOWN = {"Authorization": "Bearer encl_" + "A" * 43}
MALFORMED = {"Authorization": "Bearer not-a-token"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def capped(tmp_path: Path, sqlite_url: str) -> Iterator[Appliance]:
    a = build_appliance(
        tmp_path,
        sqlite_url,
        audit_unauth_interval_s=60.0,
        audit_unauth_per_source=3,
        audit_unauth_per_interval=8,
    )
    try:
        yield a
    finally:
        a.close()


def _from(a: Appliance, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=a.app, client=(address, 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def test_a_flood_from_one_source_is_a_few_records_and_a_count(capped: Appliance) -> None:
    async with _from(capped, "203.0.113.7") as client:
        for i in range(50):
            r = await client.get("/v1/models", headers=UNKNOWN if i % 2 else MALFORMED)
            assert r.status_code == 401
        assert len(capped.records("auth.token.rejected")) == 3  # the first three, one by one
        assert capped.records("auth.failures.suppressed") == []
        capped.clock.advance(61)
        assert (await client.get("/v1/models", headers=UNKNOWN)).status_code == 401
    (summary,) = capped.records("auth.failures.suppressed")
    assert summary["details"] == {
        "suppressed": 47,
        "recorded": 3,
        "interval_s": 60,
        "sources": {"203.0.113.7": 47},
        "other_sources": 0,
        "distinct_sources": 1,
        "kinds": {"auth.token.rejected:malformed": 23, "auth.token.rejected:unknown_token": 24},
    }
    assert len(capped.records("auth.token.rejected")) == 4  # the new interval's first
    metrics = (await _from(capped, "127.0.0.1").get("/metrics")).text
    assert 'enclave_audit_failures_suppressed_total{action="auth.token.rejected"} 47' in metrics


async def test_many_sources_are_capped_in_all_and_the_rest_still_counted(capped: Appliance) -> None:
    for n in range(6):
        async with _from(capped, f"198.51.100.{n}") as client:
            for _ in range(4):
                assert (await client.get("/v1/models", headers=UNKNOWN)).status_code == 401
    assert len(capped.records("auth.token.rejected")) == 8  # per_interval, not 6 sources x 3
    close_app(capped.app)  # shutdown writes the open interval's count
    (summary,) = capped.records("auth.failures.suppressed")
    assert summary["details"]["suppressed"] == 24 - 8  # type: ignore[index]
    assert summary["details"]["distinct_sources"] == 6  # type: ignore[index]


async def test_identified_failures_are_still_recorded_each(capped: Appliance) -> None:
    """A revoked or expired token names its owner: that stays one record per attempt."""
    capped.clock.advance(31 * 86400)
    async with _from(capped, "203.0.113.9") as client:
        for _ in range(6):
            assert (await client.get("/v1/models", headers=capped.headers("dev"))).status_code == 401
    assert len(capped.records("auth.token.used_after_expiry")) == 6


async def test_throttled_logins_are_counted_not_recorded_each(capped: Appliance) -> None:
    async with _from(capped, "203.0.113.20") as client:
        codes = [
            (await client.post("/v1/auth/login", json={"username": "dev", "password": "wrong"})).status_code
            for _ in range(20)
        ]
    assert codes[:5] == [401] * 5 and 429 in codes
    failed = capped.records("auth.login.failed")
    reasons = [r["details"]["reason"] for r in failed]  # type: ignore[index]
    assert reasons.count("bad_password") == codes.count(401)  # every real guess is kept
    assert sum(1 for r in reasons if r in ("throttled", "locked")) <= 3


def test_ipv6_sources_are_their_64() -> None:
    assert source_of("2001:db8:1:2::1") == source_of("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert source_of("::ffff:192.0.2.1") == "192.0.2.1"
    assert source_of("192.0.2.1") == "192.0.2.1"


async def test_a_disk_under_the_threshold_refuses_new_work_and_raises_the_alarm(
    tmp_path: Path, sqlite_url: str
) -> None:
    # The real file system, with a threshold no disk meets.
    a = build_appliance(tmp_path, sqlite_url, disk_min_free_bytes=2**62)
    try:
        async with _from(a, "127.0.0.1") as client:
            chat = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}
            r = await client.post("/v1/chat/completions", json=chat, headers=a.headers("dev"))
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "disk_low"
            assert a.engine.requests == [] and a.records("generation.requested") == []
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["disk"].startswith("low: ")
            metrics = (await client.get("/metrics")).text
            assert "\nenclave_disk_low 1\n" in metrics
    finally:
        a.close()


async def test_a_disk_with_room_is_ready(appliance: Appliance, client: httpx.AsyncClient) -> None:
    ready = await client.get("/readyz")
    assert ready.json()["checks"]["disk"] == "ok"
    assert "\nenclave_disk_low 0\n" in (await client.get("/metrics")).text
