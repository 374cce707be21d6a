"""DeepSeek V4 prompt formats: chat (thinking and non-thinking) and fill-in-the-middle.

Chat follows DeepSeek's own encoder (``encoding_dsv4.py``; its rules are code, not a template):

    prompt = BOS + render(0) + render(1) + ...
    system      content
    user        <｜User｜> content  [+ transition]
    assistant   [reasoning </think>] content EOS
    transition  <｜Assistant｜> + (<think> | </think>)   after a user turn that is last or followed
                                                          by an assistant turn

In thinking mode the turn after the last user message opens with ``<think>``; earlier turns close the
think block at once (their reasoning is dropped). In chat mode every transition is ``</think>``.
"""

from __future__ import annotations

from collections.abc import Sequence

from appliance.engine.tokenizer import BOS_TOKEN, EOS_TOKEN, Tokenizer
from appliance.engine.types import ChatMessage
from shared.errors import InputError

__all__ = ["FIM_TOKENS", "PromptEncoder", "render_chat", "render_fim"]

USER_TOKEN = "<｜User｜>"
ASSISTANT_TOKEN = "<｜Assistant｜>"
THINK_START = "<think>"
THINK_END = "</think>"
FIM_BEGIN = "<｜fim▁begin｜>"
FIM_HOLE = "<｜fim▁hole｜>"
FIM_END = "<｜fim▁end｜>"
FIM_TOKENS = (FIM_BEGIN, FIM_HOLE, FIM_END)
_ROLES = ("system", "user", "assistant")


class Special(str):
    """A piece of prompt markup that is one control token (never produced from user text)."""


Segments = list[str]  # markup (Special) and text pieces, in order


def render_chat(messages: Sequence[ChatMessage], *, thinking: bool, drop_thinking: bool = True) -> str:
    """The prompt text for ``messages``, exactly as DeepSeek's encoder writes it."""
    return "".join(chat_segments(messages, thinking=thinking, drop_thinking=drop_thinking))


def chat_segments(messages: Sequence[ChatMessage], *, thinking: bool, drop_thinking: bool = True) -> Segments:
    """:func:`render_chat` as segments: control tokens as :class:`Special`, everything else text."""
    if not messages:
        raise InputError("a chat needs at least one message")
    for message in messages:
        if message.role not in _ROLES:
            raise InputError(f"unknown chat role {message.role!r} (expected system, user or assistant)")
    last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=-1)
    parts: Segments = [Special(BOS_TOKEN)]
    for i, message in enumerate(messages):
        if message.role == "system":
            parts.append(message.content)
        elif message.role == "user":
            parts += [Special(USER_TOKEN), message.content]
            followed_by_reply = i == len(messages) - 1 or messages[i + 1].role == "assistant"
            if followed_by_reply:
                opens_thinking = thinking and i >= last_user
                parts += [Special(ASSISTANT_TOKEN), Special(THINK_START if opens_thinking else THINK_END)]
        else:
            # Reasoning of turns before the last user message is dropped (drop_thinking).
            keeps_reasoning = thinking and (not drop_thinking or i > last_user)
            if keeps_reasoning:
                parts += [message.reasoning or "", Special(THINK_END)]
            parts += [message.content, Special(EOS_TOKEN)]
    return parts


def render_fim(prefix: str, suffix: str) -> str:
    return "".join(fim_segments(prefix, suffix))


def fim_segments(prefix: str, suffix: str) -> Segments:
    return [Special(BOS_TOKEN), Special(FIM_BEGIN), prefix, Special(FIM_HOLE), suffix, Special(FIM_END)]


def encode_segments(tokenizer: Tokenizer, segments: Segments) -> list[int]:
    """Control tokens by id; runs of text encoded together as text (special strings stay text), so
    a prompt without special strings in its content encodes exactly as the whole string would."""
    ids: list[int] = []
    text: list[str] = []
    for part in segments:
        if isinstance(part, Special):
            if text:
                ids += tokenizer.encode_text("".join(text))
                text = []
            token = tokenizer.token_id(part)
            if token is None:
                raise InputError(f"the tokenizer has no {part} token")
            ids.append(token)
        elif part:
            text.append(part)
    if text:
        ids += tokenizer.encode_text("".join(text))
    return ids


class PromptEncoder:
    """Prompt text -> token ids for one tokenizer."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        missing = [t for t in (BOS_TOKEN, EOS_TOKEN) if tokenizer.token_id(t) is None]
        if missing:
            raise InputError(f"the tokenizer has no {missing[0]} token")
        self._missing_fim = next((t for t in FIM_TOKENS if tokenizer.token_id(t) is None), None)

    @property
    def supports_fim(self) -> bool:
        return self._missing_fim is None

    def chat(self, messages: Sequence[ChatMessage], *, thinking: bool = False) -> list[int]:
        return encode_segments(self._tokenizer, chat_segments(messages, thinking=thinking))

    def completion(self, prompt: str, suffix: str | None = None, *, allow_special: bool = True) -> list[int]:
        """A plain prompt after BOS, or fill-in-the-middle when ``suffix`` is given.

        ``allow_special``: special-token strings in ``prompt`` are control tokens (raw completion
        prompts are often a client's own rendering of the model's template); the suffix is text."""
        bos = self._tokenizer.token_id(BOS_TOKEN)
        assert bos is not None  # checked in __init__
        body = self._tokenizer.encode(prompt) if allow_special else self._tokenizer.encode_text(prompt)
        if suffix is None:
            return [bos, *body]
        if self._missing_fim is not None:
            raise InputError(
                f"this model does not support fill-in-the-middle: its tokenizer has no {self._missing_fim} token"
            )
        fim = [self._tokenizer.token_id(t) for t in FIM_TOKENS]
        return [bos, fim[0], *body, fim[1], *self._tokenizer.encode_text(suffix), fim[2]]  # type: ignore[list-item]
