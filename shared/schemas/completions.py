"""``/v1/completions`` and Mistral's ``/v1/fim/completions``: requests, the response and its chunk."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from shared.schemas._base import MAX_TEXT_CHARS, Response, not_supported
from shared.schemas.generation import GenerationRequest, OpenAIFinish, Usage


class CompletionRequest(GenerationRequest):
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
            raise not_supported("echo")
        return value

    @field_validator("logprobs")
    @classmethod
    def _logprobs(cls, value: int | None) -> int | None:
        if value is not None:
            raise not_supported("logprobs")
        return value

    @property
    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    def output_limit(self) -> int | None:
        return self.max_tokens


class FimCompletionRequest(GenerationRequest):
    """Mistral's ``/v1/fim/completions`` (what Continue posts): the code before and after the cursor."""

    prompt: str = Field(max_length=MAX_TEXT_CHARS, description="the code before the cursor")
    suffix: str | None = Field(default=None, max_length=MAX_TEXT_CHARS, description="the code after it")
    min_tokens: int | None = Field(default=None, ge=0, le=0, description="only 0 is supported")
    random_seed: int | None = Field(default=None, ge=0, le=2**63 - 1, description="Mistral's name for seed")

    def output_limit(self) -> int | None:
        return self.max_tokens


class CompletionChoice(Response):
    index: int
    text: str
    finish_reason: OpenAIFinish | None
    logprobs: None = None


class Completion(Response):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


# A streamed completion chunk has the same shape as the whole object (OpenAI's own choice).
CompletionChunk = Completion
