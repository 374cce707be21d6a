"""``n`` choices of one prompt: one prefill, the cache copied into the other choices' slots, each
choice sampled on its own; and the fork on the real runner (ONNX Runtime, demo model)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from appliance.engine.engine import AsyncEngine, LLMEngine
from appliance.engine.runner import OrtRunner
from appliance.engine.tokenizer import Tokenizer
from appliance.engine.types import SamplingParams
from tests.helpers.engine_demo import Demo, build_demo_model
from tests.helpers.engine_fake_runner import FakeRunner
from tests.helpers.engine_tokenizer import build_tokenizer

PROMPT = [5, 6, 7, 8]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return build_tokenizer()


def run(engine: LLMEngine, params: SamplingParams, rid: str = "r") -> dict[int, list[int]]:
    engine.add_request(rid, PROMPT, params)
    out: dict[int, list[int]] = {}
    while engine.has_work:
        for step in engine.step():
            assert step.request_id == rid
            out.setdefault(step.delta.index, []).extend(step.delta.token_ids)
    return out


def test_n_choices_share_one_prefill_and_sample_apart(tok: Tokenizer) -> None:
    runner = FakeRunner(vocab_size=tok.vocab_size, num_slots=4, max_context=64)
    engine = LLMEngine(runner, tok)
    out = run(engine, SamplingParams(temperature=1.0, seed=3, max_tokens=6, ignore_eos=True, n=3))
    prefills = [c for c in runner.calls if c[0] == "prefill"]
    assert prefills == [("prefill", ("r",))]
    assert [c for c in runner.calls if c[0] == "fork"] == [("fork", ("0", "1")), ("fork", ("0", "2"))]
    assert sorted(out) == [0, 1, 2] and all(len(ids) == 6 for ids in out.values())
    assert len({tuple(ids) for ids in out.values()}) == 3  # their own generators
    # Seeded: the same n choices again; and choice 0 is what n=1 gives.
    again = run(engine, SamplingParams(temperature=1.0, seed=3, max_tokens=6, ignore_eos=True, n=3), "r")
    assert again == out
    single = run(engine, SamplingParams(temperature=1.0, seed=3, max_tokens=6, ignore_eos=True), "r")
    assert single[0] == out[0]
    assert engine.scheduler.slots.num_free == 4


def test_choices_without_a_free_slot_prefill_themselves_later(tok: Tokenizer) -> None:
    runner = FakeRunner(vocab_size=tok.vocab_size, num_slots=2, max_context=64)
    engine = LLMEngine(runner, tok)
    out = run(engine, SamplingParams(temperature=0.0, max_tokens=4, ignore_eos=True, n=3))
    assert [c[0] for c in runner.calls].count("fork") == 1
    assert ("prefill", ("r#2",)) in runner.calls
    # Greedy: every choice, forked or prefilled, is the same continuation.
    assert out[0] == out[1] == out[2]


def test_abort_cancels_every_choice(tok: Tokenizer) -> None:
    engine = LLMEngine(FakeRunner(vocab_size=tok.vocab_size, num_slots=4, max_context=64), tok)
    engine.add_request("r", PROMPT, SamplingParams(max_tokens=20, ignore_eos=True, n=3))
    engine.step()
    assert engine.abort("r") and not engine.has_work
    assert engine.scheduler.slots.num_free == 4 and not engine.abort("r")


def test_async_stream_ends_after_the_last_choice(tok: Tokenizer) -> None:
    engine = AsyncEngine(LLMEngine(FakeRunner(vocab_size=tok.vocab_size, num_slots=4, max_context=64), tok))

    async def consume() -> dict[int, int]:
        finals: dict[int, int] = {}
        params = SamplingParams(temperature=1.0, seed=1, max_tokens=5, ignore_eos=True, n=2)
        async for delta in engine.stream(PROMPT, params, request_id="a"):
            if delta.finish_reason is not None:
                finals[delta.index] = delta.completion_tokens
        return finals

    try:
        assert asyncio.run(consume()) == {0: 5, 1: 5}
        assert engine.stats().running == 0
    finally:
        engine.close()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    return build_demo_model(tmp_path_factory.mktemp("choices"))


def test_the_ort_fork_copies_the_cache_exactly(demo: Demo) -> None:
    engine = LLMEngine.from_bundle(demo.bundle(), num_slots=3, max_context=256)
    prompt = engine.tokenizer.encode("<｜begin▁of▁sentence｜><｜User｜>def add(a, b):<｜Assistant｜></think>")
    engine.add_request("g", prompt, SamplingParams(temperature=0.0, max_tokens=10, n=3))
    forked: dict[int, list[int]] = {}
    while engine.has_work:
        for step in engine.step():
            forked.setdefault(step.delta.index, []).extend(step.delta.token_ids)
    alone = engine.generate([prompt], SamplingParams(temperature=0.0, max_tokens=10))[0]
    assert forked[1] == forked[2] == forked[0] == alone
    # The copy is of the whole state row, not of what happens to be zero.
    runner = engine.runner
    assert isinstance(runner, OrtRunner)
    stage = runner._stages[0]  # the test looks at the buffers it just wrote
    name = next(iter(stage.current))
    rows = stage.current[name].host
    assert rows is not None
    runner.fork(0, 2)
    assert np.array_equal(rows[2], rows[0]) and np.any(rows[0] != 0)
