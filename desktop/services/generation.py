"""Asking the appliance: streamed chat answers, inline completions (fill-in-the-middle), history."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from typing import Any

from desktop.client.api import ApplianceClient, StreamEvent
from desktop.client.errors import ContextTooLongError
from desktop.client.prompts import SYSTEM_PROMPT, build_chat_request, build_fim_request
from desktop.project.context import Context
from desktop.project.fim import DEFAULT_FIM_BUDGET
from desktop.project.history import HistoryStore
from desktop.qt import QObject, QThreadPool, Signal
from desktop.services.worker import Job, submit
from shared.errors import InputError

__all__ = ["SYSTEM_PROMPT", "CompletionService", "GenerationService", "HistoryService", "build_chat_request"]

ClientSource = Callable[[], ApplianceClient]


class GenerationService(QObject):
    started = Signal()
    delta = Signal(str)
    reasoning = Signal(str)  # thinking mode: pieces of reasoning, all before the first delta
    finished = Signal(str, object)  # full answer, usage dict or None
    failed = Signal(object)

    def __init__(
        self,
        *,
        client: ClientSource,
        pool: QThreadPool,
        history: HistoryStore,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        max_tokens: int = 512,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._client = client
        self._pool = pool
        self._history = history
        self._max_tokens = max_tokens
        self._clock = clock
        self._cancel: threading.Event | None = None
        self.busy = False

    def ask(
        self, model: str, question: str, context: Context, project_id: str, *, user: str = "", thinking: bool = False
    ) -> None:
        if self.busy:
            self.failed.emit(InputError("an answer is still streaming; stop it first"))
            return
        if not question.strip():
            self.failed.emit(InputError("type a question first"))
            return
        request = build_chat_request(
            model, question, context, project_id, max_tokens=self._max_tokens, thinking=thinking
        )
        client = self._client()
        cancel = threading.Event()
        self._cancel = cancel
        self.busy = True
        labels = [f"{i.path}:{i.start_line}-{i.end_line}" for i in context.items]

        def work(job: Job) -> tuple[str, Any]:
            parts: list[str] = []
            usage = None
            for event in client.stream_chat(request, cancel):
                if event.reasoning:
                    job.item.emit((True, event.reasoning))
                if event.text:
                    parts.append(event.text)
                    job.item.emit((False, event.text))
                usage = event.usage or usage
            answer = "".join(parts)
            self._history.add(project_id, model, question, answer, labels, at=self._clock(), user=user)
            return answer, usage

        self.started.emit()
        submit(self._pool, work, on_done=self._done, on_failed=self._failed, on_item=self._piece, parent=self)

    def _piece(self, item: tuple[bool, str]) -> None:
        is_reasoning, text = item
        (self.reasoning if is_reasoning else self.delta).emit(text)

    @property
    def max_tokens(self) -> int:
        return self._max_tokens

    def cancel(self) -> None:
        if self._cancel is not None:
            self._cancel.set()

    def _done(self, result: tuple[str, Any]) -> None:
        self.busy = False
        self.finished.emit(*result)

    def _failed(self, exc: BaseException) -> None:
        self.busy = False
        self.failed.emit(exc)


class CompletionService(QObject):
    """Fill-in-the-middle completions for the editor; each request has a number, and only the
    newest one's answer is delivered (the editor bumps the number whenever the user types)."""

    completed = Signal(int, str)
    failed = Signal(int, object)
    trimmed = Signal(int, int)  # the model's limit, the new window in (estimated) tokens

    def __init__(self, *, client: ClientSource, pool: QThreadPool, max_tokens: int = 48, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._client = client
        self._pool = pool
        self._max_tokens = max_tokens
        self._budget = DEFAULT_FIM_BUDGET
        self._cancel: threading.Event | None = None
        self.latest = 0

    def request(self, number: int, model: str, prefix: str, suffix: str, *, context_length: int | None = None) -> None:
        """Ask for the text at the cursor between ``prefix`` and ``suffix``, trimmed around the cursor to
        what the model takes (``context_length`` from /v1/models; else the default window)."""
        self.cancel()
        self.latest = number
        budget = self._budget
        if context_length:
            budget = min(budget, max(16, int(context_length * 0.8) - self._max_tokens))
        self._send(number, model, prefix, suffix, budget, retried=False)

    def _send(self, number: int, model: str, prefix: str, suffix: str, budget: int, *, retried: bool) -> None:
        cancel = threading.Event()
        self._cancel = cancel
        client = self._client()
        req = build_fim_request(model, prefix, suffix, budget=budget, max_tokens=self._max_tokens)

        def work(job: Job) -> tuple[int, str]:
            parts: list[str] = []
            event: StreamEvent
            for event in client.stream_completion(req, cancel):
                parts.append(event.text)
            return number, "".join(parts)

        def done(result: tuple[int, str]) -> None:
            n, text = result
            if n == self.latest and not cancel.is_set():
                self.completed.emit(n, text)

        def failed(exc: BaseException) -> None:
            if number != self.latest or cancel.is_set():
                return  # the user typed on: nobody is waiting for this one
            if isinstance(exc, ContextTooLongError) and not retried and exc.limit and exc.prompt_tokens:
                # Our four-characters-a-token estimate was off for this tokenizer: scale the window by
                # how far, remember it for the next requests, and ask once more.
                room = exc.limit - self._max_tokens - 16
                smaller = int(budget * room / exc.prompt_tokens * 0.9)
                if smaller >= 16:
                    self._budget = min(self._budget, smaller)
                    self.trimmed.emit(exc.limit, smaller)
                    self._send(number, model, prefix, suffix, smaller, retried=True)
                    return
            self.failed.emit(number, exc)

        submit(self._pool, work, on_done=done, on_failed=failed, parent=self)

    def cancel(self) -> None:
        if self._cancel is not None:
            self._cancel.set()
            self._cancel = None


class HistoryService(QObject):
    """Reads the local generation history off the GUI thread."""

    loaded = Signal(list)  # list[HistoryEntry]

    def __init__(self, *, history: HistoryStore, pool: QThreadPool, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._history = history
        self._pool = pool

    def load(self, project_id: str, limit: int = 100, *, user: str = "") -> None:
        submit(self._pool, lambda job: self._history.list(project_id, limit=limit, user=user),
               on_done=self.loaded.emit, parent=self)
