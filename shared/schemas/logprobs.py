"""Log-probabilities in responses: the chat shape (``choices[].logprobs.content``) and the legacy
completions shape (``choices[].logprobs.tokens`` ...), both OpenAI's.

Values come from the distribution after ``logit_bias`` and penalties, before temperature and top-p
(what OpenAI reports); ``bytes`` are the token's UTF-8 bytes, which may be part of a character.
"""

from __future__ import annotations

from pydantic import Field

from shared.schemas._base import Response


class TopLogprob(Response):
    token: str
    logprob: float
    bytes: list[int] | None = None


class ChatTokenLogprob(Response):
    token: str
    logprob: float
    bytes: list[int] | None = None
    top_logprobs: list[TopLogprob] = Field(description="the `top_logprobs` most likely tokens here")


class ChatLogprobs(Response):
    content: list[ChatTokenLogprob] | None = None
    refusal: list[ChatTokenLogprob] | None = None


class CompletionLogprobs(Response):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int] = Field(description="where each token starts in `text`, in characters")
