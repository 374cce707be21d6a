"""Which sequences run next: admission into cache slots, prefill, decode, preemption.

Memory is a fixed number of cache slots, each holding up to ``max_context`` tokens of one sequence.
A request waits in a FIFO queue until a slot is free; it then gets one prefill run (its whole prompt)
and joins the decode batch, which advances every running sequence by one token per step. A finished,
stopped or cancelled sequence gives its slot back at once.

Preemption (recompute): with ``preempt_after`` set, a sequence that has held its slot for that many
steps while others wait gives the slot up and goes back to the front of the queue; when it returns,
one prefill over its prompt and everything it generated rebuilds its cache. Long generations then
cannot keep short requests waiting indefinitely.

This module knows nothing of ONNX Runtime: it moves sequences between queues and hands out slot
numbers.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from appliance.engine.sequence import Sequence, SequenceStatus
from appliance.engine.types import FinishReason
from shared.errors import EngineError, InputError

__all__ = ["Batch", "Scheduler", "SlotPool"]


class SlotPool:
    """The free cache slots. Lowest number first, so tests and logs are predictable."""

    def __init__(self, num_slots: int) -> None:
        if num_slots < 1:
            raise EngineError("the engine needs at least one cache slot")
        self.num_slots = num_slots
        self._free = list(range(num_slots))

    @property
    def num_free(self) -> int:
        return len(self._free)

    def allocate(self) -> int:
        self._free.sort()
        return self._free.pop(0)

    def release(self, slot: int) -> None:
        if slot in self._free or not 0 <= slot < self.num_slots:
            raise EngineError(f"cache slot {slot} released twice or out of range")
        self._free.append(slot)


@dataclass(frozen=True)
class Batch:
    kind: Literal["prefill", "decode"]
    seqs: list[Sequence]
    # (source, copy): after the prefill, ``copy``'s slot gets ``source``'s cache (a later choice of
    # the same prompt, ``n`` > 1) and it joins the running set without a prefill of its own.
    forks: list[tuple[Sequence, Sequence]] = field(default_factory=list)


class Scheduler:
    def __init__(
        self,
        *,
        num_slots: int,
        max_context: int,
        max_waiting: int = 256,
        max_prefill_tokens: int = 8192,
        preempt_after: int | None = None,
    ) -> None:
        self.slots = SlotPool(num_slots)
        self.max_context = max_context
        self.max_waiting = max_waiting
        self.max_prefill_tokens = max_prefill_tokens
        self.preempt_after = preempt_after
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self._steps_held: dict[int, int] = {}  # id(seq) -> decode steps since admission

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, seq: Sequence) -> None:
        check_admissible(len(seq.prompt_ids), self.max_context)
        if len(self.waiting) >= self.max_waiting:
            raise EngineError(f"the engine is busy: {len(self.waiting)} requests already waiting")
        seq.status = SequenceStatus.WAITING
        self.waiting.append(seq)

    def schedule(self) -> Batch | None:
        """The next batch: a prefill of newly admitted sequences if any can start, else a decode."""
        self._maybe_preempt()
        admitted: list[Sequence] = []
        forks: list[tuple[Sequence, Sequence]] = []
        budget = self.max_prefill_tokens
        while self.waiting and self.slots.num_free:
            seq = self.waiting[0]
            cost = len(seq.token_ids)
            if admitted and cost > budget:
                break
            self.waiting.popleft()
            seq.fork_of = None  # its source is not being prefilled now: it prefills itself
            self._admit(seq)
            admitted.append(seq)
            budget -= cost
            forks += self._admit_forks(seq)
        if admitted:
            return Batch("prefill", admitted, forks)
        if self.running:
            for seq in self.running:
                self._steps_held[id(seq)] += 1
            return Batch("decode", list(self.running))
        return None

    def _admit(self, seq: Sequence) -> None:
        seq.slot = self.slots.allocate()
        seq.num_cached = 0
        seq.status = SequenceStatus.RUNNING
        self.running.append(seq)
        self._steps_held[id(seq)] = 0

    def _admit_forks(self, source: Sequence) -> list[tuple[Sequence, Sequence]]:
        """The waiting choices that copy ``source``'s prefill, as many as free slots allow; the others
        lose the link and will prefill themselves."""
        copies = [w for w in self.waiting if w.fork_of is source]
        forks: list[tuple[Sequence, Sequence]] = []
        for copy in copies:
            copy.fork_of = None
            if self.slots.num_free:
                self.waiting.remove(copy)
                self._admit(copy)
                forks.append((source, copy))
        return forks

    def finish(self, seq: Sequence, reason: FinishReason) -> None:
        """End ``seq`` (any state) and free its slot."""
        if seq.is_finished:
            return
        if seq.status is SequenceStatus.RUNNING:
            self._leave(seq)
        else:
            self.waiting.remove(seq)
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason

    def preempt(self, seq: Sequence) -> None:
        """Take ``seq``'s slot away; it rejoins the front of the queue and is recomputed later."""
        self._leave(seq)
        seq.status = SequenceStatus.WAITING
        self.waiting.appendleft(seq)

    def _leave(self, seq: Sequence) -> None:
        self.running.remove(seq)
        del self._steps_held[id(seq)]
        assert seq.slot is not None
        self.slots.release(seq.slot)
        seq.slot = None
        seq.num_cached = 0

    def _maybe_preempt(self) -> None:
        if self.preempt_after is None or not self.waiting or self.slots.num_free:
            return
        # The sequence that has held its slot longest, if past the limit, yields to the queue.
        # Only one per step, and the sequence it is preempted for has waited at least as long.
        oldest = max(self.running, key=lambda s: self._steps_held[id(s)], default=None)
        if oldest is not None and self._steps_held[id(oldest)] >= self.preempt_after:
            waiter = self.waiting.popleft()
            self.preempt(oldest)
            self.waiting.appendleft(waiter)


def check_admissible(num_prompt_tokens: int, max_context: int) -> None:
    if num_prompt_tokens == 0:
        raise InputError("the prompt is empty")
    if num_prompt_tokens >= max_context:
        raise InputError(
            f"the prompt has {num_prompt_tokens} tokens; this model's context holds {max_context}, "
            "including at least one generated token"
        )
