from __future__ import annotations

import pytest

from appliance.engine.scheduler import Scheduler, SlotPool
from appliance.engine.sequence import Sequence, SequenceStatus
from appliance.engine.types import SamplingParams
from shared.errors import EngineError, InputError


def seq(name: str, n: int = 3) -> Sequence:
    return Sequence(name, list(range(1, n + 1)), SamplingParams())


def test_slot_pool_hands_out_lowest_first_and_rejects_double_release() -> None:
    pool = SlotPool(3)
    assert [pool.allocate(), pool.allocate()] == [0, 1]
    pool.release(0)
    assert pool.allocate() == 0
    with pytest.raises(EngineError):
        pool.release(2)


def test_requests_beyond_the_slots_wait_then_get_the_freed_slot() -> None:
    sched = Scheduler(num_slots=2, max_context=32)
    a, b, c = seq("a"), seq("b"), seq("c")
    for s in (a, b, c):
        sched.add(s)
    batch = sched.schedule()
    assert batch is not None and batch.kind == "prefill" and batch.seqs == [a, b]
    assert [a.slot, b.slot] == [0, 1] and c.status is SequenceStatus.WAITING
    batch = sched.schedule()
    assert batch is not None and batch.kind == "decode" and batch.seqs == [a, b]
    sched.finish(a, "stop")
    assert a.slot is None and a.finish_reason == "stop"
    batch = sched.schedule()
    assert batch is not None and batch.kind == "prefill" and batch.seqs == [c] and c.slot == 0
    batch = sched.schedule()
    assert batch is not None and batch.kind == "decode" and set(batch.seqs) == {b, c}


def test_prefill_batch_respects_the_token_budget() -> None:
    sched = Scheduler(num_slots=4, max_context=64, max_prefill_tokens=10)
    big, small = seq("big", 8), seq("small", 5)
    sched.add(big)
    sched.add(small)
    first = sched.schedule()
    assert first is not None and first.seqs == [big]
    second = sched.schedule()
    assert second is not None and second.kind == "prefill" and second.seqs == [small]


def test_waiting_request_can_be_cancelled_without_ever_holding_a_slot() -> None:
    sched = Scheduler(num_slots=1, max_context=32)
    a, b = seq("a"), seq("b")
    sched.add(a)
    sched.add(b)
    sched.schedule()
    sched.finish(b, "cancelled")
    assert list(sched.waiting) == [] and sched.slots.num_free == 0
    sched.finish(a, "cancelled")
    assert sched.slots.num_free == 1 and not sched.has_work


def test_bad_admissions() -> None:
    sched = Scheduler(num_slots=1, max_context=8, max_waiting=1)
    with pytest.raises(InputError, match="context holds 8"):
        sched.add(seq("long", 8))
    with pytest.raises(InputError, match="empty"):
        sched.add(Sequence("empty", [], SamplingParams()))
    sched.add(seq("a"))
    with pytest.raises(EngineError, match="busy"):
        sched.add(seq("b"))


def test_preemption_gives_the_longest_holder_slot_to_the_queue() -> None:
    sched = Scheduler(num_slots=1, max_context=32, preempt_after=2)
    a, b = seq("a"), seq("b")
    sched.add(a)
    sched.schedule()  # prefill a
    sched.add(b)
    kinds = []
    for _ in range(3):
        batch = sched.schedule()
        assert batch is not None
        kinds.append((batch.kind, [s.request_id for s in batch.seqs]))
    assert kinds == [("decode", ["a"]), ("decode", ["a"]), ("prefill", ["b"])]
    assert a.status is SequenceStatus.WAITING and a.slot is None and a.num_cached == 0
    assert list(sched.waiting) == [a]
