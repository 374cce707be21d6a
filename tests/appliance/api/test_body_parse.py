"""Large generation bodies are parsed and validated in the helper process (issue 12, goal: the event
loop does not stall under a big prompt). The answers must be the same as the ordinary path's."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from appliance.api.body_parse import OFF_LOOP_BYTES, BodyParser, parse_body
from shared.schemas import CompletionRequest
from tests.appliance.api.conftest import build_appliance

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_the_helper_reports_what_fastapi_would() -> None:
    good = json.dumps({"model": "m", "prompt": "x" * OFF_LOOP_BYTES}).encode()
    value, errors = parse_body(good, CompletionRequest)
    assert errors is None and value["prompt"] == "x" * OFF_LOOP_BYTES
    _, errors = parse_body(b'{"model": "m", "prompt": "x"', CompletionRequest)
    assert errors is not None and errors[0]["type"] == "json_invalid"
    _, errors = parse_body(json.dumps({"model": "m", "prompt": "x", "colour": 1}).encode(), CompletionRequest)
    assert errors is not None and errors[0]["loc"] == ("body", "colour") and "input" not in errors[0]


async def test_large_bodies_answer_as_small_ones_do(tmp_path: Path, sqlite_url: str) -> None:
    big = 16 * 1024 * 1024
    a = build_appliance(tmp_path, sqlite_url, policy={"max_prompt_tokens": None, "tokens_per_minute": None}, max_body_bytes=big, max_prompt_bytes=big)
    parser: BodyParser = a.app.state.enclave.body_parser
    a.engine.context_length = 1 << 30
    try:
        parser.start()
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=a.app), base_url="http://t")
        headers = {**a.headers("dev"), "content-type": "application/json"}
        prompt = "def f(x):\n    return x\n" * (OFF_LOOP_BYTES // 16)
        ok = await client.post("/v1/completions", json={"model": "fake-model", "prompt": prompt, "max_tokens": 2}, headers=headers)
        assert ok.status_code == 200, ok.text
        assert len(a.engine.requests[-1].prompt_ids) >= len(prompt)  # the whole prompt arrived
        extra = await client.post("/v1/completions", json={"model": "fake-model", "prompt": prompt, "best_of": 2}, headers=headers)
        assert extra.status_code == 400 and extra.json()["error"]["param"] == "best_of", extra.text
        broken = json.dumps({"model": "fake-model", "prompt": prompt}).encode()[:-1]
        r = await client.post("/v1/completions", content=broken, headers=headers)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json", r.text
        too_long = await client.post(
            "/v1/completions", json={"model": "fake-model", "prompt": "a" * (4 * 1024 * 1024 + 1)}, headers=headers
        )
        assert too_long.status_code == 400 and too_long.json()["error"]["param"] == "prompt", too_long.text
    finally:
        a.close()
