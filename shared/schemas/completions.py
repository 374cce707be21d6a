"""``/v1/completions`` and Mistral's ``/v1/fim/completions``: requests, the response and its chunk."""

from __future__ import annotations

from typing import Annotated, Any, Literal, cast

from pydantic import Field, ValidationInfo, field_validator

from shared.schemas._base import MAX_LOGPROBS, MAX_N, MAX_PROMPTS, MAX_TEXT_CHARS, Response, not_supported
from shared.schemas.generation import GenerationRequest, OpenAIFinish, Usage
from shared.schemas.logprobs import CompletionLogprobs

TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1, max_length=1_048_576)]


class CompletionRequest(GenerationRequest):
    prompt: str | list[str] | TokenIds | list[TokenIds] = Field(
        description="text (a raw prompt: special tokens in it are the model's own), token ids, or a list "
        f"of up to {MAX_PROMPTS} of either: each prompt gets `n` choices, numbered prompt by prompt"
    )
    suffix: str | None = Field(default=None, max_length=MAX_TEXT_CHARS, description="fill-in-the-middle")
    echo: bool | None = Field(default=False, description="the prompt's text before each choice's text")
    logprobs: int | None = Field(
        default=None,
        ge=0,
        le=MAX_LOGPROBS,
        description="per token: its log-probability and this many alternatives",
    )
    best_of: int | None = Field(
        default=None, ge=1, le=MAX_N, description="only equal to `n` (or null) is supported: no ranking"
    )

    @field_validator("prompt")
    @classmethod
    def _prompts(cls, value: str | list[str] | list[int] | list[list[int]]) -> Any:
        if isinstance(value, list):
            if not value:
                raise ValueError("prompt must not be an empty list")
            if len(value) > MAX_PROMPTS and not isinstance(value[0], int):
                raise ValueError(f"at most {MAX_PROMPTS} prompts in one request")
        for text in [value] if isinstance(value, str) else value:
            if isinstance(text, str) and len(text) > MAX_TEXT_CHARS:
                raise ValueError(f"prompt longer than {MAX_TEXT_CHARS} characters")
        return value

    # Field validators, not a model validator, so that the 400 names the parameter (``param``);
    # each reads the fields declared before it.
    @field_validator("suffix")
    @classmethod
    def _one_prompt_for_suffix(cls, value: str | None, info: ValidationInfo) -> str | None:
        prompt = info.data.get("prompt")
        several = isinstance(prompt, list) and len(prompt) > 1 and not isinstance(prompt[0], int)
        if value is not None and several:
            raise ValueError("suffix goes with exactly one prompt")
        return value

    @field_validator("logprobs")
    @classmethod
    def _no_echo_logprobs(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and info.data.get("echo"):
            raise not_supported("logprobs with echo (log-probabilities of prompt tokens)")
        return value

    @field_validator("best_of")
    @classmethod
    def _best_of_is_n(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and value != (info.data.get("n") or 1):
            raise not_supported("best_of other than n (choosing the best of several)")
        return value

    @property
    def prompt_list(self) -> list[str | list[int]]:
        """The prompts, each a text or a list of token ids."""
        value = self.prompt
        if isinstance(value, str):
            return [value]
        if value and isinstance(value[0], int):
            return [cast(list[int], value)]
        return list(cast(list[str] | list[list[int]], value))

    @property
    def prompt_text(self) -> str:
        first = self.prompt_list[0]
        return first if isinstance(first, str) else ""

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
    logprobs: CompletionLogprobs | None = None


class Completion(Response):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


# A streamed completion chunk has the same shape as the whole object (OpenAI's own choice).
CompletionChunk = Completion
