"""Error bodies (OpenAI's shape, on every route) and the health report."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from shared.schemas._base import Response


class ErrorBody(Response):
    message: str
    type: str
    code: str | None = None
    param: str | None = None


class ErrorResponse(Response):
    error: ErrorBody


class HealthStatus(Response):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(default_factory=dict)
