"""Thinking mode over /v1/chat/completions in process (fake engine, real database, auth, audit, quotas)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from appliance.api.errors import ApiError
from appliance.api.reasoning import MAX_MODE_CONTEXT, plan_thinking, served_model
from shared.schemas import ChatCompletionRequest
from tests.appliance.api.conftest import Appliance, build_appliance
from tests.helpers.fake_engine import FakeEngine

pytestmark = pytest.mark.anyio

MESSAGES = [{"role": "user", "content": "hello"}]
THINK = {"model": "fake-model", "messages": MESSAGES, "thinking": {"type": "enabled"}}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def events(body: str) -> list[Any]:
    frames = [f.removeprefix("data: ") for f in body.split("\n\n") if f]
    assert frames[-1] == "[DONE]"
    return [json.loads(f) for f in frames[:-1]]


def _plan(**fields: Any) -> tuple[bool, str | None]:
    body = ChatCompletionRequest.model_validate({"model": "m", "messages": MESSAGES, **fields})
    plan = plan_thinking(body, by_model=fields.pop("_alias", False))
    return plan.thinking, plan.effort


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, (False, None)),
        ({"thinking": {"type": "enabled"}}, (True, "high")),
        ({"thinking": {"type": "disabled"}}, (False, None)),
        ({"reasoning_effort": "none"}, (False, None)),
        ({"reasoning_effort": "minimal"}, (True, "high")),
        ({"reasoning_effort": "low"}, (True, "high")),
        ({"reasoning_effort": "medium"}, (True, "high")),
        ({"reasoning_effort": "high"}, (True, "high")),
        ({"reasoning_effort": "xhigh"}, (True, "max")),
        ({"reasoning_effort": "max"}, (True, "max")),
        ({"thinking": {"type": "enabled"}, "reasoning_effort": "max"}, (True, "max")),
        ({"thinking": {"type": "disabled"}, "reasoning_effort": "none"}, (False, None)),
    ],
)
def test_requests_map_to_v4_modes_as_deepseek_maps_them(
    fields: dict[str, Any], expected: tuple[bool, str | None]
) -> None:
    assert _plan(**fields) == expected


def test_a_reasoner_id_thinks_unless_the_request_says_otherwise() -> None:
    assert served_model("fake-model-reasoner", "fake-model") == ("fake-model", True)
    assert served_model("fake-model-thinking", "fake-model") == ("fake-model", True)
    assert served_model("fake-model", "fake-model") == ("fake-model", False)
    assert served_model("other-reasoner", "fake-model") == ("other-reasoner", False)
    body = ChatCompletionRequest.model_validate({"model": "m", "messages": MESSAGES})
    assert plan_thinking(body, by_model=True).effort == "high"
    off = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": MESSAGES, "thinking": {"type": "disabled"}}
    )
    assert not plan_thinking(off, by_model=True).thinking


@pytest.mark.parametrize(
    "fields",
    [
        {"thinking": {"type": "disabled"}, "reasoning_effort": "high"},
        {"thinking": {"type": "enabled"}, "reasoning_effort": "none"},
    ],
)
def test_contradicting_fields_are_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ApiError) as info:
        _plan(**fields)
    assert info.value.status == 400 and info.value.param == "reasoning_effort"


async def test_stream_sends_reasoning_deltas_then_content_and_counts_reasoning_tokens(
    appliance: Appliance, client: httpx.AsyncClient
) -> None:
    body = {**THINK, "stream": True, "stream_options": {"include_usage": True}}
    r = await client.post("/v1/chat/completions", json=body, headers=appliance.headers("dev"))
    assert r.status_code == 200, r.text
    chunks = events(r.text)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0] == {"role": "assistant", "content": None, "reasoning_content": ""}
    kinds = [next(iter(d)) for d in deltas[1:] if d]
    # All reasoning first, then all content; no delta carries both.
    assert kinds == ["reasoning_content"] * kinds.count("reasoning_content") + ["content"] * kinds.count(
        "content"
    )
    assert kinds.count("reasoning_content") > 0 and kinds.count("content") > 0
    assert all(len(d) == 1 for d in deltas[1:] if d)
    assert "".join(d.get("reasoning_content") or "" for d in deltas) == appliance.engine.reasoning
    assert "".join(d.get("content") or "" for d in deltas) == "w0 w1 w2 w3 w4 w5 w6 w7 "
    usage = chunks[-1]["usage"]
    reasoning_tokens = len(appliance.engine.reasoning)
    assert usage["completion_tokens_details"] == {"reasoning_tokens": reasoning_tokens}
    assert usage["completion_tokens"] == reasoning_tokens + 1 + 8
    # The engine was asked for thinking mode, and the prompt opened a think block.
    request = appliance.engine.requests[-1]
    assert request.params.thinking and bytes(request.prompt_ids).endswith(b"<think>")


async def test_whole_answer_has_reasoning_content_beside_content(
    appliance: Appliance, client: httpx.AsyncClient
) -> None:
    r = await client.post("/v1/chat/completions", json=THINK, headers=appliance.headers("dev"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "w0 w1 w2 w3 w4 w5 w6 w7 ",
        "reasoning_content": appliance.engine.reasoning,
    }
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == len(appliance.engine.reasoning)


async def test_without_thinking_nothing_changes(appliance: Appliance, client: httpx.AsyncClient) -> None:
    plain = {"model": "fake-model", "messages": MESSAGES}
    body = (await client.post("/v1/chat/completions", json=plain, headers=appliance.headers("dev"))).json()
    assert "reasoning_content" not in body["choices"][0]["message"]
    assert "completion_tokens_details" not in body["usage"]
    r = await client.post(
        "/v1/chat/completions", json={**plain, "stream": True}, headers=appliance.headers("dev")
    )
    assert all("reasoning_content" not in c["choices"][0]["delta"] for c in events(r.text) if c["choices"])
    assert not appliance.engine.requests[-1].params.thinking


async def test_reasoner_alias_serves_the_installed_model_thinking(
    appliance: Appliance, client: httpx.AsyncClient
) -> None:
    body = {"model": "fake-model-reasoner", "messages": MESSAGES}
    r = await client.post("/v1/chat/completions", json=body, headers=appliance.headers("dev"))
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "fake-model"
    assert r.json()["choices"][0]["message"]["reasoning_content"] == appliance.engine.reasoning
    unknown = {"model": "other-reasoner", "messages": MESSAGES}
    r = await client.post("/v1/chat/completions", json=unknown, headers=appliance.headers("dev"))
    assert r.status_code == 404
    card = await client.get("/v1/models/fake-model-reasoner", headers=appliance.headers("dev"))
    assert card.status_code == 200 and card.json()["id"] == "fake-model-reasoner"
    assert card.json()["context_length"] == appliance.engine.context_length
    assert (await client.get("/v1/models/other-reasoner", headers=appliance.headers("dev"))).status_code == 404


async def test_think_max_needs_a_384k_context(appliance: Appliance, client: httpx.AsyncClient) -> None:
    body = {**THINK, "reasoning_effort": "max"}
    r = await client.post("/v1/chat/completions", json=body, headers=appliance.headers("dev"))
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "context_too_small_for_think_max" and error["param"] == "reasoning_effort"
    assert str(MAX_MODE_CONTEXT) in error["message"] and "4096" in error["message"]
    assert appliance.engine.requests == []
    assert appliance.records("generation.refused")[-1]["details"]["endpoint"] == "chat.completions"


async def test_think_max_on_a_long_context_model(tmp_path: Path, sqlite_url: str) -> None:
    a = build_appliance(tmp_path, sqlite_url, engine=FakeEngine(context_length=MAX_MODE_CONTEXT))
    try:
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=a.app), base_url="http://t")
        body = {"model": "fake-model", "messages": MESSAGES, "reasoning_effort": "xhigh"}
        r = await client.post("/v1/chat/completions", json=body, headers=a.headers("dev"))
        assert r.status_code == 200, r.text
        assert bytes(a.engine.requests[-1].prompt_ids).startswith(b"<effort max>")
        assert a.records("generation.requested")[-1]["details"]["thinking"] == "think-max"
    finally:
        a.close()


async def test_a_policy_that_forbids_thinking_is_a_403_naming_it(tmp_path: Path, sqlite_url: str) -> None:
    a = build_appliance(tmp_path, sqlite_url, policy={"allow_thinking": False})
    try:
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=a.app), base_url="http://t")
        for body in (THINK, {"model": "fake-model-reasoner", "messages": MESSAGES}):
            r = await client.post("/v1/chat/completions", json=body, headers=a.headers("dev"))
            assert r.status_code == 403
            error = r.json()["error"]
            assert error["code"] == "thinking_not_allowed"
            assert "policy of team 'default'" in error["message"]
        assert a.engine.requests == []
        refused = a.records("generation.refused")[-1]
        assert refused["outcome"] == "denied" and "thinking" in refused["details"]["reason"]
        # Non-thinking requests are untouched by it.
        plain = {"model": "fake-model", "messages": MESSAGES}
        assert (
            await client.post("/v1/chat/completions", json=plain, headers=a.headers("dev"))
        ).status_code == 200
        me = (await client.get("/v1/auth/me", headers=a.headers("dev"))).json()
        assert me["policy"]["allow_thinking"] is False
    finally:
        a.close()


async def test_a_policy_caps_reasoning_tokens_and_quotas_count_them(tmp_path: Path, sqlite_url: str) -> None:
    from appliance.engine.types import ChatMessage

    n_prompt = len(
        FakeEngine().encode_chat([ChatMessage("user", "hello")], thinking=True, reasoning_effort="high")
    )
    n_completion = 3 + 1 + 8  # capped reasoning, </think>, the answer
    # Room for this request and the prompt of one more only if the reasoning were not counted.
    tpm = 2 * n_prompt + n_completion - 1
    a = build_appliance(tmp_path, sqlite_url, policy={"max_reasoning_tokens": 3, "tokens_per_minute": tpm})
    try:
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=a.app), base_url="http://t")
        r = await client.post("/v1/chat/completions", json=THINK, headers=a.headers("dev"))
        assert r.status_code == 200, r.text
        assert a.engine.requests[-1].params.max_reasoning_tokens == 3
        body = r.json()
        assert body["choices"][0]["message"]["reasoning_content"] == a.engine.reasoning[:3]
        assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == 3
        assert body["usage"]["prompt_tokens"] == n_prompt
        completed = a.records("generation.completed")[-1]["details"]
        assert completed["reasoning_tokens"] == 3 and completed["completion_tokens"] == n_completion
        r = await client.post("/v1/chat/completions", json=THINK, headers=a.headers("dev"))
        assert r.status_code == 429, r.text
        assert "tokens_per_minute" in r.json()["error"]["message"]
    finally:
        a.close()


async def test_sealed_capture_holds_the_reasoning_for_the_auditor(tmp_path: Path, sqlite_url: str) -> None:
    secret = "ghp_" + "a1B2" * 9
    engine = FakeEngine(reasoning=f"my key is {secret} and more ")
    a = build_appliance(tmp_path, sqlite_url, engine=engine, policy={"capture_mode": "sealed"})
    try:
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=a.app), base_url="http://t")
        r = await client.post("/v1/chat/completions", json=THINK, headers=a.headers("dev"))
        assert r.status_code == 200, r.text
        content: Any = a.records("generation.completed")[-1]["content"]
        assert content["mode"] == "sealed" and content["fields"] == ["completion", "reasoning"]
        opened = await client.get(f"/v1/audit/sealed/{content['ref']}", headers=a.headers("aud"))
        assert opened.status_code == 200, opened.text
        sealed = opened.json()
        assert sealed["completion"] == "w0 w1 w2 w3 w4 w5 w6 w7 "
        # Redacted before it was sealed, as the answer is.
        assert sealed["reasoning"].startswith("my key is ") and secret not in sealed["reasoning"]
    finally:
        a.close()
