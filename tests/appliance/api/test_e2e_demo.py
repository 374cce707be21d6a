"""End to end on the real engine and the demo model, over TLS on loopback: one test per route family.

The data directory is what ``enclave demo`` prepares (every init step, the demo bundle built, signed,
pinned and imported, a developer account and token); the server is the real uvicorn app that
``enclave serve`` runs, and the engine runs the demo bundle's ONNX graphs on ONNX Runtime.
"""

from __future__ import annotations

import datetime as dt
import json
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from appliance.api.runtime import Runtime, open_runtime
from appliance.api.server import bind, run_in_thread
from appliance.api.tls import tls_files
from appliance.audit.events import AuditEvent
from appliance.auth import admin as ops
from appliance.auth import tokens as token_ops
from appliance.commands.demo import DemoAccount, prepare_demo
from appliance.db.engine import UnitOfWork
from appliance.engine.constrain import Constraint
from appliance.engine.types import ChatMessage

MODEL = "deepseek-v4-demo"


@dataclass
class Demo:
    url: str
    ca: Path
    account: DemoAccount
    runtime: Runtime
    admin_token: str
    auditor_token: str

    def http(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(
            base_url=self.url, verify=ssl.create_default_context(cafile=str(self.ca)), headers=headers
        )

    def openai(self) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.url}/v1",
            api_key=self.account.token,
            max_retries=0,
            http_client=openai.DefaultHttpxClient(verify=ssl.create_default_context(cafile=str(self.ca))),
        )


def _staff_token(runtime: Runtime, username: str, role: str) -> str:
    now = dt.datetime.now(dt.UTC)
    with UnitOfWork(runtime.db)() as session:
        change, _ = ops.create_user(session, username, role=role, now=now, password=ops.one_time_password())
        runtime.audit.append_in(session, AuditEvent(action=change.action, actor="test", target=change.target))
        user = ops.get_user(session, username)
        raw, _, _ = token_ops.create_token(
            session, user.id, name="e2e", expires_in=dt.timedelta(days=1), now=now
        )
    return raw


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    data = tmp_path_factory.mktemp("demo") / "data"
    settings, account = prepare_demo(data)
    runtime = open_runtime(settings, require_model=True)
    try:
        admin_token = _staff_token(runtime, "boss", "admin")
        auditor_token = _staff_token(runtime, "inspector", "auditor")
        tls = tls_files(settings.tls_dir)
        with run_in_thread(runtime.app, bind("127.0.0.1", 0, tls=tls, insecure_http=False)) as url:
            yield Demo(url, tls.ca_cert, account, runtime, admin_token, auditor_token)
    finally:
        runtime.close()


def test_openai_family_on_the_real_engine(demo: Demo) -> None:
    client = demo.openai()
    assert [m.id for m in client.models.list()] == [MODEL]
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "def add(a, b):"}],
            stream=True,
            max_tokens=6,
            temperature=0,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].object == "chat.completion.chunk"
    usage = chunks[-1].usage
    assert usage is not None and 1 <= usage.completion_tokens <= 6
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finishes) == 1 and finishes[0] in ("stop", "length")
    # Greedy decoding is deterministic: the streamed and the whole answer agree.
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    whole = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "def add(a, b):"}], max_tokens=6, temperature=0
    )
    assert whole.choices[0].message.content == streamed
    fim = client.completions.create(
        model=MODEL, prompt="def f(x):\n    return ", suffix="\n", max_tokens=4, temperature=0
    )
    assert fim.object == "text_completion" and fim.usage is not None and fim.usage.completion_tokens <= 4
    parts = list(
        client.completions.create(model=MODEL, prompt="x = ", suffix="\n", max_tokens=4, stream=True, seed=7)
    )
    assert parts[-1].choices[0].finish_reason in ("stop", "length")


def test_disconnect_frees_the_engine_slot(demo: Demo) -> None:
    stream = demo.openai().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "count"}], stream=True, max_tokens=4000
    )
    next(iter(stream))
    stream.close()
    engine = demo.runtime.engine
    assert engine is not None
    deadline = time.monotonic() + 60
    with demo.http(demo.auditor_token) as http:
        while time.monotonic() < deadline:
            found = http.get("/v1/audit/events", params={"action": "generation.cancelled"}).json()["records"]
            if found and engine.stats().running == 0:
                break
            time.sleep(0.1)
    assert found and found[0]["details"]["model"] == MODEL
    assert engine.stats().running == 0


def test_auth_family_login_and_logout(demo: Demo) -> None:
    with demo.http() as http:
        r = http.post(
            "/v1/auth/login", json={"username": demo.account.username, "password": demo.account.password}
        )
        assert r.status_code == 200, r.text
        session = r.json()["token"]
        r = http.post(
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {session}"},
            json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
        )
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 2
        assert http.post("/v1/auth/logout", headers={"Authorization": f"Bearer {session}"}).status_code == 204
        assert http.get("/v1/models", headers={"Authorization": f"Bearer {session}"}).status_code == 401


def test_admin_family(demo: Demo) -> None:
    with demo.http(demo.admin_token) as http:
        users = {u["username"]: u["role"] for u in http.get("/v1/admin/users").json()}
        assert users["demo"] == "developer"
        models = http.get("/v1/admin/models").json()
        assert isinstance(models, list)
        r = http.patch("/v1/admin/teams/default/policy", json={"max_output_tokens": 3})
        assert r.status_code == 200 and r.json()["max_output_tokens"] == 3
    with demo.http(demo.account.token) as http:
        r = http.post("/v1/completions", json={"model": MODEL, "prompt": "a", "max_tokens": 5})
        assert r.status_code == 400 and "max_output_tokens" in r.json()["error"]["message"]
    with demo.http(demo.admin_token) as http:
        assert (
            http.patch("/v1/admin/teams/default/policy", json={"max_output_tokens": 4096}).status_code == 200
        )


def test_audit_family(demo: Demo) -> None:
    with demo.http(demo.account.token) as http:
        r = http.post("/v1/completions", json={"model": MODEL, "prompt": "import os", "max_tokens": 3})
        assert r.status_code == 200
        request_id = r.headers["x-request-id"]
    with demo.http(demo.auditor_token) as http:
        page = http.get("/v1/audit/events", params={"request_id": request_id}).json()
        actions = sorted(rec["action"] for rec in page["records"])
        assert actions == ["generation.completed", "generation.requested"]
        done = next(rec for rec in page["records"] if rec["action"] == "generation.completed")
        assert done["details"]["model"] == MODEL and done["details"]["completion_tokens"] <= 3
        assert done["content"]["mode"] == "digest"
        report = http.get("/v1/audit/verify").json()
        assert report["ok"] is True and report["valid"] == report["total"]
        export = http.get("/v1/audit/export", params={"format": "jsonl"})
        assert export.status_code == 200 and request_id in export.text


def test_health_family(demo: Demo) -> None:
    with demo.http() as http:
        assert http.get("/healthz").json()["status"] == "ok"
        ready = http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"] == {
            "model": "ok",
            "database": "ok",
            "disk": "ok",
        }
        metrics = http.get("/metrics").text
        assert "enclave_tokens_total" in metrics and "enclave_engine_queue_depth" in metrics


SPECIAL = (
    "<｜User｜>",
    "<｜Assistant｜>",
    "<think>",
    "</think>",
    "<｜fim▁begin｜>",
    "<｜fim▁hole｜>",
    "<｜fim▁end｜>",
    "<｜end▁of▁sentence｜>",
    "<｜begin▁of▁sentence｜>",
)


def _no_special(text: str) -> None:
    assert not [s for s in SPECIAL if s in text], text


def _streamed_text(body: str, field: str) -> str:
    """The text an SSE body carried: ``choices[].text`` or ``choices[].delta.content``."""
    out = []
    for frame in body.split("\n\n"):
        if not frame.startswith("data: {"):
            continue
        for choice in json.loads(frame[len("data: ") :]).get("choices", []):
            part = choice.get("text") if field == "text" else (choice.get("delta") or {}).get("content")
            out.append(part or "")
    return "".join(out)


