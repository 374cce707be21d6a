"""``/v1/chat/completions``: the request, the response and the streamed chunk."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from shared.schemas._base import MAX_LOGPROBS, MAX_TEXT_CHARS, Response, not_supported
from shared.schemas.generation import GenerationRequest, Usage
from shared.schemas.logprobs import ChatLogprobs
from shared.schemas.response_format import ResponseFormat
from shared.schemas.thinking import ReasoningEffortIn, ThinkingOption
from shared.schemas.tools import (
    FunctionDef,
    NamedFunction,
    NamedToolChoice,
    ToolCallDelta,
    ToolCallIn,
    ToolCallOut,
    ToolDef,
)

# "tool_calls": the turn ended with calls for the client to run (OpenAI's value).
ChatFinish = Literal["stop", "length", "tool_calls"]


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str = Field(max_length=MAX_TEXT_CHARS)


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


class ChatCompletionRequest(GenerationRequest):
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=10_000)
    # Newer OpenAI clients send this name instead of max_tokens.
    max_completion_tokens: int | None = Field(default=None, ge=1, le=1_048_576)
    logprobs: bool | None = Field(default=None, description="log-probability of each generated token")
    top_logprobs: int | None = Field(
        default=None, ge=0, le=MAX_LOGPROBS, description="alternatives per token (needs `logprobs: true`)"
    )
    response_format: ResponseFormat | None = Field(
        default=None,
        description="`json_object` or `json_schema` (strict or not): decoding is constrained to it, and "
        "a `max_tokens` too small for the shortest valid output is refused",
    )
    tools: list[ToolDef] | None = Field(
        default=None, max_length=128, description="functions the model may call (DeepSeek V4's DSML format)"
    )
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = Field(
        default=None,
        description="`auto` (default with tools): the model decides; `required` / a named function: the "
        "output is constrained to a valid call; `none`: the tools are left out of the prompt",
    )
    parallel_tool_calls: bool | None = Field(
        default=None, description="false: at most one call (default true)"
    )
    functions: list[FunctionDef] | None = Field(
        default=None, max_length=128, description="OpenAI's deprecated form of `tools`: refused, send `tools`"
    )
    function_call: Literal["none", "auto"] | NamedFunction | None = Field(
        default=None, description="OpenAI's deprecated form of `tool_choice`: refused, send `tool_choice`"
    )
    # Accepted, with no effect here: what OpenAI SDKs and agent frameworks send routinely.
    store: bool | None = Field(default=None, description="accepted; completions are never stored for later")
    metadata: dict[str, str] | None = Field(default=None, description="accepted; used with `store` only")
    service_tier: str | None = Field(default=None, max_length=32, description="accepted; one tier here")
    # Thinking mode (appliance/api/reasoning.py maps these, and a `-reasoner` model id, to V4's modes).
    thinking: ThinkingOption | None = Field(
        default=None, description='DeepSeek\'s switch: {"type": "enabled"} or {"type": "disabled"}'
    )
    reasoning_effort: ReasoningEffortIn | None = Field(
        default=None,
        description="none = non-think; minimal, low, medium, high = Think High; xhigh, max = Think Max "
        "(DeepSeek's mapping); any value but none turns thinking on",
    )

    @field_validator("top_logprobs")
    @classmethod
    def _top_needs_logprobs(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value and not info.data.get("logprobs"):
            raise ValueError("top_logprobs needs logprobs: true")
        return value

    @property
    def logprobs_k(self) -> int | None:
        """The engine's ``logprobs``: None = off, else how many alternatives per token."""
        return (self.top_logprobs or 0) if self.logprobs else None

    @field_validator("functions", "function_call")
    @classmethod
    def _legacy(cls, value: Any, info: ValidationInfo) -> Any:
        # Answering `functions` properly means answering in its own shape (message.function_call,
        # finish_reason "function_call"); every client we serve sends `tools`, so it is refused.
        if value:
            raise not_supported(f"{info.field_name} (OpenAI's deprecated form; send tools / tool_choice)")
        return value

    @model_validator(mode="after")
    def _tool_choice(self) -> ChatCompletionRequest:
        choice = self.tool_choice
        if choice is not None and choice != "none" and not self.tools:
            raise ValueError("tool_choice needs tools")
        if isinstance(choice, NamedToolChoice) and choice.function.name not in {
            t.function.name for t in self.tools or ()
        }:
            raise ValueError(f"tool_choice names {choice.function.name!r}, which is not among the tools")
        names = [t.function.name for t in self.tools or ()]
        if len(set(names)) != len(names):
            raise ValueError("tools must have distinct names")
        return self

    def output_limit(self) -> int | None:
        return self.max_tokens if self.max_tokens is not None else self.max_completion_tokens


class ChatMessageOut(Response):
    role: Literal["assistant"] = "assistant"
    content: str | None = Field(description="null when the turn is only tool calls")
    tool_calls: list[ToolCallOut] | None = Field(
        default=None, exclude_if=lambda calls: calls is None, description="absent when there are none"
    )
    reasoning_content: str | None = Field(
        default=None, description="thinking mode only: the reasoning that came before `content`"
    )

    @model_serializer(mode="wrap")
    def _omit_absent_reasoning(self, handler: SerializerFunctionWrapHandler):  # type: ignore[no-untyped-def]
        # Outside thinking mode the message stays exactly as it was: no null reasoning field.
        out = handler(self)
        if out.get("reasoning_content") is None:
            out.pop("reasoning_content", None)
        return out


class ChatChoice(Response):
    index: int
    message: ChatMessageOut
    finish_reason: ChatFinish
    logprobs: ChatLogprobs | None = None


class ChatCompletion(Response):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ChatDelta(Response):
    role: Literal["assistant"] | None = None
    content: str | None = None
    # Thinking mode: reasoning deltas come first, then content deltas; a delta never carries both.
    reasoning_content: str | None = None
    tool_calls: list[ToolCallDelta] | None = Field(
        default=None, description="the first delta of a call has id, type and name; later ones add arguments"
    )


class ChatChunkChoice(Response):
    index: int
    delta: ChatDelta
    finish_reason: ChatFinish | None = None
    logprobs: ChatLogprobs | None = None


class ChatCompletionChunk(Response):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None
