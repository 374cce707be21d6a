"""Enclave's own optional request object: project metadata for the audit log (never file contents)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from shared.schemas._base import Sha256Hex


class ContextFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(min_length=1, max_length=4096, description="path relative to the project root")
    sha256: Sha256Hex


class EnclaveMetadata(BaseModel):
    """Who asked from where: recorded in the audit log with the generation."""

    model_config = ConfigDict(extra="forbid")
    project_id: str | None = Field(default=None, min_length=1, max_length=255)
    context_files: list[ContextFile] = Field(default_factory=list, max_length=1000)
