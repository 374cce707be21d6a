"""OpenAI-compatible routes: ``POST /v1/chat/completions``, ``POST /v1/completions`` (``suffix`` =
fill-in-the-middle), ``GET /v1/models``.

Streams are Server-Sent Events of ``chat.completion.chunk`` / ``text_completion`` objects ending in
``data: [DONE]`` (:mod:`appliance.api.openai_stream`, usage exactly once). The sampling surface —
penalties, ``logit_bias``, ``logprobs``, ``response_format``, ``n`` — is checked against the model
in :mod:`appliance.api.sampling`. ``n`` choices of a prompt share one prefill in the engine; a
``prompt`` list on /v1/completions is one audited generation per prompt, run side by side, with
choice ``p * n + j`` for choice ``j`` of prompt ``p`` (OpenAI's numbering).

``POST /v1/fim/completions`` is Mistral's fill-in-the-middle (what Continue posts): ``prompt`` +
``suffix`` in, chat-shaped objects out (``message.content`` / ``delta.content``). A FIM prompt longer
than the context is trimmed around the cursor (:mod:`appliance.api.fim`) instead of refused.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from appliance.api.auditing import Caller
from appliance.api.body_parse import OffLoopBodyRoute
from appliance.api.errors import ERROR_RESPONSES, ApiError
from appliance.api.fim import encode_fim_within, fim_output_reserve
from appliance.api.generation import Generation, admit, check_model
from appliance.api.openai_stream import (
    CHAT_STREAM_DOC,
    COMPLETION_STREAM_DOC,
    Collected,
    chat_events,
    collect,
    completion_events,
)
from appliance.api.prompt_input import encode_prompt
from appliance.api.reasoning import plan_thinking, served_model
from appliance.api.sampling import (
    Extras,
    chat_logprobs,
    check_token_ids,
    completion_logprobs,
    constraint_for,
    sampling_extras,
)
from appliance.api.sse import SSEResponse
from appliance.api.state import app_state, caller_with, request_info
from appliance.api.tool_calls import ToolPlan, ToolStream, chat_messages, plan_tools, tool_calls_out
from appliance.auth.roles import Permission
from appliance.engine.prompt import FIM_BEGIN, FIM_END, FIM_HOLE
from appliance.engine.tokenizer import BOS_TOKEN
from appliance.engine.types import GenerationService
from shared.schemas import (
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    FimCompletionRequest,
    ModelCapabilities,
    ModelCard,
    ModelList,
    Usage,
)

__all__ = ["router"]

# Prompts are the big bodies: they are parsed and validated off the event loop.
router = APIRouter(tags=["openai"], route_class=OffLoopBodyRoute)

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
    choices: Sequence[Collected],
    usage: Usage,
    tools: ToolPlan | None = None,
) -> ChatCompletion:
    """The whole-answer object of a chat (or Mistral-shape FIM) generation; each choice's
    ``reasoning`` in thinking mode; with ``tools``, each choice's text is parsed for calls
    (appliance.api.tool_calls)."""
    out = []
    for i, c in enumerate(choices):
        message: dict[str, Any] = {"role": "assistant", "content": c.text, "reasoning_content": c.reasoning}
        finish = c.finish
        if tools is not None:
            stream = ToolStream(tools.parser())
            stream.feed(c.text)
            stream.finish()
            if stream.parser.calls:
                message["content"] = "".join(stream.content) or None
                message["tool_calls"] = tool_calls_out(stream.parser.calls)
                finish = stream.finish_reason(finish)
        out.append({"index": i, "message": message, "finish_reason": finish, "logprobs": c.logprobs})
    return ChatCompletion.model_validate(
        {
            "id": rid,
            "created": created,
            "model": model,
            "usage": usage,
            "choices": out,
        }
    )


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletion,
    responses={**_GEN_RESPONSES, 200: CHAT_STREAM_DOC},
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
    structured = constraint_for(body.response_format)
    if structured is not None and thinking.thinking:
        # The grammar starts at the first token, which in thinking mode is reasoning.
        raise ApiError(400, "response_format is not available in thinking mode", param="response_format")
    if constraint is not None and structured is not None:
        # One grammar per sequence: a required call and a JSON answer cannot both hold.
        raise ApiError(400, "response_format does not go with a required tool call", param="response_format")
    extras = sampling_extras(
        body,
        engine,
        max_n=state.settings.max_n,
        logprobs=body.logprobs_k,
        constraint=constraint or structured,
    )
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
        extras=extras,
    )
    rid = "chatcmpl-" + uuid.uuid4().hex
    created = int(state.clock.now().timestamp())
    if body.streaming:
        return SSEResponse(chat_events([gen], rid, created, body.include_usage, tools))
    choices, usage = await collect([gen])
    if extras.logprobs is not None:
        for choice in choices:
            choice.logprobs = chat_logprobs(engine, choice.tokens)
    if not thinking.thinking:
        for choice in choices:
            choice.reasoning = None
    return chat_completion(rid, created, engine.model_id, choices, usage, tools)


def _raw_fim(prompt: str) -> tuple[str, str] | None:
    """(prefix, suffix) of a prompt written in DeepSeek's FIM template (Continue's raw template
    prompt), so it gets the same encoding and trimming as ``suffix``; None for any other prompt."""
    match = _RAW_FIM.fullmatch(prompt)
    return (match["prefix"], match["suffix"]) if match else None


@dataclass(frozen=True)
class _TextRequest:
    """What both completions routes admit per prompt."""

    body: CompletionRequest | FimCompletionRequest
    engine: GenerationService
    extras: Extras
    seed: int | None
    started: float


async def _text_generation(
    request: Request, caller: Caller, job: _TextRequest, prompt: str | list[int], suffix: str | None
) -> Generation:
    """Admit one text completion (``suffix`` = fill-in-the-middle) for either completions route;
    ``prompt`` is text, or token ids (checked against the vocabulary, used as given)."""
    state = app_state(request)
    engine, body = job.engine, job.body
    if (
        isinstance(prompt, str)
        and suffix is None
        and (raw := _raw_fim(prompt)) is not None
        and engine.supports_fim
    ):
        prompt, suffix = raw
    if suffix is not None and not engine.supports_fim:
        raise ApiError(400, f"model {engine.model_id} does not support fill-in-the-middle", param="suffix")
    endpoint = "completions.fim" if suffix is not None else "completions"
    requested = body.output_limit()
    content: dict[str, Any]
    if isinstance(prompt, list):
        ids = check_token_ids(prompt, engine, "prompt")
        if suffix is not None:
            raise ApiError(400, "suffix needs a text prompt, not token ids", param="suffix")
        prompt_ids, content = ids, {"prompt_token_ids": ids}
    else:
        text = prompt

        def encode() -> list[int]:
            if suffix is None:
                return engine.encode_completion(text)
            budget = engine.context_length - fim_output_reserve(engine.context_length, requested)
            return encode_fim_within(engine.encode_completion, text, suffix, budget)

        prompt_ids = await encode_prompt(
            auditor=state.auditor,
            caller=caller,
            info=request_info(request),
            endpoint=endpoint,
            model_id=engine.model_id,
            max_bytes=state.settings.max_prompt_bytes,
            texts=[("prompt", text), ("suffix", suffix or "")],
            encode=encode,
        )
        content = {"prompt": text}
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
        seed=job.seed,
        stop=body.stop_list(),
        stream=body.streaming,
        metadata=body.enclave,
        end_user=body.user,
        prompt_content=content,
        started=job.started,
        extras=job.extras,
    )


def _text_job(
    request: Request,
    caller: Caller,
    body: CompletionRequest | FimCompletionRequest,
    seed: int | None,
    logprobs: int | None = None,
) -> _TextRequest:
    state = app_state(request)
    started = state.clock.monotonic()
    engine = check_model(state.engine, caller, body.model, max_waiting=state.settings.max_waiting)
    state.disk.refuse_if_low()
    extras = sampling_extras(body, engine, max_n=state.settings.max_n, logprobs=logprobs)
    return _TextRequest(body, engine, extras, seed, started)


def _echo_text(engine: GenerationService, prompt: str | list[int]) -> str:
    if isinstance(prompt, str):
        return prompt
    return b"".join(engine.token_bytes(t) for t in prompt).decode("utf-8", errors="replace")


@router.post(
    "/v1/completions",
    response_model=Completion,
    responses={**_GEN_RESPONSES, 200: COMPLETION_STREAM_DOC},
    summary="Text completion; with `suffix`, fill-in-the-middle",
)
async def completions(
    body: CompletionRequest, request: Request, caller: Caller = Depends(caller_with(Permission.GENERATE))
) -> Response | Completion:
    job = _text_job(request, caller, body, body.seed, body.logprobs)
    prompts = body.prompt_list
    gens: list[Generation] = []
    try:
        for p, prompt in enumerate(prompts):
            gen = await _text_generation(request, caller, job, prompt, body.suffix)
            if p:
                gen.stream_id = f"{gen.info.request_id}/prompt{p}"
            gens.append(gen)
    except BaseException:
        # A later prompt was refused: the admitted ones never run, and their records say so.
        with anyio.CancelScope(shield=True):
            for gen in gens:
                await gen.abandon()
        raise
    echo = [_echo_text(job.engine, p) for p in prompts] if body.echo else []
    rid = "cmpl-" + uuid.uuid4().hex
    created = int(app_state(request).clock.now().timestamp())
    if body.streaming:
        return SSEResponse(completion_events(gens, rid, created, body.include_usage, echo))
    choices, usage = await collect(gens)
    n = job.extras.n
    out = []
    for index, choice in enumerate(choices):
        head = echo[index // n] if echo else ""
        logprobs = (
            completion_logprobs(job.engine, choice.tokens, len(head))
            if job.extras.logprobs is not None
            else None
        )
        out.append(
            {"index": index, "text": head + choice.text, "finish_reason": choice.finish, "logprobs": logprobs}
        )
    return Completion.model_validate(
        {"id": rid, "created": created, "model": job.engine.model_id, "usage": usage, "choices": out}
    )


@router.post(
    "/v1/fim/completions",
    response_model=ChatCompletion,
    responses={**_GEN_RESPONSES, 200: CHAT_STREAM_DOC},
    summary="Fill-in-the-middle, Mistral's shape (prompt + suffix in, chat-shaped out)",
)
async def fim_completions(
    body: FimCompletionRequest, request: Request, caller: Caller = Depends(caller_with(Permission.GENERATE))
) -> Response | ChatCompletion:
    seed = body.random_seed if body.random_seed is not None else body.seed
    job = _text_job(request, caller, body, seed)
    gen = await _text_generation(request, caller, job, body.prompt, body.suffix or "")
    rid = "fim-" + uuid.uuid4().hex
    created = int(app_state(request).clock.now().timestamp())
    if body.streaming:
        return SSEResponse(chat_events([gen], rid, created, body.include_usage))
    choices, usage = await collect([gen])
    return chat_completion(rid, created, gen.engine.model_id, choices, usage)


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
            {"fim": engine.supports_fim, "tools": True, "json": True, "logprobs": True}
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
