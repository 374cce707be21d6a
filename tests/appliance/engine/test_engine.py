"""LLMEngine and AsyncEngine over the fake runner: batching, determinism, stops, cancellation."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.engine.engine import AsyncEngine, LLMEngine
from appliance.engine.tokenizer import Tokenizer
from appliance.engine.types import ChatMessage, Delta, SamplingParams
from shared.errors import EngineError, InputError
from tests.helpers.engine_fake_runner import FakeRunner, scripted_logits
from tests.helpers.engine_tokenizer import build_tokenizer

GREEDY = SamplingParams(temperature=0.0, max_tokens=12)
SEEDED = SamplingParams(temperature=1.0, top_p=0.9, top_k=50, seed=1234, max_tokens=12)


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return build_tokenizer()


def make_engine(
    tok: Tokenizer, *, num_slots: int = 4, max_context: int = 64, preempt_after: int | None = None
) -> tuple[LLMEngine, FakeRunner]:
    runner = FakeRunner(vocab_size=tok.vocab_size, num_slots=num_slots, max_context=max_context)
    # Never stop on EOS by chance: the fake's logits are random over the whole vocabulary.
    runner_logits = runner.next_logits

    def no_eos(history: list[int]) -> np.ndarray:
        row = runner_logits(history)
        row[tok.eos_id] = -1e9
        return row

    runner.next_logits = no_eos
    return LLMEngine(runner, tok, preempt_after=preempt_after), runner


PROMPTS = [[5, 6, 7], [8, 9], [10, 11, 12, 13, 14], [5, 6, 7, 8]]


@pytest.mark.parametrize("params", [GREEDY, SEEDED], ids=["greedy", "seeded"])
def test_same_tokens_alone_and_in_a_mixed_batch(tok: Tokenizer, params: SamplingParams) -> None:
    alone = [make_engine(tok)[0].generate([p], params)[0] for p in PROMPTS]
    engine, runner = make_engine(tok, num_slots=3)
    together = engine.generate(PROMPTS, params)
    assert together == alone
    assert all(len(t) == 12 for t in together)
    # It really was batched: some decode step ran three sequences at once.
    assert max(len(ids) for kind, ids in runner.calls if kind == "decode") == 3


def test_new_requests_join_the_running_decode_batch(tok: Tokenizer) -> None:
    engine, runner = make_engine(tok, num_slots=4)
    engine.add_request("a", [5, 6], GREEDY)
    engine.step()
    engine.step()
    engine.add_request("b", [7, 8], GREEDY)
    engine.step()
    engine.step()
    assert runner.calls == [
        ("prefill", ("a",)),
        ("decode", ("a",)),
        ("prefill", ("b",)),
        ("decode", ("a", "b")),
    ]


def test_seeded_sampling_is_reproducible_and_depends_on_the_seed(tok: Tokenizer) -> None:
    run = lambda seed: make_engine(tok)[0].generate([PROMPTS[0]], SamplingParams(seed=seed))[0]  # noqa: E731
    assert run(1) == run(1)
    assert run(1) != run(2)


def test_preemption_recomputes_and_gives_the_same_tokens(tok: Tokenizer) -> None:
    expected = make_engine(tok)[0].generate(PROMPTS, SEEDED)
    engine, runner = make_engine(tok, num_slots=2, preempt_after=3)
    assert engine.generate(PROMPTS, SEEDED) == expected
    prefills = [ids for kind, ids in runner.calls if kind == "prefill"]
    assert len(prefills) > len(PROMPTS)  # someone was prefilled again after losing its slot


def scripted_engine(tok: Tokenizer, text: str, prompt: list[int]) -> LLMEngine:
    script = [*tok.encode(text), tok.eos_id]
    runner = FakeRunner(
        vocab_size=tok.vocab_size, next_logits=scripted_logits(tok.vocab_size, script, len(prompt))
    )
    return LLMEngine(runner, tok)


def collect(engine: LLMEngine, request_id: str) -> list[Delta]:
    deltas = []
    while engine.has_work:
        deltas.extend(o.delta for o in engine.step() if o.request_id == request_id)
    return deltas


def test_stop_string_across_tokens_ends_the_request(tok: Tokenizer) -> None:
    engine = scripted_engine(tok, "print(x) STOP more 😀", [5, 6])
    engine.add_request("r", [5, 6], SamplingParams(temperature=0.0, stop=("STOP",)))
    deltas = collect(engine, "r")
    assert "".join(d.text for d in deltas) == "print(x) "
    assert deltas[-1].finish_reason == "stop"
    assert all(d.finish_reason is None for d in deltas[:-1])
    assert engine.scheduler.slots.num_free == engine.runner.num_slots


def test_eos_stops_and_utf8_is_never_split(tok: Tokenizer) -> None:
    text = "naïve 😀 中文"
    engine = scripted_engine(tok, text, [5, 6])
    engine.add_request("r", [5, 6], SamplingParams(temperature=0.0, max_tokens=100))
    deltas = collect(engine, "r")
    assert "".join(d.text for d in deltas) == text
    assert all("\ufffd" not in d.text for d in deltas)
    assert deltas[-1].finish_reason == "stop" and deltas[-1].token_ids == (tok.eos_id,)
    assert deltas[-1].completion_tokens == len(tok.encode(text)) + 1


def test_max_tokens_and_context_limit_end_with_length(tok: Tokenizer) -> None:
    engine, _ = make_engine(tok, max_context=10)
    engine.add_request("short", [5, 6], SamplingParams(temperature=0.0, max_tokens=3))
    engine.add_request("ctx", [5, 6, 7], SamplingParams(temperature=0.0, max_tokens=100))
    ends = {}
    while engine.has_work:
        for out in engine.step():
            if out.delta.finish_reason:
                ends[out.request_id] = (out.delta.finish_reason, out.delta.completion_tokens)
    assert ends == {"short": ("length", 3), "ctx": ("length", 7)}


def test_ignore_eos_generates_past_it(tok: Tokenizer) -> None:
    engine = scripted_engine(tok, "ab", [5])
    engine.add_request("r", [5], SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True))
    deltas = collect(engine, "r")
    assert deltas[-1].finish_reason == "length" and deltas[-1].completion_tokens == 6
    assert tok.eos_id in [t for d in deltas for t in d.token_ids]


def test_stop_token_ids(tok: Tokenizer) -> None:
    engine = scripted_engine(tok, "abc def", [5])
    stop_id = tok.encode("abc def")[1]
    engine.add_request("r", [5], SamplingParams(temperature=0.0, stop_token_ids=(stop_id,)))
    deltas = collect(engine, "r")
    assert deltas[-1].finish_reason == "stop" and deltas[-1].completion_tokens == 2


def test_abort_frees_the_slot_at_once(tok: Tokenizer) -> None:
    engine, _ = make_engine(tok, num_slots=1)
    engine.add_request("a", [5], GREEDY)
    engine.add_request("b", [6], GREEDY)
    engine.step()
    assert engine.scheduler.slots.num_free == 0
    assert engine.abort("a")
    assert engine.scheduler.slots.num_free == 1
    assert not engine.abort("a")
    out = engine.step()
    assert [o.request_id for o in out] == ["b"]


def test_bad_requests(tok: Tokenizer) -> None:
    engine, _ = make_engine(tok)
    with pytest.raises(InputError, match="top_p"):
        engine.add_request("x", [5], SamplingParams(top_p=0.0))
    with pytest.raises(InputError, match="max_tokens"):
        engine.add_request("x", [5], SamplingParams(max_tokens=0))
    engine.add_request("x", [5], GREEDY)
    with pytest.raises(InputError, match="already in use"):
        engine.add_request("x", [5], GREEDY)


class FailingRunner(FakeRunner):
    def run(self, kind, seqs):  # type: ignore[no-untyped-def]
        if kind == "decode":
            raise EngineError("device lost")
        return super().run(kind, seqs)


def test_a_failed_run_ends_its_requests_with_error(tok: Tokenizer) -> None:
    engine = LLMEngine(FailingRunner(vocab_size=tok.vocab_size), tok)
    engine.add_request("a", [5], GREEDY)
    engine.step()
    (out,) = engine.step()
    assert out.delta.finish_reason == "error"
    assert not engine.has_work and engine.scheduler.slots.num_free == engine.runner.num_slots


# AsyncEngine -----------------------------------------------------------------------------------


def wait_until(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.01)


def test_async_streams_match_the_sync_engine(tok: Tokenizer) -> None:
    expected = make_engine(tok)[0].generate(PROMPTS, SEEDED)
    service = AsyncEngine(make_engine(tok, num_slots=2)[0])

    async def consume(i: int) -> list[int]:
        ids: list[int] = []
        async for delta in service.stream(PROMPTS[i], SEEDED, request_id=f"r{i}"):
            ids.extend(delta.token_ids)
        return ids

    async def main() -> list[list[int]]:
        return list(await asyncio.gather(*(consume(i) for i in range(len(PROMPTS)))))

    try:
        assert asyncio.run(main()) == expected
        assert service.stats().free_slots == 2 and service.stats().waiting == 0
    finally:
        service.close()


def test_async_cancellation_frees_the_slot(tok: Tokenizer) -> None:
    # A context far longer than the test runs: the requests cannot end by length on their own
    # before the test has closed or cancelled them, however slowly its coroutines are scheduled.
    context = 1_000_000
    engine, _ = make_engine(tok, num_slots=1, max_context=context)
    service = AsyncEngine(engine)
    long = SamplingParams(temperature=0.0, max_tokens=context - 10)

    async def close_early() -> None:
        stream = service.stream([5, 6], long, request_id="closed")
        await stream.__anext__()
        assert service.stats().free_slots == 0
        await stream.aclose()  # type: ignore[attr-defined]

    async def cancel_task() -> None:
        async def consume() -> None:
            async for _ in service.stream([5, 6], long, request_id="cancelled"):
                pass

        task = asyncio.create_task(consume())
        deadline = time.monotonic() + 30
        while service.stats().running == 0:
            assert time.monotonic() < deadline, "the request never started running"
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    try:
        asyncio.run(close_early())
        wait_until(lambda: service.stats().free_slots == 1)
        asyncio.run(cancel_task())
        wait_until(lambda: service.stats().free_slots == 1 and service.stats().running == 0)

        # The freed slot serves the next request.
        async def one() -> list[Delta]:
            short = SamplingParams(temperature=0.0, max_tokens=8)
            return [d async for d in service.stream([7], short, request_id="next")]

        assert asyncio.run(one())[-1].finish_reason == "length"
    finally:
        service.close()


def test_async_queue_depth_and_errors(tok: Tokenizer) -> None:
    # The context is far longer than this test can run, so "a" cannot finish (by length) before
    # "b" has been seen waiting, however slowly the test's own coroutine gets scheduled.
    context = 1_000_000
    engine, _ = make_engine(tok, num_slots=1, max_context=context)
    service = AsyncEngine(engine)
    long = SamplingParams(temperature=0.0, max_tokens=context - 10)

    async def main() -> None:
        first = service.stream([5], long, request_id="a")
        await first.__anext__()
        second = service.stream([6], long, request_id="b")
        waiter = asyncio.create_task(second.__anext__())
        deadline = time.monotonic() + 30
        while service.stats().waiting == 0:
            assert time.monotonic() < deadline, "the second request was never queued"
            await asyncio.sleep(0.01)
        assert service.stats().running == 1
        with pytest.raises(InputError, match="context"):
            await service.stream([1] * (context + 1), GREEDY, request_id="c").__anext__()
        with pytest.raises(InputError, match="already in use"):
            await service.stream([5], GREEDY, request_id="a").__anext__()
        await first.aclose()  # type: ignore[attr-defined]
        delta = await waiter  # the waiting request gets the slot
        assert delta.token_ids
        await second.aclose()  # type: ignore[attr-defined]

    try:
        asyncio.run(main())
        assert service.encode_chat([ChatMessage("user", "hi")])[0] == tok.bos_id
        assert service.supports_fim and service.context_length == context and service.model_id == "model"
    finally:
        service.close()
    with pytest.raises(EngineError, match="shut down"):
        asyncio.run(service.stream([5], GREEDY, request_id="z").__anext__())


@settings(max_examples=40, deadline=None)
@given(
    events=st.lists(
        st.tuples(st.sampled_from(["add", "abort", "step", "step"]), st.integers(0, 3)),
        min_size=1,
        max_size=40,
    ),
    slots=st.integers(1, 3),
    preempt_after=st.sampled_from([None, 2]),
)
def test_random_arrivals_and_cancellations_never_change_a_finished_requests_tokens(
    events: list[tuple[str, int]], slots: int, preempt_after: int | None
) -> None:
    tok = build_tokenizer()
    engine, _ = make_engine(tok, num_slots=slots, preempt_after=preempt_after)
    params = [SamplingParams(temperature=1.0, top_k=20, seed=i, max_tokens=3 + i) for i in range(4)]
    prompt_of: dict[str, int] = {}
    tokens: dict[str, list[int]] = {}
    ended: dict[str, str] = {}

    def step() -> None:
        for out in engine.step():
            tokens.setdefault(out.request_id, []).extend(out.delta.token_ids)
            if out.delta.finish_reason:
                ended[out.request_id] = out.delta.finish_reason

    for kind, i in events:
        if kind == "add":
            rid = f"r{len(prompt_of)}"
            engine.add_request(rid, PROMPTS[i], params[i])
            prompt_of[rid] = i
        elif kind == "abort" and prompt_of:
            rid = sorted(prompt_of)[i % len(prompt_of)]
            if engine.abort(rid):
                ended[rid] = "cancelled"
        else:
            step()
        running = engine.scheduler.running
        assert engine.scheduler.slots.num_free + len(running) == slots
        assert len({s.slot for s in running}) == len(running)
    while engine.has_work:
        step()
    assert engine.scheduler.slots.num_free == slots
    solo = {i: make_engine(tok)[0].generate([PROMPTS[i]], params[i])[0] for i in set(prompt_of.values())}
    for rid, i in prompt_of.items():
        if ended[rid] == "cancelled":
            assert tokens.get(rid, []) == solo[i][: len(tokens.get(rid, []))]
        else:
            assert ended[rid] == "length" and tokens[rid] == solo[i]
