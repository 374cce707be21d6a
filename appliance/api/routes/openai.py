"""OpenAI-compatible routes: ``POST /v1/chat/completions``, ``POST /v1/completions`` (``suffix`` =
fill-in-the-middle), ``GET /v1/models``.

Streams are Server-Sent Events of ``chat.completion.chunk`` / ``text_completion`` objects ending in
``data: [DONE]``. Usage is sent exactly once per stream, as OpenAI does: with
``stream_options.include_usage``, on a last chunk with empty ``choices`` (a client that also read it
from the finish chunk would count it twice — LangChain does); without it, not at all.

``POST /v1/fim/completions`` is Mistral's fill-in-the-middle (what Continue posts): ``prompt`` +
``suffix`` in, chat-shaped objects out (``message.content`` / ``delta.content``). A FIM prompt longer
than the context is trimmed around the cursor (:mod:`appliance.api.fim`) instead of refused.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from contextlib import aclosing
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from appliance.api.auditing import Caller
from appliance.api.errors import ERROR_RESPONSES, ApiError
from appliance.api.fim import encode_fim_within, fim_output_reserve
from appliance.api.generation import Generation, admit, check_model
from appliance.api.prompt_input import encode_prompt
from appliance.api.reasoning import plan_thinking, served_model
from appliance.api.sse import DONE, TEXT_SLOT, SSEResponse, TextFrames, sse_event
from appliance.api.state import app_state, caller_with, request_info
from appliance.api.tool_calls import ToolPlan, ToolStream, chat_messages, plan_tools, tool_calls_out
from appliance.auth.roles import Permission
from appliance.engine.prompt import FIM_BEGIN, FIM_END, FIM_HOLE
from appliance.engine.tokenizer import BOS_TOKEN
from appliance.engine.types import GenerationService
from shared.errors import EngineError
from shared.schemas import (
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    CompletionTokensDetails,
    FimCompletionRequest,
    ModelCapabilities,
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


_RAW_FIM = re.compile(
    f"(?:{re.escape(BOS_TOKEN)})?{re.escape(FIM_BEGIN)}(?P<prefix>.*){re.escape(FIM_HOLE)}"
    f"(?P<suffix>.*){re.escape(FIM_END)}",
    re.DOTALL,
)


def chat_completion(
    rid: str,
    created: int,
    model: str,
    text: str,
    finish: str,
    usage: Usage,
    reasoning: str | None = None,
    tools: ToolPlan | None = None,
) -> ChatCompletion:
    """The whole-answer object of a chat (or Mistral-shape FIM) generation; ``reasoning`` in
    thinking mode; with ``tools``, the text is parsed for calls (appliance.api.tool_calls)."""
    message: dict[str, Any] = {"role": "assistant", "content": text, "reasoning_content": reasoning}
    if tools is not None:
        stream = ToolStream(tools.parser())
        stream.feed(text)
        stream.finish()
        if stream.parser.calls:
            message["content"] = "".join(stream.content) or None
            message["tool_calls"] = tool_calls_out(stream.parser.calls)
            finish = stream.finish_reason(finish)
    return ChatCompletion.model_validate(
        {
            "id": rid,
            "created": created,
            "model": model,
            "usage": usage,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        }
    )


def _usage(prompt_tokens: int, completion_tokens: int, reasoning_tokens: int | None = None) -> dict[str, Any]:
    """``reasoning_tokens`` (thinking mode only) goes in ``completion_tokens_details``."""
    return Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
        completion_tokens_details=(
            None if reasoning_tokens is None else CompletionTokensDetails(reasoning_tokens=reasoning_tokens)
        ),
    ).model_dump()


def _reasoning_tokens(gen: Generation, count: int) -> int | None:
    return count if gen.thinking.thinking else None


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
    frame: Callable[[str], Iterator[bytes]],
    closing: Callable[[str, str, dict[str, Any]], Iterator[bytes]],
    include_usage: bool,
    reasoning: TextFrames | None = None,
) -> AsyncGenerator[bytes, None]:
    """What both endpoints stream: a frame per piece of text, then ``closing(text, finish, usage)``
    (the last piece and the chunk carrying ``finish_reason``), the usage chunk if asked, ``[DONE]``.
    In thinking mode each piece of reasoning is a ``reasoning`` frame, before any text (the engine
    never sends reasoning after text). An engine failure ends the stream with an error event instead."""
    deltas = gen.deltas()
    try:
        async for delta in deltas:
            if delta.reasoning and reasoning is not None:
                yield reasoning(delta.reasoning)
            if delta.finish_reason is None:
                if delta.text:
                    for event in frame(delta.text):
                        yield event
                continue
            finish = _finish(delta.finish_reason)
            usage = _usage(
                delta.prompt_tokens, delta.completion_tokens, _reasoning_tokens(gen, delta.reasoning_tokens)
            )
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


async def _chat_events(
    gen: Generation, rid: str, created: int, include_usage: bool, tools: ToolPlan | None = None
) -> AsyncIterator[bytes]:
    base = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": gen.engine.model_id}

    def choice(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        return {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}

    thinking = gen.thinking.thinking
    # In thinking mode the opening chunk is DeepSeek's: no content yet, reasoning first.
    opening = {"role": "assistant", "content": None, "reasoning_content": ""} if thinking else None
    yield sse_event({**base, "choices": [choice(opening or {"role": "assistant", "content": ""}, None)]})
    content = TextFrames({**base, "choices": [choice({"content": TEXT_SLOT}, None)]})
    reasoning = TextFrames({**base, "choices": [choice({"reasoning_content": TEXT_SLOT}, None)]})
    calls = ToolStream(tools.parser()) if tools is not None else None

    def frames(text: str) -> Iterator[bytes]:
        if calls is None:
            if text:
                yield content(text)
            return
        for delta in calls.feed(text):
            yield sse_event({**base, "choices": [choice(delta, None)]})

    def closing(text: str, finish: str, usage: dict[str, Any]) -> Iterator[bytes]:
        yield from frames(text)
        if calls is not None:
            for delta in calls.finish():
                yield sse_event({**base, "choices": [choice(delta, None)]})
            finish = calls.finish_reason(finish)
        yield sse_event({**base, "choices": [choice({}, finish)]})

    # aclosing: a client that goes away closes the inner stream too, which writes the audit record.
    events_of = _stream(gen, base, frames, closing, include_usage, reasoning if thinking else None)
    async with aclosing(events_of) as events:
        async for event in events:
            yield event


async def _completion_events(
    gen: Generation, rid: str, created: int, include_usage: bool
) -> AsyncIterator[bytes]:
    base = {"id": rid, "object": "text_completion", "created": created, "model": gen.engine.model_id}

    def choice(text: str, finish: str | None) -> dict[str, Any]:
        return {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}

    text = TextFrames({**base, "choices": [choice(TEXT_SLOT, None)]})

    def frames(piece: str) -> Iterator[bytes]:
        yield text(piece)

    def closing(last: str, finish: str, usage: dict[str, Any]) -> Iterator[bytes]:
        yield sse_event({**base, "choices": [choice(last, finish)]})

    async with aclosing(_stream(gen, base, frames, closing, include_usage)) as events:
        async for event in events:
            yield event


async def _collect(gen: Generation) -> tuple[str, str, Usage]:
    """The whole answer (``gen.outcome.reasoning`` holds the reasoning once this returns)."""
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
    usage = Usage.model_validate(
        _usage(out.prompt_tokens, out.completion_tokens, _reasoning_tokens(gen, out.reasoning_tokens))
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
    model, by_model = served_model(body.model, state.engine.model_id if state.engine else None)
    thinking = plan_thinking(body, by_model=by_model)
    engine = check_model(state.engine, caller, model, max_waiting=state.settings.max_waiting)
    state.disk.refuse_if_low()
    messages = chat_messages(body)
    tools = plan_tools(body)
    if tools is not None and tools.required and thinking.thinking:
        # The call grammar starts at the first token, which in thinking mode is reasoning.
        raise ApiError(
            400,
            "tool_choice required or named is not available in thinking mode; use auto",
            param="tool_choice",
        )
    constraint = tools.constraint() if tools is not None else None
    texts = [
        (f"messages[{i}].{name}", text)
        for i, m in enumerate(messages)
        for name, text in (
            ("content", m.content),
            ("reasoning_content", m.reasoning or ""),
            *((f"tool_calls[{k}].function.arguments", c.arguments) for k, c in enumerate(m.tool_calls)),
        )
    ]
    prompt_ids = await encode_prompt(
        auditor=state.auditor,
        caller=caller,
        info=request_info(request),
        endpoint="chat.completions",
        model_id=engine.model_id,
        max_bytes=state.settings.max_prompt_bytes,
        texts=texts,
        encode=lambda: engine.encode_chat(
            messages,
            tools=tools.tools if tools is not None else None,
            thinking=thinking.thinking,
            reasoning_effort=thinking.effort,
        ),
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
        temperature=body.sampling_temperature,
        top_p=body.sampling_top_p,
        top_k=body.top_k or 0,
        seed=body.seed,
        stop=body.stop_list(),
        stream=body.streaming,
        metadata=body.enclave,
        end_user=body.user,
        prompt_content=[
            {
                "role": m.role,
                "content": m.content,
                **({"reasoning_content": m.reasoning} if m.reasoning else {}),
                **({"tool_calls": [vars(c) for c in m.tool_calls]} if m.tool_calls else {}),
            }
            for m in messages
        ],
        started=started,
        thinking=thinking,
        constraint=constraint,
    )
    rid = "chatcmpl-" + uuid.uuid4().hex
    created = int(state.clock.now().timestamp())
    if body.streaming:
        return SSEResponse(_chat_events(gen, rid, created, body.include_usage, tools))
    text, finish, usage = await _collect(gen)
    reasoning = gen.outcome.reasoning if thinking.thinking else None
    return chat_completion(rid, created, engine.model_id, text, finish, usage, reasoning, tools)


def _raw_fim(prompt: str) -> tuple[str, str] | None:
    """(prefix, suffix) of a prompt written in DeepSeek's FIM template (Continue's raw template
    prompt), so it gets the same encoding and trimming as ``suffix``; None for any other prompt."""
    match = _RAW_FIM.fullmatch(prompt)
    return (match["prefix"], match["suffix"]) if match else None


async def _text_generation(
    request: Request,
    caller: Caller,
    body: CompletionRequest | FimCompletionRequest,
    prompt: str,
    suffix: str | None,
    seed: int | None,
) -> Generation:
    """Admit a text completion (``suffix`` = fill-in-the-middle) for either completions route."""
    state = app_state(request)
    started = state.clock.monotonic()
    engine = check_model(state.engine, caller, body.model, max_waiting=state.settings.max_waiting)
    state.disk.refuse_if_low()
    if suffix is None and (raw := _raw_fim(prompt)) is not None and engine.supports_fim:
        prompt, suffix = raw
    if suffix is not None and not engine.supports_fim:
        raise ApiError(400, f"model {engine.model_id} does not support fill-in-the-middle", param="suffix")
    endpoint = "completions.fim" if suffix is not None else "completions"
    requested = body.output_limit()

    def encode() -> list[int]:
        if suffix is None:
            return engine.encode_completion(prompt)
        budget = engine.context_length - fim_output_reserve(engine.context_length, requested)
        return encode_fim_within(engine.encode_completion, prompt, suffix, budget)

    prompt_ids = await encode_prompt(
        auditor=state.auditor,
        caller=caller,
        info=request_info(request),
        endpoint=endpoint,
        model_id=engine.model_id,
        max_bytes=state.settings.max_prompt_bytes,
        texts=[("prompt", prompt), ("suffix", suffix or "")],
        encode=encode,
    )
    content: dict[str, Any] = {"prompt": prompt}
    if suffix is not None:
        content["suffix"] = suffix
    return await admit(
        engine=engine,
        auditor=state.auditor,
        quotas=state.quotas,
        metrics=state.metrics,
        clock=state.clock,
        caller=caller,
        info=request_info(request),
        endpoint=endpoint,
        prompt_ids=prompt_ids,
        requested_max_tokens=requested,
        temperature=body.sampling_temperature,
        top_p=body.sampling_top_p,
        top_k=body.top_k or 0,
        seed=seed,
        stop=body.stop_list(),
        stream=body.streaming,
        metadata=body.enclave,
        end_user=body.user,
        prompt_content=content,
        started=started,
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
    gen = await _text_generation(request, caller, body, body.prompt_text, body.suffix, body.seed)
    rid = "cmpl-" + uuid.uuid4().hex
    created = int(app_state(request).clock.now().timestamp())
    if body.streaming:
        return SSEResponse(_completion_events(gen, rid, created, body.include_usage))
    text, finish, usage = await _collect(gen)
    return Completion.model_validate(
        {
            "id": rid,
            "created": created,
            "model": gen.engine.model_id,
            "usage": usage,
            "choices": [{"index": 0, "text": text, "finish_reason": finish}],
        }
    )


@router.post(
    "/v1/fim/completions",
    response_model=ChatCompletion,
    responses={**_GEN_RESPONSES, 200: _STREAM_DOC},
    summary="Fill-in-the-middle, Mistral's shape (prompt + suffix in, chat-shaped out)",
)
async def fim_completions(
    body: FimCompletionRequest, request: Request, caller: Caller = Depends(caller_with(Permission.GENERATE))
) -> Response | ChatCompletion:
    seed = body.random_seed if body.random_seed is not None else body.seed
    gen = await _text_generation(request, caller, body, body.prompt, body.suffix or "", seed)
    rid = "fim-" + uuid.uuid4().hex
    created = int(app_state(request).clock.now().timestamp())
    if body.streaming:
        return SSEResponse(_chat_events(gen, rid, created, body.include_usage))
    text, finish, usage = await _collect(gen)
    return chat_completion(rid, created, gen.engine.model_id, text, finish, usage)


def _card(engine: GenerationService, created: int) -> ModelCard:
    n = engine.context_length
    return ModelCard(
        id=engine.model_id,
        created=created,
        owned_by="enclave",
        context_length=n,
        max_model_len=n,
        max_input_tokens=n - 1,
        max_tokens=n,
        max_output_tokens=n - 1,
        capabilities=ModelCapabilities.model_validate(
            {"fim": engine.supports_fim, "tools": True, "json": False, "logprobs": False}
        ),
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
        cards.append(_card(engine, state.started_at))
    return ModelList(data=cards)


@router.get(
    "/v1/models/{model_id:path}",
    response_model=ModelCard,
    responses={**ERROR_RESPONSES, 404: ERROR_RESPONSES[400] | {"description": "Unknown or not allowed"}},
    summary="One model: its context length and capabilities",
)
async def get_model(
    model_id: str, request: Request, caller: Caller = Depends(caller_with(Permission.MODELS_READ))
) -> ModelCard:
    state = app_state(request)
    engine = state.engine
    # A reasoner id (`<model>-reasoner`) is the installed model in thinking mode: the same card.
    served, by_alias = served_model(model_id, engine.model_id if engine else None)
    if engine is None or served != engine.model_id or not caller.allows_model(served):
        raise ApiError(
            404,
            f"The model `{model_id}` does not exist or you do not have access to it.",
            code="model_not_found",
            param="model",
        )
    card = _card(engine, state.started_at)
    return card.model_copy(update={"id": model_id}) if by_alias else card
