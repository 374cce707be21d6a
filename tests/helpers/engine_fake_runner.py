"""A model double for engine tests: logits are a pure function of what a slot's cache holds.

Because the output for a sequence depends only on the ids that were fed into *its* slot, any
scheduling mistake (two sequences in one slot, a skipped or repeated id, a decode before prefill)
changes the tokens, and the bookkeeping checks below name it at once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from collections.abc import Sequence as Seq
from typing import Literal

import numpy as np
import numpy.typing as npt

from appliance.engine.sequence import Sequence

NextLogits = Callable[[list[int]], npt.NDArray[np.float32]]


def hashed_logits(vocab_size: int) -> NextLogits:
    """Pseudo-random logits seeded by the whole history: deterministic, history-sensitive."""

    def next_logits(history: list[int]) -> npt.NDArray[np.float32]:
        digest = hashlib.sha256(np.asarray(history, dtype=np.int64).tobytes()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        return rng.standard_normal(vocab_size).astype(np.float32) * 3.0

    return next_logits


def scripted_logits(vocab_size: int, script: Seq[int], prompt_len: int) -> NextLogits:
    """Emits ``script`` after a prompt of ``prompt_len`` ids, then repeats its last id."""

    def next_logits(history: list[int]) -> npt.NDArray[np.float32]:
        index = min(len(history) - prompt_len, len(script) - 1)
        logits = np.zeros(vocab_size, dtype=np.float32)
        logits[script[index]] = 10.0
        return logits

    return next_logits


class FakeRunner:
    def __init__(
        self,
        *,
        vocab_size: int,
        num_slots: int = 4,
        max_context: int = 64,
        next_logits: NextLogits | None = None,
    ) -> None:
        self.vocab_size = vocab_size
        self._num_slots = num_slots
        self._max_context = max_context
        self.next_logits = next_logits or hashed_logits(vocab_size)
        self.cache: dict[int, list[int]] = {}
        self.calls: list[tuple[str, tuple[str, ...]]] = []  # (kind, request ids)

    @property
    def num_slots(self) -> int:
        return self._num_slots

    @property
    def max_context(self) -> int:
        return self._max_context

    def fork(self, source_slot: int, target_slot: int) -> None:
        self.calls.append(("fork", (str(source_slot), str(target_slot))))
        self.cache[target_slot] = list(self.cache[source_slot])

    def run(self, kind: Literal["prefill", "decode"], seqs: Seq[Sequence]) -> npt.NDArray[np.float32]:
        self.calls.append((kind, tuple(s.request_id for s in seqs)))
        slots = [s.slot for s in seqs]
        assert None not in slots and len(set(slots)) == len(slots), f"bad slots {slots}"
        rows = []
        for seq in seqs:
            assert seq.slot is not None
            if kind == "prefill":
                assert seq.num_cached == 0, "prefill of a slot that is not fresh"
                self.cache[seq.slot] = list(seq.pending_ids)
            else:
                assert len(seq.pending_ids) == 1, "decode must feed exactly one id"
                assert len(self.cache[seq.slot]) == seq.num_cached, "slot out of step with its sequence"
                self.cache[seq.slot].append(seq.pending_ids[0])
            assert len(self.cache[seq.slot]) <= self._max_context, "slot overflow"
            rows.append(self.next_logits(self.cache[seq.slot]))
        return np.stack(rows)
