"""Request and response models of the appliance HTTP API, imported by the server and the desktop client.

The OpenAI-compatible part mirrors OpenAI's wire format closely enough that the ``openai`` package and
tools built on it work unchanged; unknown request fields that OpenAI accepts are ignored rather than
refused, so those clients' extra knobs do not break a call. Enclave adds one optional object,
``enclave``, that carries project metadata for the audit log (never file contents).

Generation requests validate their values here (ranges, ``n == 1``, well-formed digests) so that a bad
value is a 400 with a message naming the field, before anything reaches the engine.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "ChatChoice",
    "ChatChunkChoice",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ChatDelta",
    "ChatMessageIn",
    "ChatMessageOut",
    "Completion",
    "CompletionChoice",
    "CompletionChunk",
    "CompletionRequest",
    "ContextFile",
    "EnclaveMetadata",
    "ErrorBody",
    "ErrorResponse",
    "HealthStatus",
    "LoginRequest",
    "LoginResponse",
    "Me",
    "MePolicy",
    "ModelCard",
    "ModelList",
    "StreamOptions",
    "TextPart",
    "Usage",
]

MAX_STOP_SEQUENCES = 4
MAX_TEXT_CHARS = 4 * 1024 * 1024

Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="lower-case hex SHA-256")]


class _Request(BaseModel):
    # OpenAI clients send knobs Enclave does not use (frequency_penalty, logprobs, ...); ignore them.
    model_config = ConfigDict(extra="ignore")


class _Response(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- Enclave project metadata -----------------------------------------------------------------------


class ContextFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(min_length=1, max_length=4096, description="path relative to the project root")
    sha256: Sha256Hex


class EnclaveMetadata(BaseModel):
    """Who asked from where: recorded in the audit log with the generation."""

    model_config = ConfigDict(extra="forbid")
    project_id: str | None = Field(default=None, min_length=1, max_length=255)
    context_files: list[ContextFile] = Field(default_factory=list, max_length=1000)


# --- Generation requests ----------------------------------------------------------------------------


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: str = Field(max_length=MAX_TEXT_CHARS)


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart] = Field(description="text, or a list of text parts")
    # DeepSeek's field for an assistant turn's reasoning in thinking mode.
    reasoning_content: str | None = Field(default=None, max_length=MAX_TEXT_CHARS)
    name: str | None = Field(default=None, max_length=255)

    @field_validator("content")
    @classmethod
    def _bounded(cls, value: str | list[TextPart]) -> str | list[TextPart]:
        if isinstance(value, str) and len(value) > MAX_TEXT_CHARS:
            raise ValueError(f"content longer than {MAX_TEXT_CHARS} characters")
        return value

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


def _normalize_stop(value: str | list[str] | None) -> list[str] | None:
    if value is None:
        return None
    stops = [value] if isinstance(value, str) else list(value)
    if len(stops) > MAX_STOP_SEQUENCES:
        raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences")
    if any(not s for s in stops):
        raise ValueError("stop sequences must not be empty")
    return stops


class _GenerationRequest(_Request):
    model: str = Field(min_length=1, max_length=255)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=1_048_576)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    n: int = Field(default=1, ge=1, le=1, description="only 1 is supported")
    user: str | None = Field(default=None, max_length=255)
    enclave: EnclaveMetadata | None = None

    @field_validator("stop")
    @classmethod
    def _stop(cls, value: str | list[str] | None) -> list[str] | None:
        return _normalize_stop(value)

    def stop_list(self) -> tuple[str, ...]:
        stop = self.stop
        if stop is None:
            return ()
        return (stop,) if isinstance(stop, str) else tuple(stop)

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class ChatCompletionRequest(_GenerationRequest):
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=10_000)
    # Newer OpenAI clients send this name instead of max_tokens.
    max_completion_tokens: int | None = Field(default=None, ge=1, le=1_048_576)

    def output_limit(self) -> int | None:
        return self.max_tokens if self.max_tokens is not None else self.max_completion_tokens


class CompletionRequest(_GenerationRequest):
    prompt: str = Field(max_length=MAX_TEXT_CHARS)
    suffix: str | None = Field(default=None, max_length=MAX_TEXT_CHARS, description="fill-in-the-middle")
    echo: bool = Field(default=False, description="only false is supported")

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, value: bool) -> bool:
        if value:
            raise ValueError("echo is not supported")
        return value

    def output_limit(self) -> int | None:
        return self.max_tokens


# --- Generation responses ---------------------------------------------------------------------------

OpenAIFinish = Literal["stop", "length"]


class Usage(_Response):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatMessageOut(_Response):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(_Response):
    index: int
    message: ChatMessageOut
    finish_reason: OpenAIFinish
    logprobs: None = None


class ChatCompletion(_Response):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ChatDelta(_Response):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(_Response):
    index: int
    delta: ChatDelta
    finish_reason: OpenAIFinish | None = None
    logprobs: None = None


class ChatCompletionChunk(_Response):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class CompletionChoice(_Response):
    index: int
    text: str
    finish_reason: OpenAIFinish | None
    logprobs: None = None


class Completion(_Response):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


# A streamed completion chunk has the same shape as the whole object (OpenAI's own choice).
CompletionChunk = Completion


class ModelCard(_Response):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(_Response):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# --- Errors, health ---------------------------------------------------------------------------------


class ErrorBody(_Response):
    message: str
    type: str
    code: str | None = None
    param: str | None = None


class ErrorResponse(_Response):
    error: ErrorBody


class HealthStatus(_Response):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(default_factory=dict)


# --- Sign-in ----------------------------------------------------------------------------------------


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=255)
    password: str = Field(min_length=1, max_length=1024)


class LoginResponse(_Response):
    token: str
    token_type: Literal["bearer"] = "bearer"
    expires_at: dt.datetime


class MePolicy(_Response):
    """The caller's effective policy: the conservative combination of their teams' policies."""

    allowed_models: list[list[str]] = Field(
        description="one pattern list per team; a model is allowed when it matches a pattern of every list "
        "(no lists: no model)"
    )
    requests_per_minute: int | None
    tokens_per_minute: int | None
    concurrent_streams: int | None
    max_prompt_tokens: int | None
    max_output_tokens: int | None
    capture_mode: Literal["none", "digest", "sealed"]
    path_exclusions: list[str] = Field(description="gitignore-style patterns of files never to index or send")


class Me(_Response):
    """Who the bearer token speaks for (``GET /v1/auth/me``)."""

    username: str
    role: str = Field(description="developer, auditor or admin (another value grants nothing)")
    permissions: list[str] = Field(description="what this credential may do: the role's, narrowed by scopes")
    teams: list[str]
    policy: MePolicy
    credential: Literal["api_token", "session"]
    scopes: list[str] | None = Field(description="an API token's scopes; null for a login session")
    expires_at: dt.datetime = Field(description="when this token or session stops working")
    must_change_password: bool
