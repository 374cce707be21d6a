"""Thinking mode end to end: the real appliance over TLS, the real engine and the demo model, asked by
the real ``openai`` SDK and by a raw DeepSeek-shaped request.

The demo team's policy caps reasoning at a few tokens (the demo model was never trained to close a
think block, so the engine closes it at the cap, and the model answers after ``</think>`` as it was
trained to) and seals captured content, so the auditor can read the reasoning back.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import httpx
import openai
import pytest

from appliance.api.runtime import open_runtime
from appliance.api.server import bind, run_in_thread
from appliance.api.tls import tls_files
from appliance.audit.events import AuditEvent
from appliance.auth import admin as ops
from appliance.commands.demo import prepare_demo
from appliance.db.base import utcnow
from appliance.db.engine import UnitOfWork
from appliance.engine.types import Delta, SamplingParams
from tests.appliance.api.test_e2e_demo import MODEL, Demo, _staff_token
from tests.helpers.dsv4_encoding import encode_messages

CAP = 6
QUESTION = "def add(a, b):"
FOLLOW_UP = "def sub(a, b):"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    data = tmp_path_factory.mktemp("think") / "data"
    settings, account = prepare_demo(data)
    runtime = open_runtime(settings, require_model=True)
    try:
        with UnitOfWork(runtime.db)() as session:
            change = ops.set_policy(
                session, ops.DEFAULT_TEAM, now=utcnow(), max_reasoning_tokens=CAP, capture_mode="sealed"
            )
            runtime.audit.append_in(session, AuditEvent(action=change.action, actor="test", target=change.target))
        auditor_token = _staff_token(runtime, "inspector", "auditor")
        tls = tls_files(settings.tls_dir)
        with run_in_thread(runtime.app, bind("127.0.0.1", 0, tls=tls, insecure_http=False)) as url:
            yield Demo(url, tls.ca_cert, account, runtime, "", auditor_token)
    finally:
        runtime.close()


@pytest.fixture
def prompts(demo: Demo, monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """The prompt ids each generation hands the real engine, in order."""
    engine = demo.runtime.engine
    assert engine is not None
    seen: list[list[int]] = []
    real = engine.stream

    def stream(prompt_ids: Sequence[int], params: SamplingParams, *, request_id: str) -> AsyncIterator[Delta]:
        seen.append(list(prompt_ids))
        return real(prompt_ids, params, request_id=request_id)

    monkeypatch.setattr(engine, "stream", stream)
    return seen


def test_openai_sdk_streams_reasoning_then_content_with_reasoning_tokens(demo: Demo) -> None:
    chunks = list(
        demo.openai().chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": QUESTION}],
            stream=True,
            max_tokens=24,
            temperature=0,
            stream_options={"include_usage": True},
            extra_body={"thinking": {"type": "enabled"}},
        )
    )
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    kinds = [
        "reasoning" if getattr(d, "reasoning_content", None) else "content" if d.content else None for d in deltas
    ]
    shown = [k for k in kinds if k]
    assert shown[0] == "reasoning" and "content" in shown
    assert shown == sorted(shown, key=lambda k: k != "reasoning"), "reasoning after content"
    assert not any(getattr(d, "reasoning_content", None) and d.content for d in deltas), "a mixed delta"
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == CAP
    assert usage.completion_tokens > CAP
    # Greedy: the whole answer is the streamed one, reasoning and content apart.
    whole = demo.openai().chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=24,
        temperature=0,
        reasoning_effort="high",
    )
    message: Any = whole.choices[0].message
    assert message.reasoning_content == "".join(getattr(d, "reasoning_content", None) or "" for d in deltas)
    assert message.content == "".join(d.content or "" for d in deltas)
    assert whole.usage is not None and whole.usage.completion_tokens_details is not None
    assert whole.usage.completion_tokens_details.reasoning_tokens == CAP


def _sse(body: str) -> list[dict[str, Any]]:
    frames = [f.removeprefix("data: ") for f in body.split("\n\n") if f]
    assert frames[-1] == "[DONE]", frames[-3:]
    return [json.loads(f) for f in frames[:-1]]


def test_second_turn_drops_the_first_reasoning_as_deepseeks_encoder_does(
    demo: Demo, prompts: list[list[int]]
) -> None:
    first = demo.openai().chat.completions.create(
        model=f"{MODEL}-reasoner", messages=[{"role": "user", "content": QUESTION}], max_tokens=16, temperature=0
    )
    reply: Any = first.choices[0].message
    assert reply.reasoning_content and reply.content is not None
    conversation = [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": reply.content, "reasoning_content": reply.reasoning_content},
        {"role": "user", "content": FOLLOW_UP},
    ]
    # The second turn as a DeepSeek client sends it: the thinking switch and effort, raw JSON.
    body = {
        "model": MODEL,
        "messages": conversation,
        "thinking": {"type": "enabled"},
        "reasoning_effort": "high",
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 16,
        "temperature": 0,
    }
    with demo.http(demo.account.token) as http:
        r = http.post("/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    tokenizer = demo.runtime.engine._engine.tokenizer  # type: ignore[union-attr]
    expected = tokenizer.encode(encode_messages(conversation, thinking_mode="thinking"))
    assert prompts[-1] == expected
    # The first turn's reasoning is not in the prompt; its answer is.
    assert reply.reasoning_content not in tokenizer.decode(prompts[-1], skip_special=False)
    chunks = _sse(r.text)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    order = [k for d in deltas[1:] for k in d if d[k]]
    assert order[0] == "reasoning_content" and "content" in order
    assert order == sorted(order, key=lambda k: k != "reasoning_content")
    assert chunks[-1]["usage"]["completion_tokens_details"] == {"reasoning_tokens": CAP}


def test_the_auditor_reads_the_sealed_reasoning_back(demo: Demo) -> None:
    whole = demo.openai().chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=12,
        temperature=0,
        extra_body={"thinking": {"type": "enabled"}},
    )
    message: Any = whole.choices[0].message
    with demo.http(demo.auditor_token) as http:
        page = http.get("/v1/audit/events", params={"action": "generation.completed", "limit": 1}).json()
        record = page["records"][0]
        content = record["content"]
        assert content["mode"] == "sealed" and "reasoning" in content["fields"]
        assert record["details"]["thinking"] == "think-high"
        opened = http.get(f"/v1/audit/sealed/{content['ref']}")
    assert opened.status_code == 200, opened.text
    assert opened.json()["reasoning"] == message.reasoning_content
    assert opened.json()["completion"] == message.content
    # A developer cannot read it.
    with demo.http(demo.account.token) as http:
        assert http.get(f"/v1/audit/sealed/{content['ref']}").status_code == 403


def test_think_max_is_refused_on_the_demo_context(demo: Demo) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        demo.openai().chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": QUESTION}], reasoning_effort="max", max_tokens=4
        )
    assert info.value.code == "context_too_small_for_think_max"
    with httpx.Client(verify=ssl.create_default_context(cafile=str(demo.ca))) as http:
        assert http.get(f"{demo.url}/healthz").status_code == 200
