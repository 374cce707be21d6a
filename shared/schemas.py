"""Request and response models of the appliance HTTP API, imported by the server and the desktop client.

The OpenAI-compatible part mirrors OpenAI's wire format closely enough that the ``openai`` package and
tools built on it work unchanged; an unknown or unsupported request field is refused
with a 400 naming it, never silently ignored; fields clients always send that change nothing here
(``user``, ``stream_options``, ``store``, zero penalties...) are accepted and say so in their
descriptions. Enclave adds one optional object,
``enclave``, that carries project metadata for the audit log (never file contents).

Generation requests validate their values here (ranges, ``n == 1``, well-formed digests) so that a bad
value is a 400 with a message naming the field, before anything reaches the engine.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

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
    "FimCompletionRequest",
    "FunctionDef",
    "HealthStatus",
    "LoginRequest",
    "LoginResponse",
    "Me",
    "MePolicy",
    "ModelCapabilities",
    "ModelCard",
    "ModelList",
    "ResponseFormat",
    "StreamOptions",
    "TextPart",
    "ToolCallIn",
    "ToolDef",
    "Usage",
]

MAX_STOP_SEQUENCES = 16
MAX_TEXT_CHARS = 4 * 1024 * 1024

Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="lower-case hex SHA-256")]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


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
#
# Request models refuse fields they do not know (400 naming the field), so a client never believes a
# knob it sent had an effect. A few fields clients always send are accepted although they change
# nothing here, each said in its description; a parameter whose non-default value Enclave cannot honour
# yet is accepted at its default and refused otherwise, again naming it.


def _not_supported(name: str) -> ValueError:
    return ValueError(f"{name} is not supported by this appliance")


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool | None = Field(
        default=False,
        description="a last chunk with empty `choices` carries `usage` (and no other chunk does)",
    )


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str = Field(max_length=MAX_TEXT_CHARS)


class FunctionCallIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=255)
    arguments: str = Field(default="", max_length=MAX_TEXT_CHARS, description="JSON text of the arguments")


class ToolCallIn(BaseModel):
    """A tool call an earlier assistant turn made (echoed back by the client)."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=255)
    type: Literal["function"] = "function"
    function: FunctionCallIn


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant", "tool"] = Field(
        description="`developer` is OpenAI's newer name for `system` and is treated as one"
    )
    content: str | list[TextPart] | None = Field(
        default=None,
        description="text, or a list of text parts; may be null on an assistant turn with tool_calls",
    )
    # DeepSeek's field for an assistant turn's reasoning in thinking mode.
    reasoning_content: str | None = Field(default=None, max_length=MAX_TEXT_CHARS)
    name: str | None = Field(default=None, max_length=255)
    tool_calls: list[ToolCallIn] | None = Field(default=None, max_length=128)
    tool_call_id: str | None = Field(default=None, max_length=255, description="on a `tool` message")
    refusal: str | None = Field(default=None, max_length=MAX_TEXT_CHARS, description="accepted and not used")

    @field_validator("content")
    @classmethod
    def _bounded(cls, value: str | list[TextPart] | None) -> str | list[TextPart] | None:
        if isinstance(value, str) and len(value) > MAX_TEXT_CHARS:
            raise ValueError(f"content longer than {MAX_TEXT_CHARS} characters")
        return value

    @model_validator(mode="after")
    def _shape(self) -> ChatMessageIn:
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError("content is required (it may be null only on an assistant turn with tool_calls)")
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError("tool_calls belong on an assistant message")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs tool_call_id")
        return self

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class FunctionDef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    description: str | None = Field(default=None, max_length=MAX_TEXT_CHARS)
    parameters: dict[str, Any] | None = Field(default=None, description="JSON Schema of the arguments")
    strict: bool | None = None


class ToolDef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)


class NamedToolChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str = Field(min_length=1, max_length=64)
    description: str | None = Field(default=None, max_length=MAX_TEXT_CHARS)
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


def _normalize_stop(value: str | list[str] | None) -> list[str] | None:
    if value is None:
        return None
    stops = [value] if isinstance(value, str) else list(value)
    if len(stops) > MAX_STOP_SEQUENCES:
        raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences")
    if any(not s for s in stops):
        raise ValueError("stop sequences must not be empty")
    if any(len(s) > 1024 for s in stops):
        raise ValueError("a stop sequence is at most 1024 characters")
    return stops


Penalty = Annotated[float | None, Field(default=None, ge=-2.0, le=2.0)]


