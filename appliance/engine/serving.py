"""``AsyncEngine``: the API's GenerationService over an :class:`LLMEngine`, driven by one background
thread for asyncio callers (the API server).

    API task ──stream()──> inbox ──> engine thread: step() ──> call_soon_threadsafe ──> per-request queue
                 aclose()/cancel ──> inbox (abort) ──> slot freed before the next step
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from typing import Any

from appliance.engine.constrain import Constraint
from appliance.engine.engine import LLMEngine, validate_params
from appliance.engine.prompt import PromptEncoder
from appliance.engine.scheduler import check_admissible
from appliance.engine.types import ChatMessage, Delta, EngineStats, ReasoningEffort, SamplingParams
from shared.errors import EnclaveError, EngineError

__all__ = ["AsyncEngine"]

log = logging.getLogger(__name__)


class _Listener:
    """Where one request's deltas go: its event loop and queue, fed from the engine thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, choices: int = 1) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[Delta | EnclaveError] = asyncio.Queue()
        self.unfinished = choices  # choices whose final Delta has not been sent yet

    def send(self, item: Delta | EnclaveError) -> bool:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the consumer's loop is closed: nobody is listening any more
            return False
        return True


@dataclass(frozen=True)
class _Add:
    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    listener: _Listener


@dataclass(frozen=True)
class _Abort:
    request_id: str


class AsyncEngine:
    """:class:`appliance.engine.types.GenerationService` over an :class:`LLMEngine`.

    One background thread owns the engine: it applies queued adds and aborts, then runs a step,
    and sleeps when there is nothing to do.
    """

    def __init__(self, engine: LLMEngine) -> None:
        self._engine = engine
        self._encoder = PromptEncoder(engine.tokenizer)
        self._cond = threading.Condition()
        self._inbox: list[_Add | _Abort] = []
        self._listeners: dict[str, _Listener] = {}
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="enclave-engine", daemon=True)
        self._thread.start()

    # GenerationService -------------------------------------------------------------------------

    @property
    def model_id(self) -> str:
        return self._engine.model_id

    @property
    def context_length(self) -> int:
        return self._engine.runner.max_context

    @property
    def supports_fim(self) -> bool:
        return self._encoder.supports_fim

    @property
    def vocab_size(self) -> int:
        return self._engine.tokenizer.vocab_size

    def shortest_output(self, constraint: Constraint) -> int | None:
        return self._engine.shortest_output(constraint)

    def encode_chat(
        self,
        messages: Seq[ChatMessage],
        *,
        tools: Seq[dict[str, Any]] | None = None,
        thinking: bool = False,
        reasoning_effort: ReasoningEffort | None = None,
    ) -> list[int]:
        return self._encoder.chat(messages, thinking=thinking, tools=tools, reasoning_effort=reasoning_effort)

    def encode_completion(
        self, prompt: str, suffix: str | None = None, *, allow_special: bool = True
    ) -> list[int]:
        return self._encoder.completion(prompt, suffix, allow_special=allow_special)

    def token_bytes(self, token_id: int) -> bytes:
        return self._engine.tokenizer.token_bytes(token_id)

    async def stream(
        self, prompt_ids: Seq[int], params: SamplingParams, *, request_id: str
    ) -> AsyncIterator[Delta]:
        check_admissible(len(prompt_ids), self.context_length)
        validate_params(params, self._engine.tokenizer.vocab_size)
        listener = _Listener(asyncio.get_running_loop(), params.n)
        self._submit(_Add(request_id, list(prompt_ids), params, listener))
        finished = False
        unfinished = params.n
        try:
            while True:
                item = await listener.queue.get()
                if isinstance(item, EnclaveError):
                    finished = True
                    raise item
                unfinished -= item.finish_reason is not None
                finished = unfinished == 0
                yield item
                if finished:
                    return
        finally:
            if not finished:
                self._submit(_Abort(request_id))

    def stats(self) -> EngineStats:
        scheduler = self._engine.scheduler
        with self._cond:
            pending = sum(isinstance(c, _Add) for c in self._inbox)
        return EngineStats(
            running=len(scheduler.running),
            waiting=len(scheduler.waiting) + pending,
            free_slots=scheduler.slots.num_free,
        )

    # Lifecycle ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the engine thread; requests still in flight end with an EngineError."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()

    def _submit(self, command: _Add | _Abort) -> None:
        with self._cond:
            if self._closed:
                raise EngineError("the engine has shut down")
            self._inbox.append(command)
            self._cond.notify()

    # The engine thread -------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._inbox or self._engine.has_work or self._closed):
                    self._cond.wait()
                if self._closed:
                    break
                commands, self._inbox = self._inbox, []
            for command in commands:
                self._apply(command)
            if self._engine.has_work:
                self._step()
        for request_id, listener in list(self._listeners.items()):
            self._engine.abort(request_id)
            listener.send(EngineError("the engine has shut down"))
        self._listeners.clear()

    def _apply(self, command: _Add | _Abort) -> None:
        if isinstance(command, _Abort):
            self._engine.abort(command.request_id)
            self._listeners.pop(command.request_id, None)
            return
        try:
            self._engine.add_request(command.request_id, command.prompt_ids, command.params)
        except EnclaveError as exc:
            command.listener.send(exc)
            return
        self._listeners[command.request_id] = command.listener

    def _step(self) -> None:
        try:
            outputs = self._engine.step()
        except Exception:
            # A bug, not a bad request: end everything in flight loudly rather than hang callers.
            log.exception("engine step failed; ending all requests")
            for request_id, waiting in list(self._listeners.items()):
                self._engine.abort(request_id)
                waiting.send(EngineError("the engine failed; see the server log"))
            self._listeners.clear()
            return
        for output in outputs:
            listener = self._listeners.get(output.request_id)
            if listener is None:
                continue
            if output.delta.finish_reason is not None:
                listener.unfinished -= 1
                if listener.unfinished == 0:
                    del self._listeners[output.request_id]
            if not listener.send(output.delta):
                self._listeners.pop(output.request_id, None)
                self._engine.abort(output.request_id)
