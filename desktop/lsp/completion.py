"""Completions: one fill-in-the-middle generation at a time, the newest request's.

    request -> supersede the running one (its task is cancelled: an open stream is closed, so the
               appliance stops that generation, frees its slot and audits it ``cancelled``)
            -> debounce (a request superseded meanwhile never reaches the appliance)
            -> context (index + open buffers, nothing excluded) + the code around the cursor,
               trimmed to the model's context (:func:`desktop.project.fim.fim_window`)
            -> stream the answer, cut where an inline suggestion should end

``$/cancelRequest`` cancels the request's task the same way (pygls cancels it).

Token counts are estimates (four characters a token); when the appliance says a prompt was too
long, the ratio of its count to ours shrinks the budgets from then on, and the request is tried
once more.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from desktop.client.errors import ContextTooLongError
from desktop.client.prompts import build_fim_request
from desktop.lsp.connection import Connection
from desktop.lsp.project import Project
from desktop.lsp.settings import Settings
from desktop.project.context import Context, estimate_tokens

__all__ = ["Completer", "CompletionAsk", "shape_suggestion"]

_WORDS = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class CompletionAsk:
    path: Path
    text: str  # the whole buffer
    offset: int  # the cursor, as an index into text
    line: int  # 1-based
    buffers: dict[Path, str]  # the other open documents


def shape_suggestion(generated: str, rest_of_line: str) -> str:
    """What to offer from ``generated``: in the middle of a line, the rest of that line only; else
    up to the first blank line (the end of a block). Trailing whitespace is dropped."""
    end = "\n" if rest_of_line.strip() else "\n\n"
    return generated.split(end, 1)[0].rstrip()


class Completer:
    def __init__(
        self,
        connection: Connection,
        project: Project,
        settings: Callable[[], Settings],
    ) -> None:
        self._connection = connection
        self._project = project
        self._settings = settings
        self._current: asyncio.Task[object] | None = None
        # Appliance tokens per estimated token, learnt from "prompt too long" answers.
        self._ratio = 1.0
        self._limit: int | None = None  # the model's context, when only an error has told it

    async def complete(self, ask: CompletionAsk, *, started: Callable[[], None] | None = None) -> str:
        """The suggestion for ``ask``, or "" when there is none (excluded file, nothing generated).
        Raises CancelledError when superseded or cancelled; appliance errors propagate."""
        me = asyncio.current_task()
        previous, self._current = self._current, me
        if previous is not None and previous is not me and not previous.done():
            previous.cancel()
        try:
            settings = self._settings()
            await asyncio.sleep(settings.debounce_ms / 1000)
            if self._project.never_sent(ask.path):
                return ""
            return await self._generate(ask, settings, started)
        finally:
            if self._current is me:
                self._current = None

    def cancel_running(self) -> None:
        if self._current is not None and not self._current.done():
            self._current.cancel()

    async def _generate(self, ask: CompletionAsk, settings: Settings, started: Callable[[], None] | None) -> str:
        session = await self._connection.session()
        prefix, suffix = ask.text[: ask.offset], ask.text[ask.offset :]
        for attempt in (1, 2):
            fim_budget, context_budget = self._budgets(settings, session.context_length or self._limit)
            context = Context(context_budget)
            if context_budget > 0:
                # Search with the words just before the cursor: what is being written.
                question = " ".join(_WORDS.findall(prefix[-400:])[-12:])
                context = await self._project.context(ask.path, ask.text, ask.line, question, ask.buffers, context_budget)
            request = build_fim_request(
                session.model, prefix, suffix, budget=fim_budget, max_tokens=settings.max_tokens,
                context=context, current_path=self._project.relative(ask.path), project_id=self._project.id,
            )
            client = await self._connection.client()
            parts: list[str] = []
            rest_of_line = suffix.split("\n", 1)[0]
            try:
                stream = client.stream_completion(request, on_open=started)
                async with contextlib.aclosing(stream):
                    async for event in stream:
                        parts.append(event.text)
                        text = "".join(parts)
                        # Stop reading (closing the stream stops the generation) once the suggestion is whole.
                        if ("\n" in text and rest_of_line.strip()) or "\n\n" in text:
                            break
            except ContextTooLongError as exc:
                if attempt == 2 or not exc.prompt_tokens:
                    raise
                prompt = request.prompt_text
                sent = estimate_tokens(prompt) + estimate_tokens(request.suffix or "")
                self._ratio = max(self._ratio, exc.prompt_tokens / max(1, sent) * 1.1)
                self._limit = exc.limit or self._limit
                continue
            self._connection.ok()
            return shape_suggestion("".join(parts), rest_of_line)
        return ""

    def _budgets(self, settings: Settings, context_length: int | None) -> tuple[int, int]:
        """(FIM window, project context) budgets in estimated tokens, within the model's context."""
        fim, extra = settings.fim_budget, settings.context_budget
        if context_length is not None:
            room = int((context_length - settings.max_tokens) / self._ratio)
            if fim + extra > room:
                extra = min(extra, room // 4)
                fim = max(16, room - extra)
        elif self._ratio > 1.0:
            fim, extra = max(16, int(fim / self._ratio)), int(extra / self._ratio)
        return fim, extra
