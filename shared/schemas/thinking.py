"""Thinking mode on the wire, as DeepSeek's API and OpenAI's name it.

Asking: DeepSeek's ``thinking: {"type": "enabled" | "disabled"}`` and ``reasoning_effort``
(DeepSeek's ``high`` / ``max``, and OpenAI's ``none`` .. ``xhigh``, mapped as DeepSeek maps them —
see ``appliance/api/reasoning.py``). Answering: ``reasoning_content`` beside ``content`` in the
message and in stream deltas, and ``usage.completion_tokens_details.reasoning_tokens``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.schemas._base import Response

# OpenAI's values and DeepSeek's own ``max``.
ReasoningEffortIn = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]


class ThinkingOption(BaseModel):
    """DeepSeek's switch for thinking mode."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["enabled", "disabled"]


class CompletionTokensDetails(Response):
    reasoning_tokens: int = Field(description="completion tokens spent on reasoning (thinking mode)")
