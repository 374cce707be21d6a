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

from shared.schemas._base import MAX_TEXT_CHARS, Response, not_supported
from shared.schemas.generation import GenerationRequest, OpenAIFinish, Usage
from shared.schemas.response_format import ResponseFormat
from shared.schemas.thinking import ReasoningEffortIn, ThinkingOption
from shared.schemas.tools import FunctionDef, NamedFunction, NamedToolChoice, ToolCallIn, ToolDef


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
    # Thinking mode (appliance/api/reasoning.py maps these, and a `-reasoner` model id, to V4's modes).
    thinking: ThinkingOption | None = Field(
        default=None, description='DeepSeek\'s switch: {"type": "enabled"} or {"type": "disabled"}'
    )
    reasoning_effort: ReasoningEffortIn | None = Field(
        default=None,
        description="none = non-think; minimal, low, medium, high = Think High; xhigh, max = Think Max "
        "(DeepSeek's mapping); any value but none turns thinking on",
    )

    @field_validator("logprobs")
    @classmethod
    def _logprobs(cls, value: bool | None) -> bool | None:
        if value:
            raise not_supported("logprobs")
        return value

    @field_validator("top_logprobs")
    @classmethod
    def _top_logprobs(cls, value: int | None) -> int | None:
        if value:
            raise not_supported("top_logprobs")
        return value

    @field_validator("response_format")
    @classmethod
    def _format(cls, value: ResponseFormat | None) -> ResponseFormat | None:
        if value is not None and value.type != "text":
            raise not_supported(f"response_format {value.type}")
        return value

    @field_validator("tools", "functions")
    @classmethod
    def _tools(cls, value: list[Any] | None, info: ValidationInfo) -> list[Any] | None:
        if value:
            raise not_supported(str(info.field_name))
        return value

    @field_validator("messages")
    @classmethod
    def _plain_turns(cls, value: list[ChatMessageIn]) -> list[ChatMessageIn]:
        for message in value:
            if message.role == "tool" or message.tool_calls:
                raise not_supported("a tool call or tool result in messages")
        return value

    def output_limit(self) -> int | None:
        return self.max_tokens if self.max_tokens is not None else self.max_completion_tokens


class ChatMessageOut(Response):
    role: Literal["assistant"] = "assistant"
    content: str
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
    finish_reason: OpenAIFinish
    logprobs: None = None


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


class ChatChunkChoice(Response):
    index: int
    delta: ChatDelta
    finish_reason: OpenAIFinish | None = None
    logprobs: None = None


class ChatCompletionChunk(Response):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None