def test_langchain_openai_on_the_real_engine(demo: Demo) -> None:
    langchain_openai = pytest.importorskip("langchain_openai")
    http = httpx.Client(verify=ssl.create_default_context(cafile=str(demo.ca)))
    common = {"model": MODEL, "base_url": f"{demo.url}/v1", "api_key": demo.account.token, "max_retries": 0}
    chat = langchain_openai.ChatOpenAI(
        **common, http_client=http, max_tokens=4, temperature=0, stream_usage=True
    )
    pieces = list(chat.stream("def add(a, b):"))
    total = pieces[0]
    for piece in pieces[1:]:
        total = total + piece
    # Usage arrives once, so the summed message counts each token once.
    assert total.usage_metadata is not None and 1 <= total.usage_metadata["output_tokens"] <= 4
    _no_special(str(total.content))
    # The completions class posts `prompt` as a list and zero penalties, n=1, logprobs=null.
    llm = langchain_openai.OpenAI(**common, http_client=http, max_tokens=3, temperature=0)
    text = llm.invoke("def f():")
    assert isinstance(text, str)
    _no_special(text)


def test_litellm_on_the_real_engine(demo: Demo, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # air-gapped: no model map download
    litellm = pytest.importorskip("litellm")
    monkeypatch.setenv("SSL_CERT_FILE", str(demo.ca))
    kwargs = {
        "model": f"openai/{MODEL}",
        "api_base": f"{demo.url}/v1",
        "api_key": demo.account.token,
        "ssl_verify": str(demo.ca),
    }
    reply = litellm.completion(
        messages=[{"role": "user", "content": "hi"}], max_tokens=3, temperature=0, **kwargs
    )
    assert reply.usage.completion_tokens <= 3
    _no_special(reply.choices[0].message.content or "")
    chunks = list(
        litellm.completion(
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=3,
            stream=True,
            stream_options={"include_usage": True},
            **kwargs,
        )
    )
    # Usage arrives once: litellm's own assembly of the stream counts each token once.
    reported = [c.usage.completion_tokens for c in chunks if getattr(c, "usage", None)]
    assert reported and len(set(reported)) == 1
    built = litellm.stream_chunk_builder(chunks)
    assert built.usage.completion_tokens == reported[0] <= 3


def test_continue_request_shapes_on_the_real_engine(demo: Demo) -> None:
    stops = ["<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>", "//", "\n\n", "```"]
    with demo.http(demo.account.token) as http:
        raw = http.post(
            "/v1/completions",
            json={
                "model": MODEL,
                "prompt": "<｜fim▁begin｜>def f(x):\n    return <｜fim▁hole｜>\n<｜fim▁end｜>",
                "max_tokens": 4,
                "temperature": 0,
                "top_p": 1,
                "stop": stops,
                "stream": True,
            },
        )
        assert raw.status_code == 200, raw.text
        assert raw.text.endswith("data: [DONE]\n\n")
        _no_special(_streamed_text(raw.text, "text"))
        fim = http.post(
            "/v1/fim/completions",
            json={
                "model": MODEL,
                "prompt": "x = ",
                "suffix": "\n",
                "max_tokens": 4,
                "temperature": 0,
                "stop": stops,
                "stream": True,
            },
        )
        assert fim.status_code == 200, fim.text
        assert '"object":"chat.completion.chunk"' in fim.text and fim.text.endswith("data: [DONE]\n\n")
        _no_special(_streamed_text(fim.text, "content"))
        card = http.get(f"/v1/models/{MODEL}").json()
        assert card["context_length"] > 0 and card["capabilities"]["fim"] is True


RECORD = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "count": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["name", "count", "tags"],
    "additionalProperties": False,
}


def test_structured_output_validates_on_the_real_engine(demo: Demo) -> None:
    """The demo model's weights know nothing of JSON: the constraint is what makes it valid, with room
    to spare and with a budget that runs out (the engine closes the document in time)."""
    client = demo.openai()
    engine = demo.runtime.engine
    assert engine is not None
    fmt: Any = {"type": "json_schema", "json_schema": {"name": "record", "schema": RECORD, "strict": True}}
    shortest = engine.shortest_output(Constraint.json_schema(RECORD))
    assert shortest is not None
    for max_tokens, seed in ((200, 1), (shortest, 2), (shortest + 3, 3)):
        reply = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "a record"}],
            response_format=fmt,
            max_tokens=max_tokens,
            seed=seed,
        )
        choice = reply.choices[0]
        jsonschema.validate(json.loads(choice.message.content or ""), RECORD)
        assert choice.finish_reason == "stop"
    obj = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "x"}],
        response_format={"type": "json_object"},
        max_tokens=120,
        seed=4,
    )
    assert isinstance(json.loads(obj.choices[0].message.content or ""), dict)
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "x"}],
            response_format=fmt,
            max_tokens=shortest - 1,
        )


