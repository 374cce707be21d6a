"""Tool calls through the route, in process, against the fake engine scripted to write DSML: the
non-streamed message, the streamed deltas, invalid calls kept as content, and what is refused."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from appliance.engine.constrain import Constraint
from tests.appliance.api.conftest import Appliance
from tests.appliance.api.test_openai_surface import chunks_of

pytestmark = pytest.mark.anyio

D = "｜DSML｜"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
CALLS = (
    f"\n\n<{D}tool_calls>\n"
    f'<{D}invoke name="get_weather">\n<{D}parameter name="city" string="true">Paris</{D}parameter>\n</{D}invoke>\n'
    f'<{D}invoke name="get_weather">\n<{D}parameter name="city" string="true">Oslo</{D}parameter>\n</{D}invoke>\n'
    f"</{D}tool_calls>"
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def body(**extra: Any) -> dict[str, Any]:
    return {
        "model": "fake-model",
        "messages": [{"role": "user", "content": "weather?"}],
        "tools": [WEATHER],
        **extra,
    }


async def test_calls_come_back_as_tool_calls(appliance: Appliance, client: httpx.AsyncClient) -> None:
    appliance.engine.reply = "Checking." + CALLS
    r = await client.post("/v1/chat/completions", json=body(), headers=appliance.headers("dev"))
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Checking."
    calls = choice["message"]["tool_calls"]
    assert [json.loads(c["function"]["arguments"]) for c in calls] == [{"city": "Paris"}, {"city": "Oslo"}]
    assert all(c["id"].startswith("call_") and c["type"] == "function" for c in calls)
    assert len({c["id"] for c in calls}) == 2
    # The tools reached the prompt, and auto does not constrain decoding.
    assert bytes(appliance.engine.requests[-1].prompt_ids).startswith(b"<tools>get_weather")
    assert appliance.engine.requests[-1].params.constraint is None


async def test_streamed_calls_are_a_named_delta_then_argument_deltas(
    appliance: Appliance, client: httpx.AsyncClient
) -> None:
    appliance.engine.reply = CALLS
    r = await client.post("/v1/chat/completions", json=body(stream=True), headers=appliance.headers("dev"))
    assert r.status_code == 200, r.text
    chunks = chunks_of(r.text)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert not any(d.get("content") for d in deltas)
    pieces = [tc for d in deltas for tc in d.get("tool_calls") or ()]
    firsts = [p for p in pieces if "id" in p]
    assert [(p["index"], p["type"], p["function"]["name"], p["function"]["arguments"]) for p in firsts] == [
        (0, "function", "get_weather", ""),
        (1, "function", "get_weather", ""),
    ]
    for index, city in ((0, "Paris"), (1, "Oslo")):
        args = "".join(p["function"]["arguments"] for p in pieces if p["index"] == index)
        assert json.loads(args) == {"city": city}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_a_call_of_a_tool_not_offered_is_content(
    appliance: Appliance, client: httpx.AsyncClient
) -> None:
    appliance.engine.reply = CALLS.replace("get_weather", "rm_rf")
    for stream in (False, True):
        r = await client.post(
            "/v1/chat/completions", json=body(stream=stream), headers=appliance.headers("dev")
        )
        assert r.status_code == 200, r.text
        if stream:
            chunks = chunks_of(r.text)
            text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
            finish = chunks[-1]["choices"][0]["finish_reason"]
        else:
            choice = r.json()["choices"][0]
            text, finish = choice["message"]["content"], choice["finish_reason"]
            assert choice["message"].get("tool_calls") is None
        assert (text, finish) == (CALLS.replace("get_weather", "rm_rf"), "stop")


async def test_required_and_named_choices_constrain_decoding(
    appliance: Appliance, client: httpx.AsyncClient
) -> None:
    appliance.engine.reply = CALLS
    named = {"type": "function", "function": {"name": "get_weather"}}
    for choice in ("required", named):
        r = await client.post(
            "/v1/chat/completions",
            json=body(tool_choice=choice, parallel_tool_calls=False),
            headers=appliance.headers("dev"),
        )
        assert r.status_code == 200, r.text
        assert isinstance(appliance.engine.requests[-1].params.constraint, Constraint)
        # parallel_tool_calls false: one call; the second comes back as the model wrote it.
        message = r.json()["choices"][0]["message"]
        assert len(message["tool_calls"]) == 1


async def test_tool_choice_none_leaves_the_tools_out(appliance: Appliance, client: httpx.AsyncClient) -> None:
    appliance.engine.reply = CALLS
    r = await client.post(
        "/v1/chat/completions", json=body(tool_choice="none"), headers=appliance.headers("dev")
    )
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == CALLS
    assert b"<tools>" not in bytes(appliance.engine.requests[-1].prompt_ids)


async def test_a_tool_round_trip_reaches_the_prompt(appliance: Appliance, client: httpx.AsyncClient) -> None:
    messages = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "sunny"}]},
    ]
    r = await client.post(
        "/v1/chat/completions", json=body(messages=messages), headers=appliance.headers("dev")
    )
    assert r.status_code == 200, r.text
    assert b"<tool>sunny<assistant>" in bytes(appliance.engine.requests[-1].prompt_ids)


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": None, "tool_choice": "required"}, "tool_choice"),
        ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"functions": [WEATHER["function"]], "tools": None}, "functions"),
        ({"tools": [WEATHER, WEATHER]}, "tools"),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "c",
                                "type": "function",
                                "function": {"name": "get_weather", "arguments": "{oops"},
                            }
                        ],
                    }
                ]
            },
            None,
        ),
    ],
)
async def test_inconsistent_tool_requests_are_refused(
    appliance: Appliance, client: httpx.AsyncClient, extra: dict[str, Any], param: str | None
) -> None:
    r = await client.post("/v1/chat/completions", json=body(**extra), headers=appliance.headers("dev"))
    assert r.status_code == 400, r.text
    if param is not None:
        assert param in r.json()["error"]["message"] + str(r.json()["error"]["param"])
    assert appliance.engine.requests == []


async def test_a_required_call_in_thinking_mode_is_refused(
    appliance: Appliance, client: httpx.AsyncClient
) -> None:
    r = await client.post(
        "/v1/chat/completions",
        json=body(tool_choice="required", reasoning_effort="high"),
        headers=appliance.headers("dev"),
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "tool_choice", r.text
    assert appliance.engine.requests == []


async def test_thinking_mode_reasons_first_then_calls(
    appliance: Appliance, client: httpx.AsyncClient
) -> None:
    appliance.engine.reply = CALLS
    for stream in (False, True):
        r = await client.post(
            "/v1/chat/completions",
            json=body(reasoning_effort="high", stream=stream),
            headers=appliance.headers("dev"),
        )
        assert r.status_code == 200, r.text
        if stream:
            deltas = [c["choices"][0]["delta"] for c in chunks_of(r.text)]
            reasoning = "".join(d.get("reasoning_content") or "" for d in deltas)
            names = [
                tc["function"].get("name") for d in deltas for tc in d.get("tool_calls") or () if "id" in tc
            ]
        else:
            message = r.json()["choices"][0]["message"]
            reasoning, names = (
                message["reasoning_content"],
                [c["function"]["name"] for c in message["tool_calls"]],
            )
        assert reasoning == appliance.engine.reasoning
        assert names == ["get_weather", "get_weather"]
