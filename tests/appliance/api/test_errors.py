"""Every refusal is an OpenAI error envelope with OpenAI's status code; no client input gives a 500."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.appliance.api.conftest import Appliance
from tests.helpers.failing_audit import DownAuditLog

pytestmark = pytest.mark.anyio

CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def envelope(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert isinstance(error["message"], str) and error["message"]
    return error


async def test_malformed_json_is_400(appliance: Appliance, client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/chat/completions",
        content=b"{not json",
        headers={**appliance.headers("dev"), "content-type": "application/json"},
    )
    assert envelope(r, 400)["code"] == "invalid_json"


@pytest.mark.parametrize(
    ("patch", "param"),
    [
        ({"n": 9}, "n"),  # above the appliance's max_n (8)
        ({"n": 200}, "n"),
        ({"temperature": 3}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
        ({"stop": [f"s{i}" for i in range(17)]}, "stop"),
        ({"frobnicate": True}, "frobnicate"),
        ({"top_logprobs": 3}, "top_logprobs"),  # without logprobs: true
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"presence_penalty": 2.5}, "presence_penalty"),
        ({"logit_bias": {"12": 101}}, "logit_bias"),
        ({"logit_bias": {"word": 1}}, "logit_bias"),
        ({"logit_bias": {"999999": 1}}, "logit_bias"),  # outside the model's vocabulary
        ({"response_format": {"type": "json_schema"}}, "response_format"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 7}}}},
         "response_format"),
        ({"stream_options": {"include_usage": True, "extra": 1}}, "stream_options.extra"),
        ({"enclave": {"context_files": [{"path": "a", "sha256": "xyz"}]}}, "enclave.context_files.0.sha256"),
    ],
)
async def test_invalid_values_are_400_naming_the_parameter(
    appliance: Appliance, client: httpx.AsyncClient, patch: dict[str, Any], param: str
) -> None:
    r = await client.post("/v1/chat/completions", json={**CHAT, **patch}, headers=appliance.headers("dev"))
    error = envelope(r, 400)
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"


async def test_unknown_model_is_404(appliance: Appliance, client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/chat/completions", json={**CHAT, "model": "gpt-9"}, headers=appliance.headers("dev")
    )
    assert envelope(r, 404)["code"] == "model_not_found"


async def test_prompt_over_context_length_is_400(appliance: Appliance, client: httpx.AsyncClient) -> None:
    appliance.engine.context_length = 16
    r = await client.post("/v1/chat/completions", json=CHAT, headers=appliance.headers("dev"))
    assert envelope(r, 400)["code"] == "context_length_exceeded"
    assert appliance.engine.requests == []


async def test_max_tokens_beyond_context_is_400(appliance: Appliance, client: httpx.AsyncClient) -> None:
    appliance.engine.context_length = 40
    r = await client.post(
        "/v1/chat/completions", json={**CHAT, "max_tokens": 30}, headers=appliance.headers("dev")
    )
    error = envelope(r, 400)
    assert error["code"] == "context_length_exceeded" and error["param"] == "max_tokens"


async def test_body_too_large_is_413(appliance: Appliance, client: httpx.AsyncClient) -> None:
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * (appliance.settings.max_body_bytes + 10)}]}
    r = await client.post("/v1/chat/completions", json=big, headers=appliance.headers("dev"))
    assert envelope(r, 413)["code"] == "request_too_large"


async def test_missing_and_bad_tokens_are_401(appliance: Appliance, client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/chat/completions", json=CHAT)
    envelope(r, 401)
    assert r.headers["www-authenticate"] == "Bearer"
    r = await client.post("/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer nope"})
    assert envelope(r, 401)["type"] == "authentication_error"
    assert "auth.token.rejected" in appliance.actions()


async def test_missing_permission_is_403_and_audited(appliance: Appliance, client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/chat/completions", json=CHAT, headers=appliance.headers("aud"))
    assert envelope(r, 403)["type"] == "permission_error"
    denied = appliance.records("authz.denied")
    assert denied and denied[-1]["actor"] == "aud" and denied[-1]["outcome"] == "denied"


async def test_unknown_route_and_method_are_enveloped(client: httpx.AsyncClient) -> None:
    envelope(await client.get("/v1/nothing"), 404)
    envelope(await client.get("/v1/chat/completions"), 405)


async def test_audit_store_down_is_503_and_no_token_is_generated(
    appliance: Appliance, client: httpx.AsyncClient
) -> None:
    state = appliance.app.state.enclave
    state.auditor._sink = DownAuditLog(appliance.audit)
    r = await client.post(
        "/v1/chat/completions", json={**CHAT, "stream": True}, headers=appliance.headers("dev")
    )
    assert envelope(r, 503)["code"] == "audit_unavailable"
    assert appliance.engine.requests == []


async def test_audit_log_closed_fails_closed(appliance: Appliance, client: httpx.AsyncClient) -> None:
    appliance.audit.close()
    r = await client.post(
        "/v1/completions", json={"model": "fake-model", "prompt": "x"}, headers=appliance.headers("dev")
    )
    envelope(r, 503)
    assert appliance.engine.requests == []


async def test_no_fim_support_is_400(appliance: Appliance, client: httpx.AsyncClient) -> None:
    appliance.engine.supports_fim = False
    body = {"model": "fake-model", "prompt": "a", "suffix": "b"}
    r = await client.post("/v1/completions", json=body, headers=appliance.headers("dev"))
    assert envelope(r, 400)["param"] == "suffix"


async def test_text_that_is_not_unicode_is_400_and_not_generated(
    appliance: Appliance, client: httpx.AsyncClient
) -> None:
    # A lone surrogate is valid JSON but not valid Unicode text.
    raw = b'{"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "enclave": {"project_id": "p\\ud800"}}'
    r = await client.post(
        "/v1/chat/completions",
        content=raw,
        headers={**appliance.headers("dev"), "content-type": "application/json"},
    )
    error = envelope(r, 400)
    assert error["type"] == "invalid_request_error" and error["param"] == "enclave.project_id"
    assert appliance.engine.requests == []
