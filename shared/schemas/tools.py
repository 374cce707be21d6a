"""Tool definitions, tool choice and the tool calls an earlier assistant turn made (chat requests)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.schemas._base import MAX_TEXT_CHARS


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


class FunctionCallOut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    arguments: str = Field(description="JSON text of the arguments object")


class ToolCallOut(BaseModel):
    """A call the model made (``message.tool_calls[i]``): ids are ``call_`` + 24 hex digits."""

    model_config = ConfigDict(extra="forbid")
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallOut


class FunctionCallDelta(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(BaseModel):
    """One streamed piece of ``tool_calls[index]``: the client concatenates the ``arguments``."""

    model_config = ConfigDict(extra="forbid")
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionCallDelta
