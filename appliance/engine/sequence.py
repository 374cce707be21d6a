"""Per-request state: the ids so far, where its cache lives, how far the cache has been filled."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import llguidance
import numpy as np

from appliance.engine.types import FinishReason, SamplingParams

__all__ = ["Sequence", "SequenceStatus"]


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    token_ids: list[int] = field(init=False)
    status: SequenceStatus = SequenceStatus.WAITING
    # The cache slot this sequence owns while RUNNING, and how many of token_ids are in that cache.
    slot: int | None = None
    num_cached: int = 0
    finish_reason: FinishReason | None = None
    rng: np.random.Generator = field(init=False)
    # The grammar state of a constrained sequence (SamplingParams.constraint), advanced per token.
    matcher: llguidance.LLMatcher | None = None
    # The shortest way to a complete output, forced once the token budget is down to it (see
    # constrain.closing_plan); empty while the model still chooses freely.
    closing: list[int] = field(default_factory=list)
    plan_len: int = 0  # the length of the last closing plan found
    # Choice ``index`` of the request ``group`` (``SamplingParams.n`` choices share one request id).
    group: str = ""
    index: int = 0
    # A later choice of the same prompt, waiting for ``fork_of``'s prefill: it then takes a copy of
    # that cache instead of its own prefill. None once forked, or when it has to prefill itself.
    fork_of: Sequence | None = None

    def __post_init__(self) -> None:
        self.token_ids = list(self.prompt_ids)
        self.group = self.group or self.request_id
        # Each sequence draws from its own stream, so what it samples does not depend on which
        # other sequences share its batches. Without a seed, fresh OS entropy. Choice i > 0 of a
        # seeded request gets its own seeded stream, so n choices differ but repeat.
        seed = self.params.seed
        self.rng = np.random.default_rng(seed if seed is None or self.index == 0 else (seed, self.index))

    @property
    def remaining(self) -> int:
        """Tokens it may still generate under max_tokens."""
        return self.params.max_tokens - self.num_completion_tokens

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_ids)

    @property
    def num_completion_tokens(self) -> int:
        return len(self.token_ids) - len(self.prompt_ids)

    @property
    def completion_ids(self) -> list[int]:
        return self.token_ids[len(self.prompt_ids) :]

    @property
    def pending_ids(self) -> list[int]:
        """The ids the next model run must feed: all not yet in the cache."""
        return self.token_ids[self.num_cached :]

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    def append(self, token_id: int) -> None:
        self.token_ids.append(token_id)
        if self.matcher is not None and not self.matcher.is_stopped():
            # The mask allowed only tokens the grammar takes, so this cannot fail; EOS ends it.
            self.matcher.consume_token(token_id)
