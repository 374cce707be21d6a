"""The engine's contract with its callers (the API server, ``enclave generate``, benchmarks).

The API depends only on what is here: it encodes a prompt, then consumes ``stream()``, an async
iterator of :class:`Delta`. Closing the iterator early (``aclose()``, or cancelling the task that
iterates it — which is what a client disconnect does) cancels the generation and frees its slot.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = [
    "ChatMessage",
    "Delta",
    "EngineStats",
    "FinishReason",
    "GenerationService",
    "SamplingParams",
]

FinishReason = Literal["stop", "length", "cancelled", "error"]


@dataclass(frozen=True, kw_only=True)
class SamplingParams:
    max_tokens: int = 256
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 means no top-k cut
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    # Keep generating past EOS (benchmarks that need a fixed number of tokens).
    ignore_eos: bool = False

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True)
class ChatMessage:
    role: Literal["system", "user", "assistant"]
    content: str
    # For assistant turns of thinking-mode conversations: the reasoning that preceded content.
    reasoning: str | None = None


@dataclass(frozen=True)
class Delta:
    """One step of a stream. ``text`` never ends inside a UTF-8 sequence or a partial stop string."""

    text: str
    token_ids: tuple[int, ...]
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason | None = None  # set on the last Delta only


@dataclass(frozen=True)
class EngineStats:
    running: int
    waiting: int
    free_slots: int


class GenerationService(Protocol):
    """What the API server needs from an engine. The real one is ``appliance.engine.AsyncEngine``;
    a fast fake for API tests lives in ``tests/helpers``."""

    @property
    def model_id(self) -> str: ...

    @property
    def context_length(self) -> int: ...

    @property
    def supports_fim(self) -> bool: ...

    def encode_chat(self, messages: Sequence[ChatMessage], *, thinking: bool = False) -> list[int]: ...

    def encode_completion(self, prompt: str, suffix: str | None = None) -> list[int]:
        """Plain prompt, or fill-in-the-middle when ``suffix`` is given (InputError if unsupported)."""
        ...

    def stream(
        self, prompt_ids: Sequence[int], params: SamplingParams, *, request_id: str
    ) -> AsyncIterator[Delta]: ...

    def stats(self) -> EngineStats: ...
