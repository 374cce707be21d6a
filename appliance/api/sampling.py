"""The sampling surface of a generation request, checked against the model, and the logprobs it
asks for, in OpenAI's two shapes.

    sampling_extras(body, engine)   penalties, logit_bias (ids in the vocabulary), n <= max_n,
                                    logprobs, response_format -> a grammar constraint
                                    -> Extras, which admit() turns into SamplingParams
    check_token_ids(ids, engine)    a prompt given as token ids: every id in the vocabulary
    chat_logprobs / completion_logprobs   engine TokenLogprobs -> the response objects

Everything refused here is a 400 naming the parameter, before anything is audited or queued.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from appliance.api.errors import ApiError
from appliance.engine.constrain import Constraint
from appliance.engine.types import GenerationService, TokenLogprob
from shared.errors import InputError
from shared.schemas import ResponseFormat
from shared.schemas.generation import GenerationRequest

__all__ = [
    "Extras",
    "chat_logprobs",
    "check_token_ids",
    "completion_logprobs",
    "constraint_for",
    "sampling_extras",
    "token_text",
]


@dataclass(frozen=True)
class Extras:
    """What a request sets beyond temperature/top-p/top-k/seed/stop (SamplingParams' names)."""

    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()
    logprobs: int | None = None
    constraint: Constraint | None = None
    n: int = 1


def constraint_for(response_format: ResponseFormat | None) -> Constraint | None:
    """The grammar for ``response_format``; None for text. 400 if its schema cannot be used."""
    if response_format is None or response_format.type == "text":
        return None
    try:
        if response_format.type == "json_object":
            return Constraint.json_object()
        spec = response_format.json_schema
        assert spec is not None and spec.schema_ is not None  # the schema model requires both
        return Constraint.json_schema(
            spec.schema_, strict=bool(spec.strict), description=f"JSON matching the schema {spec.name!r}"
        )
    except InputError as exc:
        raise ApiError(400, str(exc), param="response_format") from None


def sampling_extras(
    body: GenerationRequest,
    engine: GenerationService,
    *,
    max_n: int,
    logprobs: int | None = None,
    constraint: Constraint | None = None,
) -> Extras:
    n = body.choices_per_prompt
    if n > max_n:
        raise ApiError(400, f"n is {n}; this appliance allows at most {max_n} choices per prompt", param="n")
    bias = body.bias_pairs()
    vocab = engine.vocab_size
    for token, _ in bias:
        if token >= vocab:
            raise ApiError(
                400,
                f"logit_bias names token {token}, outside this model's vocabulary (0..{vocab - 1})",
                param="logit_bias",
            )
    presence, frequency = body.penalties
    return Extras(
        presence_penalty=presence,
        frequency_penalty=frequency,
        logit_bias=bias,
        logprobs=logprobs,
        constraint=constraint,
        n=n,
    )


def check_token_ids(ids: Sequence[int], engine: GenerationService, param: str) -> list[int]:
    vocab = engine.vocab_size
    bad = next((t for t in ids if t >= vocab), None)
    if bad is not None:
        raise ApiError(
            400,
            f"{param} holds token id {bad}, outside this model's vocabulary (0..{vocab - 1})",
            param=param,
        )
    return list(ids)


def token_text(engine: GenerationService, token: int) -> str:
    # A token may be part of a UTF-8 character: its bytes are then shown escaped, as OpenAI does.
    return engine.token_bytes(token).decode("utf-8", errors="backslashreplace")


def chat_logprobs(engine: GenerationService, items: Sequence[TokenLogprob]) -> dict[str, Any]:
    """OpenAI's ``choices[].logprobs`` of a chat completion (or of one chunk)."""

    def entry(token: int, logprob: float) -> dict[str, Any]:
        return {
            "token": token_text(engine, token),
            "logprob": logprob,
            "bytes": list(engine.token_bytes(token)),
        }

    return {
        "content": [
            {**entry(i.token_id, i.logprob), "top_logprobs": [entry(t, lp) for t, lp in i.top]} for i in items
        ],
        "refusal": None,
    }


def completion_logprobs(
    engine: GenerationService, items: Sequence[TokenLogprob], start: int = 0
) -> dict[str, Any]:
    """OpenAI's legacy ``choices[].logprobs``; ``start`` is where the first token begins in the
    choice's text (after an echoed prompt, or after earlier chunks of a stream)."""
    tokens = [token_text(engine, i.token_id) for i in items]
    offsets: list[int] = []
    at = start
    for text in tokens:
        offsets.append(at)
        at += len(text)
    return {
        "tokens": tokens,
        "token_logprobs": [i.logprob for i in items],
        "top_logprobs": [{token_text(engine, t): lp for t, lp in i.top} for i in items],
        "text_offset": offsets,
    }
