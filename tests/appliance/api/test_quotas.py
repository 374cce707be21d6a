"""Team-policy quotas: the tracker alone (time injected), then the API's 429 / 400 answers."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from appliance.api.quotas import QuotaLimits, QuotaTracker
from shared.errors import QuotaError
from tests.appliance.api.conftest import build_appliance


class Ticker:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_requests_per_minute_slides() -> None:
    clock = Ticker()
    q = QuotaTracker(clock)
    limits = QuotaLimits(requests_per_minute=2)
    for _ in range(2):
        q.admit("u", limits, prompt_tokens=1, max_output_tokens=1).finish(1)
        clock.t += 10
    with pytest.raises(QuotaError) as err:
        q.admit("u", limits, prompt_tokens=1, max_output_tokens=1)
    # The first request (t=0) leaves the window at t=60; now is t=20.
    assert err.value.retry_after == pytest.approx(40)
    clock.t = 60.5
    q.admit("u", limits, prompt_tokens=1, max_output_tokens=1).finish(0)
    # Another caller has a budget of its own.
    q.admit("v", limits, prompt_tokens=1, max_output_tokens=1).finish(0)


def test_tokens_per_minute_counts_prompt_and_completion() -> None:
    clock = Ticker()
    q = QuotaTracker(clock)
    limits = QuotaLimits(tokens_per_minute=100)
    q.admit("u", limits, prompt_tokens=30, max_output_tokens=10).finish(50)
    clock.t = 5
    with pytest.raises(QuotaError) as err:
        q.admit("u", limits, prompt_tokens=30, max_output_tokens=10)
    assert err.value.retry_after is not None and 0 < err.value.retry_after <= 60
    q.admit("u", limits, prompt_tokens=20, max_output_tokens=10).finish(0)


def test_concurrent_streams_released_on_finish() -> None:
    q = QuotaTracker(Ticker())
    limits = QuotaLimits(concurrent_streams=1)
    lease = q.admit("u", limits, prompt_tokens=1, max_output_tokens=1)
    with pytest.raises(QuotaError) as err:
        q.admit("u", limits, prompt_tokens=1, max_output_tokens=1)
    assert err.value.retry_after == 1.0
    lease.finish(3)
    lease.finish(3)  # idempotent: a double finish must not free a second slot
    assert q.active("u") == 0
    q.admit("u", limits, prompt_tokens=1, max_output_tokens=1)


def test_hard_caps_have_no_retry_after() -> None:
    q = QuotaTracker(Ticker())
    with pytest.raises(QuotaError, match="max_prompt_tokens") as err:
        q.admit("u", QuotaLimits(max_prompt_tokens=5), prompt_tokens=6, max_output_tokens=1)
    assert err.value.retry_after is None
    with pytest.raises(QuotaError, match="max_output_tokens"):
        q.admit("u", QuotaLimits(max_output_tokens=5), prompt_tokens=1, max_output_tokens=6)


CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_api_answers_429_with_retry_after_and_400_for_caps(tmp_path: Path, sqlite_url: str) -> None:
    a = build_appliance(
        tmp_path,
        sqlite_url,
        policy={"requests_per_minute": 1, "max_prompt_tokens": 100, "max_output_tokens": 50},
    )
    try:
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=a.app), base_url="http://t")
        r = await client.post("/v1/chat/completions", json=CHAT, headers=a.headers("dev"))
        assert r.status_code == 200
        r = await client.post("/v1/chat/completions", json=CHAT, headers=a.headers("dev"))
        assert r.status_code == 429
        assert r.json()["error"]["type"] == "rate_limit_error"
        assert int(r.headers["retry-after"]) == 60
        refused = a.records("generation.refused")
        assert len(refused) == 1 and refused[0]["outcome"] == "denied"
        assert "requests_per_minute" in refused[0]["details"]["reason"]  # type: ignore[index]
        a.clock.advance(61)
        big = {**CHAT, "messages": [{"role": "user", "content": "x" * 200}]}
        r = await client.post("/v1/chat/completions", json=big, headers=a.headers("dev"))
        assert r.status_code == 400 and "max_prompt_tokens" in r.json()["error"]["message"]
        r = await client.post(
            "/v1/chat/completions", json={**CHAT, "max_tokens": 51}, headers=a.headers("dev")
        )
        assert r.status_code == 400 and "max_output_tokens" in r.json()["error"]["message"]
        # Without max_tokens the policy's cap is the default, not an error.
        r = await client.post("/v1/chat/completions", json=CHAT, headers=a.headers("dev"))
        assert r.status_code == 200
        assert a.engine.requests[-1].params.max_tokens == 50
    finally:
        a.close()
