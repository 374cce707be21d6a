"""The engine's contract with its callers (the API server, ``enclave generate``, benchmarks).

The API depends only on what is here: it encodes a prompt, then consumes ``stream()``, an async
iterator of :class:`Delta`. Closing the iterator early (``aclose()``, or cancelling the task that
iterates it — which is what a client disconnect does) cancels the generation and frees its slot.

Sampling surface (issue 13), OpenAI semantics:

- ``presence_penalty`` / ``frequency_penalty`` (-2..2): ``logit[t] -= presence * (count[t] > 0) +
  frequency * count[t]``, counts over the *generated* tokens only (OpenAI's and vLLM's rule).
- ``logit_bias``: ``(token_id, bias)`` pairs, bias in -100..100, added to the raw logits.
- ``logprobs``: None = off; ``k`` in 0..20 = each Delta carries, per token, the chosen token's
  log-probability and the ``k`` most likely alternatives. They are taken from the distribution after
  bias and penalties and *before* temperature/top-k/top-p (vLLM's default ``raw``-after-processors
  mode, and what OpenAI reports: a temperature change does not change the logprobs it returns).
- ``constraint``: an :class:`appliance.engine.constrain.Constraint` (JSON object, JSON schema, a
  DSML tool call); the sampler masks every step with it and EOS is allowed only where it accepts.
  The output is complete even when ``max_tokens`` runs out (the engine closes it in time); a
  ``max_tokens`` below ``GenerationService.shortest_output`` is refused with InputError.
- ``n``: that many choices of one prompt, sampled independently from one prefill (the later ones
  copy the first one's cache); ``stream()`` then yields the Deltas of all of them, each with its
  ``index``, and ends after the last one's final Delta.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from appliance.engine.constrain import Constraint

__all__ = [
    "ChatMessage",
    "Delta",
    "EngineStats",
    "FinishReason",
    "GenerationService",
    "ReasoningEffort",
    "SamplingParams",
    "TokenLogprob",
    "ToolCall",
]

MAX_LOGPROBS = 20

FinishReason = Literal["stop", "length", "cancelled", "error"]
# V4's two thinking efforts, as DeepSeek's encoder names them (non-think is thinking=False).
ReasoningEffort = Literal["high", "max"]


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
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()
    logprobs: int | None = None  # None: off; k: chosen token + top-k alternatives (k <= 20)
    constraint: Constraint | None = None
    # Thinking mode: the prompt ends in an open think block, so the model writes reasoning until it
    # writes </think>, then the answer. With max_reasoning_tokens the engine writes </think> itself
    # once the reasoning has that many tokens (a team policy's cap), and the answer follows.
    thinking: bool = False
    max_reasoning_tokens: int | None = None
    n: int = 1

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True)
class ToolCall:
    """One call an assistant turn made: ``arguments`` is the JSON text of the arguments object."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ChatMessage:
    role: Literal["system", "user", "assistant", "tool"]
    content: str
    # For assistant turns of thinking-mode conversations: the reasoning that preceded content.
    reasoning: str | None = None
    # Assistant turns: the calls it made (content may then be ""). Tool turns: which call answered.
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None


@dataclass(frozen=True)
class TokenLogprob:
    """The log-probability of one generated token and of the ``top`` alternatives (id, logprob),
    most likely first (``SamplingParams.logprobs`` of them)."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class Delta:
    """One step of a stream. ``text`` never ends inside a UTF-8 sequence or a partial stop string."""

    text: str
    token_ids: tuple[int, ...]
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason | None = None  # set on the last Delta only
    # One per id in token_ids when SamplingParams.logprobs is set, else empty.
    logprobs: tuple[TokenLogprob, ...] = ()
    # Thinking mode: reasoning text, never part of ``text``; a Delta carrying both came before and
    # after </think>, reasoning first. reasoning_tokens counts, like completion_tokens, every
    # reasoning token so far (not the </think> marker itself).
    reasoning: str = ""
    reasoning_tokens: int = 0
    index: int = 0  # which of the request's SamplingParams.n choices this is


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

    @property
    def vocab_size(self) -> int:
        """Token ids are 0..vocab_size-1 (prompts given as ids, logit_bias keys)."""
        ...

    def shortest_output(self, constraint: Constraint) -> int | None:
        """Tokens (EOS included) the shortest complete output under ``constraint`` takes: the least
        ``max_tokens`` the engine accepts with it (None: not known, nothing refused). InputError if
        the constraint cannot be used."""
        ...

    def encode_chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        tools: Sequence[dict[str, Any]] | None = None,
        thinking: bool = False,
        reasoning_effort: ReasoningEffort | None = None,
    ) -> list[int]:
        """Message content (and tool results) is encoded as text: a special-token string inside it
        becomes ordinary text tokens; only the encoder's own markup yields control tokens.
        ``tools`` are OpenAI tool definitions (``{"type": "function", "function": {...}}``).
        ``reasoning_effort`` ``"max"`` (with ``thinking``) is V4's Think Max prompt."""
        ...

    def encode_completion(
        self, prompt: str, suffix: str | None = None, *, allow_special: bool = True
    ) -> list[int]:
        """Plain prompt, or fill-in-the-middle when ``suffix`` is given (InputError if unsupported).
        With ``allow_special`` (raw /v1/completions: clients send model templates) special-token
        strings in ``prompt`` are control tokens; ``suffix`` is always text."""
        ...

    def token_bytes(self, token_id: int) -> bytes:
        """The UTF-8 bytes one token stands for (OpenAI's logprobs ``bytes``; may be part of a
        character). Special tokens give their literal text."""
        ...

    def stream(
        self, prompt_ids: Sequence[int], params: SamplingParams, *, request_id: str
    ) -> AsyncIterator[Delta]: ...

    def stats(self) -> EngineStats: ...
