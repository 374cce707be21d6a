"""AsyncEngine over the real demo bundle: concurrent streams, cancellation, the slot coming back."""

from __future__ import annotations

import asyncio
import time

import pytest

from appliance.engine import AsyncEngine, ChatMessage, LLMEngine, SamplingParams
from tests.helpers.engine_demo import Demo, build_demo_model

PARAMS = SamplingParams(temperature=0.9, top_k=50, seed=4, max_tokens=12, ignore_eos=True)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    return build_demo_model(tmp_path_factory.mktemp("async"))


def test_streams_cancellation_and_slots_on_the_demo_model(demo: Demo) -> None:
    service = AsyncEngine(LLMEngine.from_bundle(demo.bundle(), num_slots=2, max_context=128))
    prompts = [
        service.encode_chat([ChatMessage("user", "write a function")]),
        service.encode_completion("def add(a, b):"),
        service.encode_completion("x = ", suffix="\nprint(x)"),
    ]
    alone = [
        LLMEngine.from_bundle(demo.bundle(), num_slots=1, max_context=128).generate([p], PARAMS)[0]
        for p in prompts
    ]

    async def consume(i: int) -> list[int]:
        return [t async for d in service.stream(prompts[i], PARAMS, request_id=f"r{i}") for t in d.token_ids]

    async def cancelled() -> None:
        stream = service.stream(prompts[0], SamplingParams(max_tokens=1000, ignore_eos=True), request_id="c")
        await stream.__anext__()
        await stream.aclose()  # type: ignore[attr-defined]

    async def main() -> list[list[int]]:
        # Three streams on two slots, and one more that is cancelled after its first token.
        results = await asyncio.gather(consume(0), consume(1), consume(2), cancelled())
        return list(results[:3])

    try:
        assert asyncio.run(main()) == alone
        deadline = time.monotonic() + 10
        while service.stats().free_slots != 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        stats = service.stats()
        assert (stats.free_slots, stats.running, stats.waiting) == (2, 0, 0)
        assert service.supports_fim and service.model_id == "deepseek-v4-demo"
    finally:
        service.close()
