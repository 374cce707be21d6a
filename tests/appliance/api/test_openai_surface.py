"""The request shapes real clients send (LangChain, litellm, Continue), discovery, FIM and overload,
in process against the fake engine."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from appliance.api.fim import encode_fim_within
from tests.appliance.api.conftest import Appliance
from tests.helpers.fake_engine import FIM_BEGIN, FIM_END, FIM_HOLE

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def chunks_of(text: str) -> list[dict[str, Any]]:
    frames = [f[len("data: ") :] for f in text.split("\n\n") if f]
    assert frames[-1] == "[DONE]"
    return [json.loads(f) for f in frames[:-1]]


# What langchain-openai's `OpenAI` class posts (captured from langchain-openai 1.8).
LANGCHAIN_COMPLETION = {
    "model": "fake-model",
    "prompt": ["def f():"],
    "frequency_penalty": 0,
    "logprobs": None,
    "max_tokens": 4,
    "n": 1,
    "presence_penalty": 0,
    "seed": None,
    "temperature": 0.7,
    "top_p": 1,
}
# Continue's autocomplete through its OpenAI provider: a raw DeepSeek FIM prompt and many stops.
CONTINUE_RAW_FIM = {
    "model": "fake-model",
    "prompt": "<｜fim▁begin｜>def f(<｜fim▁hole｜>):\n    pass<｜fim▁end｜>",
    "max_tokens": 3,
    "temperature": 0.01,
    "stop": ["<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>", "//", "\n\n", "```"],
    "stream": True,
}


async def test_client_default_fields_are_accepted(appliance: Appliance, client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/completions", json=LANGCHAIN_COMPLETION, headers=appliance.headers("dev"))
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["text"] == "w0 w1 w2 w3 "
    chat = {
        "model": "fake-model",
        "messages": [{"role": "developer", "content": "be brief"}, {"role": "user", "content": "hi"}],
        "user": "alice@example",
        "store": False,
        "parallel_tool_calls": False,
        "stream_options": {"include_usage": True},
        "max_completion_tokens": 2,
        "response_format": {"type": "text"},
    }
    r = await client.post("/v1/chat/completions", json=chat, headers=appliance.headers("dev"))
    assert r.status_code == 200, r.text
    assert appliance.engine.requests[-1].prompt_ids[: len(b"<system>")] == list(b"<system>")


async def test_unknown_parameter_is_refused_by_name(appliance: Appliance, client: httpx.AsyncClient) -> None:
    body = {**LANGCHAIN_COMPLETION, "best_of": 3}
    r = await client.post("/v1/completions", json=body, headers=appliance.headers("dev"))
    assert r.status_code == 400 and r.json()["error"]["param"] == "best_of"
    r = await client.post(
        "/v1/completions", json={**LANGCHAIN_COMPLETION, "typo_param": 1}, headers=appliance.headers("dev")
    )
    error = r.json()["error"]
    assert r.status_code == 400 and error["param"] == "typo_param" and "not supported" in error["message"]
    assert error["code"] == "unsupported_parameter"
    assert appliance.engine.requests == []


async def test_continue_raw_fim_template_is_encoded_as_fim(
    appliance: Appliance, client: httpx.AsyncClient
) -> None:
    r = await client.post("/v1/completions", json=CONTINUE_RAW_FIM, headers=appliance.headers("dev"))
    assert r.status_code == 200, r.text
    sent = appliance.engine.requests[-1].prompt_ids
    assert sent[0] == FIM_BEGIN and sent[-1] == FIM_END and FIM_HOLE in sent
    assert bytes(i for i in sent if i < 256) == b"def f():\n    pass"


async def test_mistral_fim_route_answers_in_chat_shape(
    appliance: Appliance, client: httpx.AsyncClient
) -> None:
    body = {"model": "fake-model", "prompt": "x = ", "suffix": "\n", "max_tokens": 2, "stream": True}
    r = await client.post("/v1/fim/completions", json=body, headers=appliance.headers("dev"))
    assert r.status_code == 200, r.text
    chunks = chunks_of(r.text)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "w0 w1 "
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    whole = await client.post(
        "/v1/fim/completions", json={**body, "stream": False}, headers=appliance.headers("dev")
    )
    assert whole.json()["choices"][0]["message"]["content"] == "w0 w1 "


async def test_fim_longer_than_the_context_is_trimmed_around_the_cursor(
    appliance: Appliance, client: httpx.AsyncClient
) -> None:
    appliance.engine.context_length = 400
    before = "".join(f"line {i}\n" for i in range(200))
    after = "".join(f"tail {i}\n" for i in range(200))
    body = {"model": "fake-model", "prompt": before, "suffix": after, "max_tokens": 4}
    r = await client.post("/v1/fim/completions", json=body, headers=appliance.headers("dev"))
    assert r.status_code == 200, r.text
    sent = appliance.engine.requests[-1].prompt_ids
    assert len(sent) <= 400 - 4
    hole = sent.index(FIM_HOLE)
    prefix, suffix = bytes(sent[1:hole]).decode(), bytes(sent[hole + 1 : -1]).decode()
    # The lines next to the cursor stay, whole; the far ends went.
    assert prefix.endswith("line 199\n") and prefix.startswith("line ") and "line 0\n" not in prefix
    assert suffix.startswith("tail 0\n") and suffix.endswith("\n") and "tail 199" not in suffix


def test_fim_trimming_keeps_both_sides() -> None:
    def encode(p: str, s: str) -> list[int]:
        return [0, *p.encode(), 1, *s.encode(), 2]

    ids = encode_fim_within(encode, "a\n" * 500, "b\n" * 500, 100)
    assert len(ids) <= 100 and ids.count(ord("a")) > 10 and ids.count(ord("b")) > 10


async def test_model_card_has_context_length_and_capabilities(
    appliance: Appliance, client: httpx.AsyncClient
) -> None:
    r = await client.get("/v1/models/fake-model", headers=appliance.headers("dev"))
    assert r.status_code == 200, r.text
    card = r.json()
    assert card["context_length"] == card["max_model_len"] == 4096
    assert card["max_input_tokens"] == 4095
    assert card["capabilities"]["fim"] is True and card["capabilities"]["json"] is True
    listed = (await client.get("/v1/models", headers=appliance.headers("dev"))).json()["data"]
    assert listed == [card]
    assert (await client.get("/v1/models/other", headers=appliance.headers("dev"))).status_code == 404


async def test_full_queue_is_429_before_the_stream_starts(
    appliance: Appliance, client: httpx.AsyncClient
) -> None:
    appliance.engine.slots = 0  # no free slot, and the fake reports nothing waiting...
    object.__setattr__(appliance.app.state.enclave, "settings", _with(appliance, max_waiting=0))
    body = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    r = await client.post("/v1/chat/completions", json=body, headers=appliance.headers("dev"))
    assert r.status_code == 429 and r.json()["error"]["code"] == "engine_busy"
    assert int(r.headers["retry-after"]) >= 1
    assert appliance.engine.requests == []


def _with(appliance: Appliance, **changes: Any) -> Any:
    import dataclasses

    return dataclasses.replace(appliance.settings, **changes)


async def test_405_and_options_name_every_method_of_the_path(
    appliance: Appliance, client: httpx.AsyncClient
) -> None:
    r = await client.request("OPTIONS", "/v1/admin/teams/default/policy", headers=appliance.headers("adm"))
    assert r.status_code == 405
    allowed = {m.strip() for m in r.headers["allow"].split(",")}
    assert {"GET", "PATCH"} <= allowed
    r = await client.request("OPTIONS", "/v1/chat/completions", headers=appliance.headers("dev"))
    assert r.status_code == 405 and r.headers["allow"] == "POST"


async def test_cors_is_off_by_default_and_per_origin_when_set(
    appliance: Appliance, client: httpx.AsyncClient, tmp_path: Any, sqlite_url: str
) -> None:
    from tests.appliance.api.conftest import build_appliance

    origin = {"Origin": "https://ide.example.com"}
    r = await client.get("/v1/models", headers={**appliance.headers("dev"), **origin})
    assert "access-control-allow-origin" not in r.headers
    other = build_appliance(
        tmp_path / "cors", sqlite_url.replace(".db", "-cors.db"), cors_origins="https://ide.example.com"
    )
    try:
        transport = httpx.ASGITransport(app=other.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            r = await c.get("/v1/models", headers={**other.headers("dev"), **origin})
            assert r.headers["access-control-allow-origin"] == "https://ide.example.com"
            r = await c.get("/v1/models", headers={**other.headers("dev"), "Origin": "https://evil.example"})
            assert "access-control-allow-origin" not in r.headers
    finally:
        other.close()
