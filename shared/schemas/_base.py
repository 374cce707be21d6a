"""What every schema module shares: the two base classes, the size limits, the refusal message."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

MAX_STOP_SEQUENCES = 16
MAX_TEXT_CHARS = 4 * 1024 * 1024
# The schema's ceiling for `n`; the appliance's own limit is its `max_n` setting (at most this).
MAX_N = 128
MAX_LOGIT_BIAS = 1024
# Prompts in one /v1/completions request (a list of texts or of token-id lists).
MAX_PROMPTS = 64
MAX_LOGPROBS = 20

Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="lower-case hex SHA-256")]


class Request(BaseModel):
    """A request body: an unknown field is a 400 naming it, so a client never trusts a knob it sent."""

    model_config = ConfigDict(extra="forbid")


class Response(BaseModel):
    model_config = ConfigDict(extra="forbid")


def not_supported(name: str) -> ValueError:
    return ValueError(f"{name} is not supported by this appliance")
