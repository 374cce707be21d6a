"""The sampling surface on the OpenAI routes (fake engine): penalties, logit_bias, logprobs, n,
response_format, echo, prompt lists and token ids — each reaches the engine or the answer, and what
cannot be honoured is a 400 naming it."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from appliance.engine.constrain import Constraint
from tests.appliance.api.conftest import Appliance
from tests.appliance.api.test_openai_routes import sse_payloads

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hello"}]}
COMPLETION = {"model": "fake-model", "prompt": "def f():"}


def chunks(r: httpx.Response) -> list[Any]:
    assert r.status_code == 200, r.text
    payloads = sse_payloads(r.text)
    assert payloads[-1] == "[DONE]"
    return [json.loads(p) for p in payloads[:-1]]


async def test_penalties_and_logit_bias_reach_the_engine(
    appliance: Appliance, client: httpx.AsyncClient
) -> None:
    body = {**CHAT, "presence_penalty": 0.5, "frequency_penalty": -1.25, "logit_bias": {"7": -100, "42": 3.5}}
    r = await client.post("/v1/chat/completions", json=body, headers=appliance.headers("dev"))
    assert r.status_code == 200, r.text
    params = appliance.engine.requests[-1].params
    assert (params.presence_penalty, params.frequency_penalty) == (0.5, -1.25)
    assert dict(params.logit_bias) == {7: -100.0, 42: 3.5}


async def test_chat_logprobs_have_tokens_bytes_and_alternatives(
    appliance: Appliance, client: httpx.AsyncClient
) -> None:
    body = {**CHAT, "logprobs": True, "top_logprobs": 2, "max_tokens": 3}
    r = await client.post("/v1/chat/completions", json=body, headers=appliance.headers("dev"))
    assert r.status_code == 200, r.text
    assert appliance.engine.requests[-1].params.logprobs == 2
    content = r.json()["choices"][0]["logprobs"]["content"]
    # The fake's tokens are the first byte of each word ("w"), chosen at log(1/2).
    assert [c["token"] for c in content] == ["w", "w", "w"]
    assert content[0]["bytes"] == [ord("w")] and content[0]["logprob"] == pytest.approx(-0.6931)
    assert [t["token"] for t in content[0]["top_logprobs"]] == ["w", "x"]
    streamed = chunks(
        await client.post(
            "/v1/chat/completions", json={**body, "stream": True}, headers=appliance.headers("dev")
        )
    )
    per_chunk = [
        c["choices"][0]["logprobs"] for c in streamed if c["choices"] and c["choices"][0]["logprobs"]
    ]
    assert [e["token"] for lp in per_chunk for e in lp["content"]] == ["w", "w", "w"]
    # Without logprobs the field stays null.
    plain = await client.post("/v1/chat/completions", json=CHAT, headers=appliance.headers("dev"))
    assert plain.json()["choices"][0]["logprobs"] is None


async def test_n_choices_come_from_one_engine_request(
    appliance: Appliance, client: httpx.AsyncClient
) -> None:
    body = {**CHAT, "n": 2, "max_tokens": 2}
    before = len(appliance.engine.requests)
    r = await client.post("/v1/chat/completions", json=body, headers=appliance.headers("dev"))
    assert r.status_code == 200, r.text
    assert len(appliance.engine.requests) == before + 1 and appliance.engine.requests[-1].params.n == 2
    choices = r.json()["choices"]
    assert [c["index"] for c in choices] == [0, 1]
    assert all(c["message"]["content"] == "w0 w1 " for c in choices)
    assert r.json()["usage"]["completion_tokens"] == 4
    events = chunks(
        await client.post(
            "/v1/chat/completions",
            json={**body, "stream": True, "stream_options": {"include_usage": True}},
            headers=appliance.headers("dev"),
        )
    )
    finishes = [(c["choices"][0]["index"], c["choices"][0]["finish_reason"]) for c in events if c["choices"]]
    assert sorted(f for f in finishes if f[1]) == [(0, "length"), (1, "length")]
    with_usage = [c for c in events if c.get("usage")]
    assert len(with_usage) == 1 and with_usage[0]["usage"]["completion_tokens"] == 4


async def test_response_format_constrains_and_a_too_small_budget_is_refused(
    appliance: Appliance, client: httpx.AsyncClient
) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    body = {
        **CHAT,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "a", "schema": schema, "strict": True},
        },
    }
    r = await client.post("/v1/chat/completions", json=body, headers=appliance.headers("dev"))
    assert r.status_code == 200, r.text
    constraint = appliance.engine.requests[-1].params.constraint
    assert isinstance(constraint, Constraint) and "'a'" in constraint.description
    r = await client.post(
        "/v1/chat/completions",
        json={**CHAT, "response_format": {"type": "json_object"}},
        headers=appliance.headers("dev"),
    )
    assert r.status_code == 200 and appliance.engine.requests[-1].params.constraint is not None
    appliance.engine.shortest = 12
    r = await client.post(
        "/v1/chat/completions",
        json={**body, "max_tokens": 11, "stream": True},
        headers=appliance.headers("dev"),
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens", r.text
    assert "12 tokens" in r.json()["error"]["message"]


async def test_a_prompt_list_gives_n_choices_per_prompt_in_openai_order(
    appliance: Appliance, client: httpx.AsyncClient
) -> None:
    body = {**COMPLETION, "prompt": ["a", "bb"], "n": 2, "max_tokens": 1, "echo": True}
    before = len(appliance.engine.requests)
    r = await client.post("/v1/completions", json=body, headers=appliance.headers("dev"))
    assert r.status_code == 200, r.text
    started = appliance.engine.requests[before:]
    assert sorted(bytes(q.prompt_ids) for q in started) == [b"a", b"bb"] and all(
        q.params.n == 2 for q in started
    )
    texts = [(c["index"], c["text"]) for c in r.json()["choices"]]
    assert texts == [(0, "aw0 "), (1, "aw0 "), (2, "bbw0 "), (3, "bbw0 ")]
    assert r.json()["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    events = chunks(
        await client.post("/v1/completions", json={**body, "stream": True}, headers=appliance.headers("dev"))
    )
    by_index: dict[int, str] = {}
    for event in events:
        for choice in event["choices"]:
            by_index[choice["index"]] = by_index.get(choice["index"], "") + choice["text"]
    assert by_index == dict(texts)


async def test_token_id_prompts_are_used_as_given_and_checked(
    appliance: Appliance, client: httpx.AsyncClient
) -> None:
    r = await client.post(
        "/v1/completions", json={**COMPLETION, "prompt": [104, 105]}, headers=appliance.headers("dev")
    )
    assert r.status_code == 200, r.text
    assert appliance.engine.requests[-1].prompt_ids == [104, 105]
    r = await client.post(
        "/v1/completions",
        json={**COMPLETION, "prompt": [[104], [105, 106]], "echo": True, "max_tokens": 1},
        headers=appliance.headers("dev"),
    )
    assert [c["text"] for c in r.json()["choices"]] == ["hw0 ", "ijw0 "]
    for prompt in ([1, 259], [[1], [1000]]):
        r = await client.post(
            "/v1/completions", json={**COMPLETION, "prompt": prompt}, headers=appliance.headers("dev")
        )
        assert r.status_code == 400 and r.json()["error"]["param"] == "prompt", r.text


async def test_completion_logprobs_in_the_legacy_shape(
    appliance: Appliance, client: httpx.AsyncClient
) -> None:
    body = {**COMPLETION, "logprobs": 1, "max_tokens": 2}
    r = await client.post("/v1/completions", json=body, headers=appliance.headers("dev"))
    assert r.status_code == 200, r.text
    logprobs = r.json()["choices"][0]["logprobs"]
    assert logprobs["tokens"] == ["w", "w"] and logprobs["text_offset"] == [0, 1]
    assert logprobs["token_logprobs"] == [pytest.approx(-0.6931)] * 2
    assert logprobs["top_logprobs"] == [{"w": pytest.approx(-0.6931)}] * 2
    events = chunks(
        await client.post("/v1/completions", json={**body, "stream": True}, headers=appliance.headers("dev"))
    )
    streamed = [c["choices"][0]["logprobs"] for c in events if c["choices"] and c["choices"][0]["logprobs"]]
    assert [o for lp in streamed for o in lp["text_offset"]] == [0, 1]


@pytest.mark.parametrize(
    ("patch", "param"),
    [
        ({"best_of": 3}, "best_of"),
        ({"echo": True, "logprobs": 1}, "logprobs"),
        ({"prompt": ["a", "b"], "suffix": "x"}, "suffix"),
        ({"prompt": []}, "prompt"),
        ({"n": 9}, "n"),
    ],
)
async def test_what_cannot_be_honoured_is_refused_by_name(
    appliance: Appliance, client: httpx.AsyncClient, patch: dict[str, Any], param: str
) -> None:
    r = await client.post("/v1/completions", json={**COMPLETION, **patch}, headers=appliance.headers("dev"))
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text


async def test_best_of_equal_to_n_and_max_completion_tokens_are_accepted(
    appliance: Appliance, client: httpx.AsyncClient
) -> None:
    r = await client.post(
        "/v1/completions", json={**COMPLETION, "n": 2, "best_of": 2}, headers=appliance.headers("dev")
    )
    assert r.status_code == 200 and len(r.json()["choices"]) == 2, r.text
    r = await client.post(
        "/v1/chat/completions", json={**CHAT, "max_completion_tokens": 3}, headers=appliance.headers("dev")
    )
    assert r.status_code == 200 and appliance.engine.requests[-1].params.max_tokens == 3


async def test_response_format_is_refused_where_its_grammar_cannot_apply(
    appliance: Appliance, client: httpx.AsyncClient
) -> None:
    fmt = {"type": "json_object"}
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    for extra in ({"tools": tools, "tool_choice": "required"}, {"thinking": {"type": "enabled"}}):
        r = await client.post(
            "/v1/chat/completions",
            json={**CHAT, "response_format": fmt, **extra},
            headers=appliance.headers("dev"),
        )
        assert r.status_code == 400 and r.json()["error"]["param"] == "response_format", r.text
