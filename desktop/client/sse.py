"""Reading a generation stream: Server-Sent Events lines -> chunks -> :class:`StreamEvent`.

Shared by the blocking client (:mod:`desktop.client.api`) and the asyncio one
(:mod:`desktop.client.aio`), so both read the appliance's streams the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

from desktop.client.errors import error_for_status
from shared.schemas import ChatCompletionChunk, CompletionChunk

__all__ = ["DONE", "StreamEvent", "chat_events", "completion_events", "sse_payload"]

DONE: Final = object()  # the ``data: [DONE]`` line


@dataclass(frozen=True)
class StreamEvent:
    """One piece of a streamed answer: text, and on the last chunk the finish reason and usage;
    in thinking mode pieces of ``reasoning`` come first."""

    text: str
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    reasoning: str = ""


def sse_payload(line: str) -> dict[str, Any] | object | None:
    """The JSON chunk on ``line``, :data:`DONE` at the end, None for other lines; an error event
    raises the error it names."""
    if not line.startswith("data:"):
        return None
    data = line[5:].strip()
    if data == "[DONE]":
        return DONE
    payload: dict[str, Any] = json.loads(data)
    if "error" in payload:
        err = payload["error"]
        raise error_for_status(500, err.get("message", "generation failed"), err.get("code"), None)
    return payload


def chat_events(payload: Any) -> Iterator[StreamEvent]:
    chunk = ChatCompletionChunk.model_validate(payload)
    usage = chunk.usage.model_dump() if chunk.usage else None
    for choice in chunk.choices:
        yield StreamEvent(choice.delta.content or "", choice.finish_reason, usage, choice.delta.reasoning_content or "")
    if not chunk.choices and usage:
        yield StreamEvent("", None, usage)


def completion_events(payload: Any) -> Iterator[StreamEvent]:
    chunk = CompletionChunk.model_validate(payload)
    usage = chunk.usage.model_dump() if chunk.usage else None
    for choice in chunk.choices:
        yield StreamEvent(choice.text, choice.finish_reason, usage)
    if not chunk.choices and usage:
        yield StreamEvent("", None, usage)
