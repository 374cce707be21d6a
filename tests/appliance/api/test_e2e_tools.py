"""Tool calls end to end: the openai SDK, langchain-openai and litellm against the real appliance
(real engine, demo model). The demo model's weights know nothing of tools, so the calls that must
happen (required / named) are the grammar's doing — and must still be valid calls."""

from __future__ import annotations

import json
import ssl
from typing import Any

import httpx
import jsonschema
import pytest

from tests.appliance.api.test_e2e_demo import MODEL, Demo, demo  # noqa: F401  (the module's appliance)

pytestmark = pytest.mark.slow

PARAMS = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 16},
        "unit": {"enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "unit"],
}
WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Weather forecast for a city", "parameters": PARAMS},
}
CLOCK: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "now",
        "description": "The time",
        "parameters": {"type": "object", "properties": {}},
    },
}
ASK = [{"role": "user", "content": "What's the weather in Paris for 3 days?"}]
SPECIAL = ("<｜", "<think>", "</think>")


def _valid(name: str, arguments: str) -> dict[str, Any]:
    args = json.loads(arguments)
    jsonschema.validate(args, PARAMS if name == "get_weather" else {"type": "object"})
    return args


def test_openai_tool_call_round_trip(demo: Demo) -> None:  # noqa: F811
    client = demo.openai()
    first = client.chat.completions.create(
        model=MODEL, messages=ASK, tools=[WEATHER, CLOCK], tool_choice="required", max_tokens=300, seed=1
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    calls = choice.message.tool_calls or []
    assert calls and all(c.id.startswith("call_") and c.type == "function" for c in calls)
    for call in calls:
        assert call.function.name in ("get_weather", "now")
        _valid(call.function.name, call.function.arguments)
    # The results go back as tool messages; tool_choice none answers in text.
    history = [*ASK, choice.message.model_dump(exclude_none=True)]
    history += [{"role": "tool", "tool_call_id": c.id, "content": "sunny, 21 C"} for c in calls]
    second = client.chat.completions.create(
        model=MODEL, messages=history, tools=[WEATHER, CLOCK], tool_choice="none", max_tokens=8, seed=1
    )
    answer = second.choices[0]
    assert answer.message.tool_calls is None and isinstance(answer.message.content, str)
    assert answer.finish_reason in ("stop", "length")
    # The call and its result are in the prompt: it is longer than the question alone.
    alone = client.chat.completions.create(
        model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="none", max_tokens=1
    )
    assert second.usage and alone.usage and second.usage.prompt_tokens > alone.usage.prompt_tokens + 20
    assert not any(s in (answer.message.content or "") for s in SPECIAL)


def test_openai_streamed_named_call_assembled_by_the_sdk(demo: Demo) -> None:  # noqa: F811
    client = demo.openai()
    named = {"type": "function", "function": {"name": "get_weather"}}
    kwargs: dict[str, Any] = {
        "model": MODEL,
        "messages": ASK,
        "tools": [WEATHER, CLOCK],
        "tool_choice": named,
        "parallel_tool_calls": False,
        "max_tokens": 300,
        "seed": 2,
    }
    chunks = list(client.chat.completions.create(stream=True, **kwargs))
    pieces = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or ()]
    assert pieces[0].id and pieces[0].function and pieces[0].function.name == "get_weather"
    assert all(p.id is None and p.index == 0 for p in pieces[1:])
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    with client.chat.completions.stream(**kwargs) as stream:
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_weather"]
    args = _valid("get_weather", calls[0].function.arguments)
    assert {"city", "unit"} <= set(args)


def test_openai_auto_and_none(demo: Demo) -> None:  # noqa: F811
    client = demo.openai()
    # auto: whatever the demo model writes is either content or a well-formed call, never a 5xx.
    auto = client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER], max_tokens=40, seed=3)
    for call in auto.choices[0].message.tool_calls or ():
        _valid(call.function.name, call.function.arguments)
    none = client.chat.completions.create(
        model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="none", max_tokens=40, seed=3
    )
    assert none.choices[0].message.tool_calls is None
    assert none.choices[0].finish_reason in ("stop", "length")


def test_langchain_bind_tools_invoke(demo: Demo) -> None:  # noqa: F811
    langchain_openai = pytest.importorskip("langchain_openai")
    http = httpx.Client(verify=ssl.create_default_context(cafile=str(demo.ca)))
    chat = langchain_openai.ChatOpenAI(
        model=MODEL,
        base_url=f"{demo.url}/v1",
        api_key=demo.account.token,
        max_retries=0,
        http_client=http,
        max_tokens=300,
        seed=4,
    )
    reply = chat.bind_tools([WEATHER], tool_choice="get_weather").invoke("Weather in Paris?")
    assert [c["name"] for c in reply.tool_calls] == ["get_weather"]
    jsonschema.validate(reply.tool_calls[0]["args"], PARAMS)
    assert reply.tool_calls[0]["id"].startswith("call_")


def test_litellm_with_tools(demo: Demo, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # air-gapped: no model map download
    litellm = pytest.importorskip("litellm")
    monkeypatch.setenv("SSL_CERT_FILE", str(demo.ca))
    reply = litellm.completion(
        model=f"openai/{MODEL}",
        api_base=f"{demo.url}/v1",
        api_key=demo.account.token,
        ssl_verify=str(demo.ca),
        messages=ASK,
        tools=[WEATHER],
        tool_choice="required",
        max_tokens=300,
        seed=5,
    )
    calls = reply.choices[0].message.tool_calls
    assert calls and calls[0].function.name == "get_weather"
    _valid("get_weather", calls[0].function.arguments)
    assert reply.choices[0].finish_reason == "tool_calls"
