"""OpenAI-compatible routes: ``POST /v1/chat/completions``, ``POST /v1/completions`` (``suffix`` =
fill-in-the-middle), ``GET /v1/models``.

Streams are Server-Sent Events of ``chat.completion.chunk`` / ``text_completion`` objects ending in
``data: [DONE]``. Usage rides on the chunk that carries ``finish_reason``; with
``stream_options.include_usage`` a last chunk with empty ``choices`` and ``usage`` follows as well,
which is where OpenAI's own clients look for it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from contextlib import aclosing
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from appliance.api.auditing import Caller
from appliance.api.errors import ERROR_RESPONSES, ApiError
from appliance.api.generation import Generation, admit, check_model
from appliance.api.prompt_input import encode_prompt
from appliance.api.sse import DONE, TEXT_SLOT, SSEResponse, TextFrames, sse_event
from appliance.api.state import app_state, caller_with, request_info
from appliance.auth.roles import Permission
from appliance.engine.types import ChatMessage
from shared.errors import EngineError
from shared.schemas import (
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    ModelCard,
    ModelList,
    Usage,
)

__all__ = ["router"]

router = APIRouter(tags=["openai"])

_STREAM_DOC: dict[str, Any] = {
    "description": "The result; with `stream: true`, Server-Sent Events ending in `data: [DONE]`",
    "content": {"text/event-stream": {"schema": {"type": "string"}}},
}
_GEN_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    404: ERROR_RESPONSES[400] | {"description": "Unknown model, or one the caller's policy does not allow"},
    429: ERROR_RESPONSES[400] | {"description": "A quota of the caller's policy; see Retry-After"},
}


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
    ).model_dump()


def _finish(reason: str | None) -> str:
    if reason in ("stop", "length"):
        return reason
    raise EngineError(f"generation ended abnormally ({reason or 'no finish reason'})")


def _stream_error(exc: EngineError) -> bytes:
    return sse_event(
        {"error": {"message": str(exc), "type": "server_error", "code": "engine_error", "param": None}}
    )


async def _stream(
    gen: Generation,
    base: dict[str, Any],
    frame: TextFrames,
    closing: Callable[[str, str, dict[str, int]], Iterator[bytes]],
    include_usage: bool,
) -> AsyncGenerator[bytes, None]:
    """What both endpoints stream: a frame per piece of text, then ``closing(text, finish, usage)``
    (the last piece and the chunk carrying ``finish_reason``), the usage chunk if asked, ``[DONE]``.
    An engine failure ends the stream with an error event instead."""
    deltas = gen.deltas()
    try:
        async for delta in deltas:
            if delta.finish_reason is None:
                if delta.text:
                    yield frame(delta.text)
                continue
            finish = _finish(delta.finish_reason)
            usage = _usage(delta.prompt_tokens, delta.completion_tokens)
            for event in closing(delta.text, finish, usage):
                yield event
            if include_usage:
                yield sse_event({**base, "choices": [], "usage": usage})
            # [DONE] before the closing audit record (written when deltas closes).
            yield DONE
            return
        raise EngineError("generation ended without a finish reason")
    except EngineError as exc:
        yield _stream_error(exc)
    finally:
        await deltas.aclose()


async def _chat_events(gen: Generation, rid: str, created: int, include_usage: bool) -> AsyncIterator[bytes]:
    base = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": gen.engine.model_id}

    def choice(delta: dict[str, str], finish: str | None) -> dict[str, Any]:
        return {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}

    yield sse_event({**base, "choices": [choice({"role": "assistant", "content": ""}, None)]})
    content = TextFrames({**base, "choices": [choice({"content": TEXT_SLOT}, None)]})

    def closing(text: str, finish: str, usage: dict[str, int]) -> Iterator[bytes]:
        if text:
            yield content(text)
        yield sse_event({**base, "choices": [choice({}, finish)], "usage": usage})

    # aclosing: a client that goes away closes the inner stream too, which writes the audit record.
    async with aclosing(_stream(gen, base, content, closing, include_usage)) as events:
        async for event in events:
            yield event


async def _completion_events(
    gen: Generation, rid: str, created: int, include_usage: bool
) -> AsyncIterator[bytes]:
    base = {"id": rid, "object": "text_completion", "created": created, "model": gen.engine.model_id}

    def choice(text: str, finish: str | None) -> dict[str, Any]:
        return {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}

    text = TextFrames({**base, "choices": [choice(TEXT_SLOT, None)]})

    def closing(last: str, finish: str, usage: dict[str, int]) -> Iterator[bytes]:
        yield sse_event({**base, "choices": [choice(last, finish)], "usage": usage})

    async with aclosing(_stream(gen, base, text, closing, include_usage)) as events:
        async for event in events:
            yield event


async def _collect(gen: Generation) -> tuple[str, str, Usage]:
    pieces: list[str] = []
    finish: str | None = None
    deltas = gen.deltas()
    try:
        async for delta in deltas:
            pieces.append(delta.text)
            finish = delta.finish_reason
    finally:
        await deltas.aclose()
    out = gen.outcome
    usage = Usage(
        prompt_tokens=out.prompt_tokens,
        completion_tokens=out.completion_tokens,
        total_tokens=out.prompt_tokens + out.completion_tokens,
    )
    return "".join(pieces), _finish(finish), usage


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletion,
    responses={**_GEN_RESPONSES, 200: _STREAM_DOC},
    summary="Chat completion (OpenAI-compatible)",
)
async def chat_completions(
    body: ChatCompletionRequest, request: Request, caller: Caller = Depends(caller_with(Permission.GENERATE))
) -> Response | ChatCompletion:
    state = app_state(request)
    started = state.clock.monotonic()
    engine = check_model(state.engine, caller, body.model)
    messages = [ChatMessage(m.role, m.text(), m.reasoning_content) for m in body.messages]
    texts = [
        (f"messages[{i}].{name}", text)
        for i, m in enumerate(messages)
        for name, text in (("content", m.content), ("reasoning_content", m.reasoning or ""))
    ]
    prompt_ids = await encode_prompt(
        auditor=state.auditor,
        caller=caller,
        info=request_info(request),
        endpoint="chat.completions",
        model_id=engine.model_id,
        max_bytes=state.settings.max_prompt_bytes,
        texts=texts,
        encode=lambda: engine.encode_chat(messages),
    )
    gen = await admit(
        engine=engine,
        auditor=state.auditor,
        quotas=state.quotas,
        metrics=state.metrics,
        clock=state.clock,
        caller=caller,
        info=request_info(request),
        endpoint="chat.completions",
        prompt_ids=prompt_ids,
        requested_max_tokens=body.output_limit(),
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
        stop=body.stop_list(),
        stream=body.stream,
        metadata=body.enclave,
        end_user=body.user,
        prompt_content=[{"role": m.role, "content": m.content} for m in messages],
        started=started,
    )
    rid = "chatcmpl-" + uuid.uuid4().hex
    created = int(state.clock.now().timestamp())
    if body.stream:
        return SSEResponse(_chat_events(gen, rid, created, body.include_usage))
    text, finish, usage = await _collect(gen)
    return ChatCompletion.model_validate(
        {
            "id": rid,
            "created": created,
            "model": engine.model_id,
            "usage": usage,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
            ],
        }
    )


@router.post(
    "/v1/completions",
    response_model=Completion,
    responses={**_GEN_RESPONSES, 200: _STREAM_DOC},
    summary="Text completion; with `suffix`, fill-in-the-middle",
)
async def completions(
    body: CompletionRequest, request: Request, caller: Caller = Depends(caller_with(Permission.GENERATE))
) -> Response | Completion:
    state = app_state(request)
    started = state.clock.monotonic()
    engine = check_model(state.engine, caller, body.model)
    if body.suffix is not None and not engine.supports_fim:
        raise ApiError(400, f"model {engine.model_id} does not support fill-in-the-middle", param="suffix")
    endpoint = "completions.fim" if body.suffix is not None else "completions"
    prompt_ids = await encode_prompt(
        auditor=state.auditor,
        caller=caller,
        info=request_info(request),
        endpoint=endpoint,
        model_id=engine.model_id,
        max_bytes=state.settings.max_prompt_bytes,
        texts=[("prompt", body.prompt), ("suffix", body.suffix or "")],
        encode=lambda: engine.encode_completion(body.prompt, body.suffix),
    )
    content: dict[str, Any] = {"prompt": body.prompt}
    if body.suffix is not None:
        content["suffix"] = body.suffix
    gen = await admit(
        engine=engine,
        auditor=state.auditor,
        quotas=state.quotas,
        metrics=state.metrics,
        clock=state.clock,
        caller=caller,
        info=request_info(request),
        endpoint=endpoint,
        prompt_ids=prompt_ids,
        requested_max_tokens=body.output_limit(),
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
        stop=body.stop_list(),
        stream=body.stream,
        metadata=body.enclave,
        end_user=body.user,
        prompt_content=content,
        started=started,
    )
    rid = "cmpl-" + uuid.uuid4().hex
    created = int(state.clock.now().timestamp())
    if body.stream:
        return SSEResponse(_completion_events(gen, rid, created, body.include_usage))
    text, finish, usage = await _collect(gen)
    return Completion.model_validate(
        {
            "id": rid,
            "created": created,
            "model": engine.model_id,
            "usage": usage,
            "choices": [{"index": 0, "text": text, "finish_reason": finish}],
        }
    )


@router.get(
    "/v1/models", response_model=ModelList, responses=ERROR_RESPONSES, summary="Models the caller may use"
)
async def list_models(
    request: Request, caller: Caller = Depends(caller_with(Permission.MODELS_READ))
) -> ModelList:
    state = app_state(request)
    engine = state.engine
    cards: list[ModelCard] = []
    if engine is not None and caller.allows_model(engine.model_id):
        cards.append(ModelCard(id=engine.model_id, created=state.started_at, owned_by="enclave"))
    return ModelList(data=cards)
