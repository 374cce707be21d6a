"""Prompt text on its way to the tokenizer (issue 12, items 4 and 10): not Unicode -> 400, over the
byte bound -> 400 audited before any tokenizing, and tokenizing never on the event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from appliance.engine.types import ChatMessage
from tests.appliance.api.conftest import Appliance, build_appliance
from tests.helpers.fake_engine import FakeEngine

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def small(tmp_path: Path, sqlite_url: str) -> Iterator[Appliance]:
    a = build_appliance(tmp_path, sqlite_url, engine=FakeEngine(context_length=64), max_prompt_bytes=1000)
    try:
        yield a
    finally:
        a.close()


def _client(a: Appliance) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=a.app, client=("127.0.0.1", 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


# JSON allows the escape; the text it decodes to is not Unicode. Sent as raw bytes so the client
# library cannot refuse to encode it first.
LONE_SURROGATE_CHAT = b'{"model": "fake-model", "messages": [{"role": "user", "content": "a\\ud800b"}]}'
LONE_SURROGATE_COMPLETION = b'{"model": "fake-model", "prompt": "a\\udfffb"}'


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/chat/completions", LONE_SURROGATE_CHAT, "messages[0].content"),
        ("/v1/completions", LONE_SURROGATE_COMPLETION, "prompt"),
    ],
)
async def test_lone_surrogate_is_400_naming_the_field(
    appliance: Appliance, client: httpx.AsyncClient, path: str, body: bytes, param: str
) -> None:
    headers = {**appliance.headers("dev"), "content-type": "application/json"}
    r = await client.post(path, content=body, headers=headers)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param
    assert "unicode" in error["message"].lower()
    assert appliance.engine.requests == []


async def test_prompt_over_the_byte_bound_is_refused_audited_and_never_tokenized(small: Appliance) -> None:
    calls: list[int] = []
    real = small.engine.encode_completion

    def spy(prompt: str, suffix: str | None = None) -> list[int]:
        calls.append(len(prompt))
        return real(prompt, suffix)

    small.engine.encode_completion = spy  # type: ignore[method-assign]
    async with _client(small) as client:
        r = await client.post(
            "/v1/completions",
            json={"model": "fake-model", "prompt": "é" * 501},  # 1002 bytes, 501 characters
            headers=small.headers("dev"),
        )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "prompt_too_large"
    assert calls == []
    refused = small.records("generation.refused")
    assert len(refused) == 1
    assert refused[0]["actor"] == "dev"
    assert refused[0]["details"] == {
        "endpoint": "completions",
        "reason": "prompt_too_large",
        "prompt_bytes": 1002,
    }


async def test_prompt_over_the_context_is_refused_and_audited(small: Appliance) -> None:
    async with _client(small) as client:
        r = await client.post(
            "/v1/completions", json={"model": "fake-model", "prompt": "x" * 100}, headers=small.headers("dev")
        )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "context_length_exceeded"
    refused = small.records("generation.refused")
    assert [r["details"]["prompt_tokens"] for r in refused] == [100]  # type: ignore[index]


async def test_tokenizing_runs_off_the_event_loop(appliance: Appliance, client: httpx.AsyncClient) -> None:
    """While a prompt is being tokenized, the loop answers /healthz: the encode call waits for the
    health check to come back, which it could never do if it held the loop."""
    healthy = threading.Event()
    order: list[str] = []
    real = appliance.engine.encode_chat

    def slow_encode(messages: Sequence[ChatMessage], **options: Any) -> list[int]:
        order.append("encode started")
        order.append("healthz seen" if healthy.wait(timeout=10) else "healthz blocked")
        return real(messages, **options)

    appliance.engine.encode_chat = slow_encode  # type: ignore[method-assign]
    chat = {"model": "fake-model", "messages": [{"role": "user", "content": "hello"}]}
    generation = asyncio.create_task(
        client.post("/v1/chat/completions", json=chat, headers=appliance.headers("dev"))
    )
    while not order and not generation.done():  # a failed request must fail the test, not hang it
        await asyncio.sleep(0.01)
    health = await client.get("/healthz")
    assert health.status_code == 200
    healthy.set()
    r = await generation
    assert r.status_code == 200, r.text
    assert order == ["encode started", "healthz seen"]
