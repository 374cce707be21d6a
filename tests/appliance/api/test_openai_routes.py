"""OpenAI-compatible routes in process (fake engine, real database, auth and audit log)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.appliance.api.conftest import Appliance

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def sse_payloads(body: str) -> list[Any]:
    frames = [f for f in body.split("\n\n") if f]
    assert all(f.startswith("data: ") for f in frames), frames
    return [f[len("data: ") :] for f in frames]


CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hello"}]}


async def test_chat_completion_returns_openai_object_with_usage(
    appliance: Appliance, client: httpx.AsyncClient
) -> None:
    r = await client.post("/v1/chat/completions", json=CHAT, headers=appliance.headers("dev"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "w0 w1 w2 w3 w4 w5 w6 w7 "}
    assert body["choices"][0]["finish_reason"] == "stop"
    prompt_tokens = len(b"<user>hello<assistant>")
    assert body["usage"] == {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": 8,
        "total_tokens": prompt_tokens + 8,
    }
    assert r.headers["x-request-id"].startswith("req_")


async def test_chat_stream_is_sse_of_chunks_ending_in_done(
    appliance: Appliance, client: httpx.AsyncClient
) -> None:
    r = await client.post(
        "/v1/chat/completions",
        json={**CHAT, "stream": True, "max_tokens": 3},
        headers=appliance.headers("dev"),
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    payloads = sse_payloads(r.text)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == "w0 w1 w2 "
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    # Without include_usage no chunk carries usage (OpenAI's rule; LangChain would count it twice).
    assert all("usage" not in c for c in chunks)


async def test_include_usage_adds_a_usage_only_chunk(appliance: Appliance, client: httpx.AsyncClient) -> None:
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    r = await client.post("/v1/chat/completions", json=body, headers=appliance.headers("dev"))
    chunks = [json.loads(p) for p in sse_payloads(r.text)[:-1]]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 8
    # Exactly once: the finish chunk does not carry it too.
    assert [c for c in chunks if c.get("usage")] == [chunks[-1]]


async def test_completion_with_suffix_encodes_fill_in_the_middle(
    appliance: Appliance, client: httpx.AsyncClient
) -> None:
    body = {"model": "fake-model", "prompt": "def f(", "suffix": "):\n    pass", "max_tokens": 2}
    r = await client.post("/v1/completions", json=body, headers=appliance.headers("dev"))
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["object"] == "text_completion"
    assert out["choices"][0]["text"] == "w0 w1 "
    assert out["choices"][0]["finish_reason"] == "length"
    sent = appliance.engine.requests[-1].prompt_ids
    assert sent[0] == 256 and sent[-1] == 258 and 257 in sent


async def test_streamed_completion_chunks(appliance: Appliance, client: httpx.AsyncClient) -> None:
    body = {
        "model": "fake-model",
        "prompt": "x",
        "suffix": "y",
        "stream": True,
        "stop": ["w2"],
        "stream_options": {"include_usage": True},
    }
    r = await client.post("/v1/completions", json=body, headers=appliance.headers("dev"))
    payloads = sse_payloads(r.text)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert {c["object"] for c in chunks} == {"text_completion"}
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == "w0 w1 "
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["total_tokens"] == chunks[-1]["usage"]["prompt_tokens"] + 3


async def test_models_lists_the_served_model(appliance: Appliance, client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/models", headers=appliance.headers("dev"))
    assert r.status_code == 200
    assert [m["id"] for m in r.json()["data"]] == ["fake-model"]


async def test_generation_is_audited_before_and_after(
    appliance: Appliance, client: httpx.AsyncClient
) -> None:
    body = {
        **CHAT,
        "user": "ide-user-7",
        "enclave": {"project_id": "proj-1", "context_files": [{"path": "src/a.py", "sha256": "ab" * 32}]},
    }
    r = await client.post("/v1/chat/completions", json=body, headers=appliance.headers("dev"))
    assert r.status_code == 200
    requested = appliance.records("generation.requested")
    completed = appliance.records("generation.completed")
    assert len(requested) == 1 and len(completed) == 1
    assert requested[0]["seq"] < completed[0]["seq"]  # type: ignore[operator]
    details: Any = completed[0]["details"]
    assert details["project_id"] == "proj-1"
    assert details["context_files"] == [{"path": "src/a.py", "sha256": "ab" * 32}]
    assert details["completion_tokens"] == 8 and details["finish_reason"] == "stop"
    assert details["model"] == "fake-model"
    assert details["end_user"] == "ide-user-7"
    assert completed[0]["actor"] == "dev"
    # The default policy captures digests: HMACs of prompt and completion, never the text.
    content: Any = completed[0]["content"]
    assert content["mode"] == "digest" and set(content["hmac"]) == {"completion"}
    assert "w0" not in json.dumps(completed[0])


async def test_engine_failure_mid_stream_is_an_error_event_and_audited_failed(
    appliance: Appliance, client: httpx.AsyncClient
) -> None:
    appliance.engine.fail_after = 2
    r = await client.post(
        "/v1/chat/completions", json={**CHAT, "stream": True}, headers=appliance.headers("dev")
    )
    payloads = sse_payloads(r.text)
    assert "[DONE]" not in payloads
    assert json.loads(payloads[-1])["error"]["code"] == "engine_error"
    failed = appliance.records("generation.failed")
    assert len(failed) == 1 and failed[0]["outcome"] == "failed"
    assert failed[0]["details"]["error"] == "fake engine failure"  # type: ignore[index]
    r = await client.post("/v1/chat/completions", json=CHAT, headers=appliance.headers("dev"))
    assert r.status_code == 503 and r.json()["error"]["code"] == "engine_unavailable"
