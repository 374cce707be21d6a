"""Thinking mode inside the engine: one sequence's reasoning, kept apart from its answer.

A thinking-mode prompt ends in ``<｜Assistant｜><think>``; what the model writes is reasoning until
it writes ``</think>``, then the answer::

    <think> reasoning tokens ... </think> answer tokens ... EOS
            `-- Delta.reasoning --'        `-- Delta.text --'

The reasoning has its own detokenizer without the request's stop strings (those are for the
answer, as a client writes them against the answer it expects); the answer's detokenizer starts
after ``</think>``. ``</think>`` is a control token, so it never appears in either text.

A cap (``SamplingParams.max_reasoning_tokens``, from a team policy) is kept by the engine writing
``</think>`` itself in place of the sampled token once the reasoning holds that many tokens — the
model then answers from what it has thought so far, as it was trained to after ``</think>``.
"""

from __future__ import annotations

from collections.abc import Sequence

from appliance.engine.tokenizer import IncrementalDetokenizer, Tokenizer

__all__ = ["ReasoningState"]


class ReasoningState:
    """Where one thinking-mode sequence stands: still reasoning (``open``) or answering."""

    def __init__(
        self, tokenizer: Tokenizer, *, end_id: int, budget: int | None, context: Sequence[int]
    ) -> None:
        self.end_id = end_id
        self.budget = budget
        self.open = True
        self.tokens = 0  # reasoning tokens so far, the closing </think> not counted
        self._detok = IncrementalDetokenizer(tokenizer, context=context)

    def forced_token(self) -> int | None:
        """``</think>`` when the cap is reached with the think block still open, else None."""
        if self.open and self.budget is not None and self.tokens >= self.budget:
            return self.end_id
        return None

    def push(self, token_id: int) -> str:
        """One generated id while open; returns reasoning text that became final. ``</think>``
        closes the block and flushes what the detokenizer held back."""
        if token_id == self.end_id:
            self.open = False
            return self._detok.flush()
        self.tokens += 1
        return self._detok.push(token_id)

    def close(self) -> str:
        """The generation ended while still reasoning (EOS, length): the rest of the reasoning."""
        self.open = False
        return self._detok.flush()
