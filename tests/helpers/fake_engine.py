"""A fast, deterministic GenerationService for API tests (the real one is appliance.engine.AsyncEngine).

Tokens are UTF-8 bytes (ids 0..255) plus three FIM markers; the reply is a fixed script of words
(``reply`` or ``"w0 w1 w2 ..."``), cut at ``max_tokens`` (finish ``length``), at a stop string (finish
``stop``) or at the script's end (finish ``stop``). In thinking mode the ``reasoning`` script comes
first, one character per token as Delta.reasoning (cut at ``max_reasoning_tokens`` as the real engine
cuts it), then the reply. ``n`` choices each get the script, in turn, and ``logprobs`` a fixed
distribution per token. ``token_delay_s`` paces the tokens so tests can
disconnect mid-stream, ``fail_after`` makes the stream fail; the fake records what was started,
finished and cancelled so tests can see that a disconnect reached the engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from appliance.engine.constrain import Constraint
from appliance.engine.types import ChatMessage, Delta, EngineStats, FinishReason, SamplingParams, TokenLogprob
from shared.errors import EngineError, InputError

__all__ = ["FIM_BEGIN", "FIM_END", "FIM_HOLE", "FakeEngine", "FakeRequest"]

FIM_BEGIN, FIM_HOLE, FIM_END = 256, 257, 258


@dataclass
class FakeRequest:
    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    outcome: str = "running"  # running | finished | cancelled


@dataclass
class FakeEngine:
    model_id: str = "fake-model"
    context_length: int = 4096
    supports_fim: bool = True
    reply: str | None = None
    words: int = 8
    token_delay_s: float = 0.0
    slots: int = 64
    fail_after: int | None = None  # raise EngineError after this many tokens
    reasoning: str = "Let me think. "
    requests: list[FakeRequest] = field(default_factory=list)
    vocab_size: int = 259  # bytes and the three FIM markers
    shortest: int | None = None  # what shortest_output answers for any constraint

    def token_bytes(self, token_id: int) -> bytes:
        return bytes([token_id]) if token_id < 256 else f"<fim{token_id - 256}>".encode()

    def shortest_output(self, constraint: Constraint) -> int | None:
        return self.shortest

    def encode_chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        tools: Sequence[dict[str, Any]] | None = None,
        thinking: bool = False,
        reasoning_effort: str | None = None,
    ) -> list[int]:
        names = ",".join(t["function"]["name"] for t in tools or ())
        text = (
            f"<tools>{names}" * bool(names)
            + "".join(f"<{m.role}>{m.content}" for m in messages)
            + "<assistant>"
        )
        if thinking:
            text = f"<effort {reasoning_effort}>{text}<think>"
        return list(text.encode("utf-8"))

    def encode_completion(self, prompt: str, suffix: str | None = None) -> list[int]:
        if suffix is None:
            return list(prompt.encode("utf-8"))
        if not self.supports_fim:
            raise InputError(f"model {self.model_id} does not support fill-in-the-middle (suffix)")
        return [FIM_BEGIN, *prompt.encode("utf-8"), FIM_HOLE, *suffix.encode("utf-8"), FIM_END]

    def script(self) -> list[str]:
        if self.reply is not None:
            return [ch for ch in self.reply]
        return [f"w{i} " for i in range(self.words)]

    def _running(self) -> int:
        return sum(1 for r in self.requests if r.outcome == "running")

    def stats(self) -> EngineStats:
        running = self._running()
        return EngineStats(running=running, waiting=0, free_slots=self.slots - running)

    def stream(
        self, prompt_ids: Sequence[int], params: SamplingParams, *, request_id: str
    ) -> AsyncIterator[Delta]:
        if any(r.request_id == request_id and r.outcome == "running" for r in self.requests):
            raise InputError(f"request id {request_id!r} is already in use")  # as the real engine
        record = FakeRequest(request_id, list(prompt_ids), params)
        self.requests.append(record)
        return self._generate(record)

    async def _generate(self, record: FakeRequest) -> AsyncIterator[Delta]:
        choices = [self._choice(record, index) for index in range(record.params.n)]
        try:
            # The choices advance in turn, one token each, as the real engine's batch does.
            while choices:
                # Yield to the loop between tokens, as a real engine does.
                await asyncio.sleep(self.token_delay_s)
                for choice in list(choices):
                    delta = next(choice)
                    if delta.finish_reason is not None:
                        choices.remove(choice)
                    yield delta
            record.outcome = "finished"
        finally:
            if record.outcome == "running":
                record.outcome = "cancelled"

    def _choice(self, record: FakeRequest, index: int) -> Iterator[Delta]:
        params, n_prompt = record.params, len(record.prompt_ids)
        thought = 0
        if params.thinking:
            cap = params.max_reasoning_tokens
            for i, ch in enumerate(self.reasoning if cap is None else self.reasoning[:cap]):
                cut: FinishReason | None = "length" if i + 1 >= params.max_tokens else None
                yield Delta("", (i,), n_prompt, i + 1, cut, reasoning=ch, reasoning_tokens=i + 1, index=index)
                if cut is not None:
                    return
                thought = i + 1
        # The answer's tokens follow the reasoning's and the closing </think>.
        offset = thought + 1 if params.thinking else 0
        text, emitted = "", 0
        pieces = self.script()
        for i, piece in enumerate(pieces):
            if self.fail_after is not None and i >= self.fail_after:
                raise EngineError("fake engine failure")
            produced = offset + i + 1
            text += piece
            token = ord(piece[0]) % 256 if piece else 0
            logprobs = () if params.logprobs is None else (_logprob(token, params.logprobs),)

            delta = partial(
                Delta,
                token_ids=(token,),
                prompt_tokens=n_prompt,
                completion_tokens=produced,
                logprobs=logprobs,
                reasoning_tokens=thought,
                index=index,
            )
            stop_at = min((text.find(s) for s in params.stop if s in text), default=-1)
            if stop_at >= 0:
                yield delta(text[emitted:stop_at], finish_reason="stop")
                return
            if produced >= params.max_tokens or i == len(pieces) - 1:
                yield delta(text[emitted:], finish_reason="length" if i < len(pieces) - 1 else "stop")
                return
            # Hold back a tail that could still grow into a stop string, as the real engine does.
            safe = len(text) - _partial_stop(text, params.stop)
            yield delta(text[emitted:safe])
            emitted = max(emitted, safe)


def _logprob(token: int, k: int) -> TokenLogprob:
    """A fixed distribution: the chosen token at log(1/2), then k alternatives at falling values."""
    top = tuple((token if j == 0 else (token + j) % 256, -0.6931 - j) for j in range(k))
    return TokenLogprob(token, -0.6931, top)


def _partial_stop(text: str, stops: Sequence[str]) -> int:
    """Length of the longest tail of ``text`` that is a proper prefix of some stop string."""
    best = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:k]):
                best = k
                break
    return best