class _GenerationRequest(_Request):
    model: str = Field(min_length=1, max_length=255)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=1_048_576)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0, description="default 1")
    top_p: float | None = Field(default=None, gt=0.0, le=1.0, description="default 1")
    top_k: int | None = Field(default=None, ge=0, le=1_000_000, description="vLLM's extension; 0 = no cut")
    stop: str | list[str] | None = Field(default=None, description=f"at most {MAX_STOP_SEQUENCES} strings")
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    n: int | None = Field(default=1, ge=1, le=1, description="only 1 is supported")
    presence_penalty: Penalty = None
    frequency_penalty: Penalty = None
    logit_bias: dict[str, float] | None = Field(default=None, description="only an empty map is supported")
    user: str | None = Field(default=None, max_length=255, description="recorded in the audit log as given")
    enclave: EnclaveMetadata | None = None

    @field_validator("stop")
    @classmethod
    def _stop(cls, value: str | list[str] | None) -> list[str] | None:
        return _normalize_stop(value)

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _penalty(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value:
            raise _not_supported(f"a non-zero {info.field_name}")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _bias(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value:
            raise _not_supported("logit_bias")
        return value

    def stop_list(self) -> tuple[str, ...]:
        stop = self.stop
        if stop is None:
            return ()
        return (stop,) if isinstance(stop, str) else tuple(stop)

    @property
    def streaming(self) -> bool:
        return bool(self.stream)

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and bool(self.stream_options.include_usage)

    @property
    def sampling_temperature(self) -> float:
        return 1.0 if self.temperature is None else self.temperature

    @property
    def sampling_top_p(self) -> float:
        return 1.0 if self.top_p is None else self.top_p


class ChatCompletionRequest(_GenerationRequest):
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=10_000)
    # Newer OpenAI clients send this name instead of max_tokens.
    max_completion_tokens: int | None = Field(default=None, ge=1, le=1_048_576)
    logprobs: bool | None = Field(default=None, description="only false is supported")
    top_logprobs: int | None = Field(default=None, ge=0, le=20, description="only 0 is supported")
    response_format: ResponseFormat | None = Field(default=None, description="only `text` is supported")
    tools: list[ToolDef] | None = Field(default=None, max_length=128, description="not supported yet")
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    functions: list[FunctionDef] | None = Field(default=None, max_length=128, description="legacy `tools`")
    function_call: Literal["none", "auto"] | NamedFunction | None = Field(
        default=None, description="legacy `tool_choice`"
    )
    # Accepted, with no effect here: what OpenAI SDKs and agent frameworks send routinely.
    store: bool | None = Field(default=None, description="accepted; completions are never stored for later")
    metadata: dict[str, str] | None = Field(default=None, description="accepted; used with `store` only")
    service_tier: str | None = Field(default=None, max_length=32, description="accepted; one tier here")

    @field_validator("logprobs")
    @classmethod
    def _logprobs(cls, value: bool | None) -> bool | None:
        if value:
            raise _not_supported("logprobs")
        return value

    @field_validator("top_logprobs")
    @classmethod
    def _top_logprobs(cls, value: int | None) -> int | None:
        if value:
            raise _not_supported("top_logprobs")
        return value

    @field_validator("response_format")
    @classmethod
    def _format(cls, value: ResponseFormat | None) -> ResponseFormat | None:
        if value is not None and value.type != "text":
            raise _not_supported(f"response_format {value.type}")
        return value

    @field_validator("tools", "functions")
    @classmethod
    def _tools(cls, value: list[Any] | None, info: ValidationInfo) -> list[Any] | None:
        if value:
            raise _not_supported(str(info.field_name))
        return value

    @field_validator("messages")
    @classmethod
    def _plain_turns(cls, value: list[ChatMessageIn]) -> list[ChatMessageIn]:
        for message in value:
            if message.role == "tool" or message.tool_calls:
                raise _not_supported("a tool call or tool result in messages")
        return value

    def output_limit(self) -> int | None:
        return self.max_tokens if self.max_tokens is not None else self.max_completion_tokens


class CompletionRequest(_GenerationRequest):
    prompt: str | list[str] = Field(
        description="text (a raw prompt: special tokens in it are the model's own), or a list of one text"
    )
    suffix: str | None = Field(default=None, max_length=MAX_TEXT_CHARS, description="fill-in-the-middle")
    echo: bool | None = Field(default=False, description="only false is supported")
    logprobs: int | None = Field(default=None, ge=0, le=5, description="only null is supported")
    best_of: int | None = Field(default=None, ge=1, le=1, description="only 1 is supported")

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[str]) -> str | list[str]:
        texts = [value] if isinstance(value, str) else value
        if len(texts) != 1:
            raise ValueError("exactly one prompt is supported")
        if len(texts[0]) > MAX_TEXT_CHARS:
            raise ValueError(f"prompt longer than {MAX_TEXT_CHARS} characters")
        return value

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, value: bool | None) -> bool | None:
        if value:
            raise _not_supported("echo")
        return value

    @field_validator("logprobs")
    @classmethod
    def _logprobs(cls, value: int | None) -> int | None:
        if value is not None:
            raise _not_supported("logprobs")
        return value

    @property
    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    def output_limit(self) -> int | None:
        return self.max_tokens


class FimCompletionRequest(_GenerationRequest):
    """Mistral's ``/v1/fim/completions`` (what Continue posts): the code before and after the cursor."""

    prompt: str = Field(max_length=MAX_TEXT_CHARS, description="the code before the cursor")
    suffix: str | None = Field(default=None, max_length=MAX_TEXT_CHARS, description="the code after it")
    min_tokens: int | None = Field(default=None, ge=0, le=0, description="only 0 is supported")
    random_seed: int | None = Field(default=None, ge=0, le=2**63 - 1, description="Mistral's name for seed")

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


class ModelCapabilities(_Response):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)
    chat: bool = True
    completions: bool = True
    fim: bool = Field(description="fill-in-the-middle: `suffix` on /v1/completions, /v1/fim/completions")
    tools: bool
    json_: bool = Field(alias="json", description="response_format json_object / json_schema")
    logprobs: bool


class ModelCard(_Response):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    # The same figure under each name a client looks for it: context_length (OpenRouter, aider via
    # litellm), max_model_len (vLLM), max_input_tokens / max_tokens (litellm's model info).
    context_length: int = Field(description="tokens of prompt plus completion this model holds")
    max_model_len: int
    max_input_tokens: int
    max_tokens: int
    max_output_tokens: int
    capabilities: ModelCapabilities


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