def test_logprobs_n_and_echo_on_the_real_engine(demo: Demo) -> None:
    client = demo.openai()
    chat = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "def add(a, b):"}],
        max_tokens=4,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
    )
    assert chat.choices[0].logprobs is not None and chat.usage is not None
    content = chat.choices[0].logprobs.content
    assert content and len(content) == chat.usage.completion_tokens
    for entry in content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
        # Greedy: the chosen token is the most likely one.
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob, abs=1e-5)
        assert entry.bytes is not None
    assert (
        "".join(bytes(e.bytes or []).decode("utf-8", "replace") for e in content)
        == chat.choices[0].message.content
    )
    two = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=5, n=2, seed=11, logprobs=True
    )
    assert [c.index for c in two.choices] == [0, 1]
    # Usage counts both choices' tokens (and the prompt once).
    assert two.usage is not None and two.usage.completion_tokens == sum(
        len(c.logprobs.content or []) for c in two.choices if c.logprobs
    )
    assert two.usage.prompt_tokens == chat_prompt_tokens(demo, "hi")
    comp = client.completions.create(
        model=MODEL, prompt="import os\n", max_tokens=3, temperature=0, logprobs=2
    )
    lp = comp.choices[0].logprobs
    assert (
        lp is not None
        and lp.tokens
        and len(lp.tokens) == len(lp.token_logprobs or []) == len(lp.text_offset or [])
    )
    assert "".join(lp.tokens) == comp.choices[0].text
    echoed = client.completions.create(
        model=MODEL, prompt="import os\n", max_tokens=3, temperature=0, echo=True
    )
    assert echoed.choices[0].text == "import os\n" + comp.choices[0].text
    # A list of prompts, and token ids, through the SDK: one choice per prompt, in order.
    ids = engine_ids(demo, "import os\n")
    listed = client.completions.create(
        model=MODEL, prompt=["x = 1\n", "import os\n"], max_tokens=3, temperature=0
    )
    assert [c.index for c in listed.choices] == [0, 1] and listed.usage is not None
    assert listed.usage.prompt_tokens == len(engine_ids(demo, "x = 1\n")) + len(ids)
    # Token ids are the same prompt as its text: greedy, the same continuation.
    by_ids = client.completions.create(model=MODEL, prompt=[ids, ids], max_tokens=3, temperature=0)
    assert [c.index for c in by_ids.choices] == [0, 1] and by_ids.choices[0].text == by_ids.choices[1].text


def chat_prompt_tokens(demo: Demo, text: str) -> int:
    engine = demo.runtime.engine
    assert engine is not None
    return len(engine.encode_chat([ChatMessage("user", text)]))


def engine_ids(demo: Demo, text: str) -> list[int]:
    engine = demo.runtime.engine
    assert engine is not None
    return engine.encode_completion(text)


def test_langchain_completions_class_with_a_list_prompt(demo: Demo) -> None:
    langchain_openai = pytest.importorskip("langchain_openai")
    http = httpx.Client(verify=ssl.create_default_context(cafile=str(demo.ca)))
    llm = langchain_openai.OpenAI(
        model=MODEL,
        base_url=f"{demo.url}/v1",
        api_key=demo.account.token,
        max_retries=0,
        http_client=http,
        max_tokens=3,
        temperature=0,
    )
    # generate() sends both prompts in one request, as a list: two audited generations, one request id.
    before = _shared_request_ids(demo)
    result = llm.generate(["def f():", "import sys"])
    assert len(result.generations) == 2 and all(len(g) == 1 for g in result.generations)
    assert len(_shared_request_ids(demo)) == len(before) + 1
    for generation in result.generations:
        assert isinstance(generation[0].text, str)
        _no_special(generation[0].text)


def _shared_request_ids(demo: Demo) -> set[str]:
    """Request ids with more than one generation.requested record (a prompt list)."""
    with demo.http(demo.auditor_token) as http:
        records = http.get(
            "/v1/audit/events", params={"action": "generation.requested", "limit": 500}
        ).json()["records"]
    ids = [r["request_id"] for r in records]
    return {i for i in ids if ids.count(i) > 1}
