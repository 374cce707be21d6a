"""``/v1/models``: what a client reads to size its prompts and pick features."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from shared.schemas._base import Response


class ModelCapabilities(Response):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)
    chat: bool = True
    completions: bool = True
    fim: bool = Field(description="fill-in-the-middle: `suffix` on /v1/completions, /v1/fim/completions")
    tools: bool
    json_: bool = Field(alias="json", description="response_format json_object / json_schema")
    logprobs: bool


class ModelCard(Response):
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


class ModelList(Response):
    object: Literal["list"] = "list"
    data: list[ModelCard]
