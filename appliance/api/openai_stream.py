"""How the OpenAI routes turn generations into answers: the SSE event streams and the whole objects.

    choice_deltas(gens)      every choice's Deltas, numbered as OpenAI does (prompt p, choice j -> p*n+j)
    chat_events / completion_events   chat.completion.chunk / text_completion events, [DONE] last
    collect(gens)            the whole answer: per choice its text, finish reason, token logprobs

Usage is sent exactly once per stream, as OpenAI does: with ``stream_options.include_usage``, on a
last chunk with empty ``choices`` (a client that also read it from the finish chunk would count it
twice — LangChain does); without it, not at all. :data:`CHAT_STREAM_DOC` and
:data:`COMPLETION_STREAM_DOC` document the events in the OpenAPI document (each event's ``data`` is
a chunk, an error object, or ``[DONE]``); :func:`stream_components` adds the chunk schemas they name.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import anyio
from pydantic.json_schema import models_json_schema

from appliance.api.generation import Generation
from appliance.api.sampling import chat_logprobs, completion_logprobs
from appliance.api.sse import DONE, TEXT_SLOT, TextFrames, sse_event
from appliance.api.tool_calls import ToolPlan, ToolStream
from appliance.engine.types import Delta, TokenLogprob
from shared.errors import EnclaveError, EngineError
from shared.schemas import (
    ChatCompletionChunk,
    CompletionChunk,
    CompletionTokensDetails,
    ErrorResponse,
    Usage,
)

__all__ = [
    "CHAT_STREAM_DOC",
    "COMPLETION_STREAM_DOC",
    "Collected",
    "chat_events",
    "choice_deltas",
    "collect",
    "completion_events",
    "stream_components",
]


def _stream_doc(chunk: str, whole: str) -> dict[str, Any]:
    event = {
        "type": "object",
        "required": ["data"],
        "properties": {
            "data": {
                "type": "string",
                "if": {"const": "[DONE]"},
                "then": True,
                "else": {
                    "contentMediaType": "application/json",
                    "contentSchema": {
                        "anyOf": [
                            {"$ref": f"#/components/schemas/{chunk}"},
                            {"$ref": "#/components/schemas/ErrorResponse"},
                        ]
                    },
                },
            }
        },
    }
    return {
        "description": f"The {whole}; with `stream: true`, Server-Sent Events: each `data` is a `{chunk}` "
        "(the last one with empty `choices` and `usage` when `stream_options.include_usage`), or an "
        "error object if the engine fails mid-stream, and the stream ends with `data: [DONE]`",
        "content": {"text/event-stream": {"schema": event}},
    }


CHAT_STREAM_DOC = _stream_doc("ChatCompletionChunk", "chat completion")
COMPLETION_STREAM_DOC = _stream_doc("CompletionChunk", "text completion")


def stream_components() -> dict[str, Any]:
    """The component schemas the stream docs name (the routes' response models do not bring them)."""
    _, top = models_json_schema(
        [
            (ChatCompletionChunk, "serialization"),
            (CompletionChunk, "serialization"),
            (ErrorResponse, "serialization"),
        ],
        ref_template="#/components/schemas/{model}",
    )
    schemas: dict[str, Any] = dict(top.get("$defs", {}))
    # CompletionChunk is Completion under another name: give the stream's name its own entry.
    schemas.setdefault("CompletionChunk", schemas.get("Completion"))
    return schemas


def _usage_of(gens: Sequence[Generation]) -> dict[str, Any]:
    """Usage of a whole request: each prompt once, every choice's tokens; in thinking mode the
    reasoning tokens among them in ``completion_tokens_details``."""
    prompt = sum(g.outcome.prompt_tokens or len(g.prompt_ids) for g in gens)
    completion = sum(g.outcome.completion_tokens for g in gens)
    thinking = any(g.thinking.thinking for g in gens)
    details = CompletionTokensDetails(reasoning_tokens=sum(g.outcome.reasoning_tokens for g in gens))
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        completion_tokens_details=details if thinking else None,
    ).model_dump()


def _finish(reason: str | None) -> str:
    if reason in ("stop", "length"):
        return reason
    raise EngineError(f"generation ended abnormally ({reason or 'no finish reason'})")


def _stream_error(exc: EngineError) -> bytes:
    return sse_event(
        {"error": {"message": str(exc), "type": "server_error", "code": "engine_error", "param": None}}
    )


async def choice_deltas(gens: Sequence[Generation]) -> AsyncGenerator[tuple[int, Delta], None]:
    """Every choice's deltas, numbered as OpenAI numbers them: choice j of prompt p is ``p * n + j``.
    Several prompts run side by side (each its own audited generation)."""
    if len(gens) == 1:
        async with aclosing(gens[0].deltas()) as deltas:
            async for delta in deltas:
                yield delta.index, delta
        return
    queue: asyncio.Queue[tuple[int, Delta] | EnclaveError | None] = asyncio.Queue()

    async def pump(offset: int, gen: Generation) -> None:
        try:
            async with aclosing(gen.deltas()) as deltas:
                async for delta in deltas:
                    await queue.put((offset + delta.index, delta))
        except EnclaveError as exc:  # the consumer raises it, as a single generation would
            await queue.put(exc)
        finally:
            await queue.put(None)

    tasks = [asyncio.create_task(pump(p * g.params.n, g)) for p, g in enumerate(gens)]
    try:
        running = len(tasks)
        while running:
            item = await queue.get()
            if item is None:
                running -= 1
            elif isinstance(item, EnclaveError):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()
        with anyio.CancelScope(shield=True):
            await asyncio.gather(*tasks, return_exceptions=True)


Piece = Callable[[int, Delta], Iterator[bytes]]
Reasoning = Callable[[int, str], bytes]
Closing = Callable[[int, Delta, str], Iterator[bytes]]


async def _stream(
    gens: Sequence[Generation],
    base: dict[str, Any],
    piece: Piece,
    closing: Closing,
    include_usage: bool,
    reasoning: Reasoning | None = None,
) -> AsyncGenerator[bytes, None]:
    """What every endpoint streams: ``piece`` per delta with text (or logprobs), ``closing`` per
    choice's last delta (its last piece and the chunk carrying ``finish_reason``); after the last
    choice, the usage chunk if asked and ``[DONE]``. In thinking mode each piece of reasoning is a
    ``reasoning`` frame, before any text of its choice (the engine never sends reasoning after text).
    An engine failure ends the stream with an error event instead."""
    unfinished = sum(g.params.n for g in gens)
    choices = choice_deltas(gens)
    try:
        async for index, delta in choices:
            if delta.reasoning and reasoning is not None:
                yield reasoning(index, delta.reasoning)
            if delta.finish_reason is None:
                if delta.text or delta.logprobs:
                    for event in piece(index, delta):
                        yield event
                continue
            for event in closing(index, delta, _finish(delta.finish_reason)):
                yield event
            unfinished -= 1
            if unfinished == 0:
                if include_usage:
                    yield sse_event({**base, "choices": [], "usage": _usage_of(gens)})
                # [DONE] before the closing audit record (written when the deltas close).
                yield DONE
                return
        raise EngineError("generation ended without a finish reason")
    except EngineError as exc:
        yield _stream_error(exc)
    finally:
        await choices.aclose()


async def chat_events(
    gens: Sequence[Generation], rid: str, created: int, include_usage: bool, tools: ToolPlan | None = None
) -> AsyncIterator[bytes]:
    """With ``tools``, each choice's text goes through its own DSML parser: tool-call deltas instead
    of the markup (appliance.api.tool_calls)."""
    engine = gens[0].engine
    base = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": engine.model_id}
    with_logprobs = gens[0].params.logprobs is not None
    total = sum(g.params.n for g in gens)

    def choice(index: int, delta: dict[str, Any], finish: str | None, logprobs: Any = None) -> dict[str, Any]:
        return {"index": index, "delta": delta, "finish_reason": finish, "logprobs": logprobs}

    thinking = gens[0].thinking.thinking
    # In thinking mode the opening chunk is DeepSeek's: no content yet, reasoning first.
    opening: dict[str, Any] = (
        {"role": "assistant", "content": None, "reasoning_content": ""}
        if thinking
        else {"role": "assistant", "content": ""}
    )
    for index in range(total):
        yield sse_event({**base, "choices": [choice(index, opening, None)]})
    content = [
        TextFrames({**base, "choices": [choice(i, {"content": TEXT_SLOT}, None)]}) for i in range(total)
    ]
    thoughts = [
        TextFrames({**base, "choices": [choice(i, {"reasoning_content": TEXT_SLOT}, None)]})
        for i in range(total)
    ]
    calls = [ToolStream(tools.parser()) for _ in range(total)] if tools is not None else None

    def reasoning(index: int, text: str) -> bytes:
        return thoughts[index](text)

    def piece(index: int, delta: Delta) -> Iterator[bytes]:
        logprobs = chat_logprobs(engine, delta.logprobs) if with_logprobs else None
        if calls is not None:
            sent = False
            for part in calls[index].feed(delta.text):
                yield sse_event({**base, "choices": [choice(index, part, None, None if sent else logprobs)]})
                sent = True
            if logprobs is not None and not sent:
                yield sse_event({**base, "choices": [choice(index, {}, None, logprobs)]})
        elif logprobs is None:
            if delta.text:
                yield content[index](delta.text)
        else:
            yield sse_event({**base, "choices": [choice(index, {"content": delta.text}, None, logprobs)]})

    def closing(index: int, delta: Delta, finish: str) -> Iterator[bytes]:
        yield from piece(index, delta)
        if calls is not None:
            for part in calls[index].finish():
                yield sse_event({**base, "choices": [choice(index, part, None)]})
            finish = calls[index].finish_reason(finish)
        yield sse_event({**base, "choices": [choice(index, {}, finish)]})

    # aclosing: a client that goes away closes the inner stream too, which writes the audit record.
    events_of = _stream(gens, base, piece, closing, include_usage, reasoning if thinking else None)
    async with aclosing(events_of) as events:
        async for event in events:
            yield event


async def completion_events(
    gens: Sequence[Generation], rid: str, created: int, include_usage: bool, echo: Sequence[str]
) -> AsyncIterator[bytes]:
    engine = gens[0].engine
    base = {"id": rid, "object": "text_completion", "created": created, "model": engine.model_id}
    with_logprobs = gens[0].params.logprobs is not None
    n = gens[0].params.n
    offsets = [len(echo[i // n]) if echo else 0 for i in range(len(gens) * n)]

    def choice(index: int, text: str, finish: str | None, logprobs: Any = None) -> dict[str, Any]:
        return {"index": index, "text": text, "finish_reason": finish, "logprobs": logprobs}

    if echo:
        for index in range(len(gens) * n):
            yield sse_event({**base, "choices": [choice(index, echo[index // n], None)]})
    frames = [TextFrames({**base, "choices": [choice(i, TEXT_SLOT, None)]}) for i in range(len(offsets))]

    def logprobs_of(index: int, delta: Delta) -> dict[str, Any]:
        out = completion_logprobs(engine, delta.logprobs, offsets[index])
        offsets[index] += sum(len(t) for t in out["tokens"])
        return out

    def piece(index: int, delta: Delta) -> Iterator[bytes]:
        if not with_logprobs:
            yield frames[index](delta.text)
        else:
            yield sse_event({**base, "choices": [choice(index, delta.text, None, logprobs_of(index, delta))]})

    def closing(index: int, delta: Delta, finish: str) -> Iterator[bytes]:
        logprobs = logprobs_of(index, delta) if with_logprobs else None
        yield sse_event({**base, "choices": [choice(index, delta.text, finish, logprobs)]})

    async with aclosing(_stream(gens, base, piece, closing, include_usage)) as events:
        async for event in events:
            yield event


@dataclass
class Collected:
    """One choice of a whole (non-streamed) answer."""

    text: str = ""
    finish: str = "stop"
    tokens: list[TokenLogprob] = field(default_factory=list)
    logprobs: dict[str, Any] | None = None
    reasoning: str | None = None  # thinking mode


async def collect(gens: Sequence[Generation]) -> tuple[list[Collected], Usage]:
    total = sum(g.params.n for g in gens)
    pieces: list[list[str]] = [[] for _ in range(total)]
    thoughts: list[list[str]] = [[] for _ in range(total)]
    out = [Collected() for _ in range(total)]
    finishes: list[str | None] = [None] * total
    async with aclosing(choice_deltas(gens)) as choices:
        async for index, delta in choices:
            pieces[index].append(delta.text)
            thoughts[index].append(delta.reasoning)
            out[index].tokens.extend(delta.logprobs)
            finishes[index] = delta.finish_reason or finishes[index]
    for index, choice in enumerate(out):
        choice.text = "".join(pieces[index])
        choice.reasoning = "".join(thoughts[index])
        choice.finish = _finish(finishes[index])
    return out, Usage.model_validate(_usage_of(gens))
