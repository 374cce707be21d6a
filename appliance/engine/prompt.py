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

Tools (:mod:`appliance.engine.dsml` has the markup), as the encoder handles them:

    tools        appended to the first system message (one with empty content is added in front when
                 the chat has none) as "\n\n" + the tools section; with tools, no reasoning is dropped
    assistant    content + the DSML block of its tool_calls + EOS
    tool         results merge into one user turn: <tool_result>...</tool_result> blocks (ordered as
                 the calls were) joined by "\n\n", with any user text that follows; a merged turn is a
                 user turn for the transitions and the "last user message"

Think Max (``reasoning_effort="max"``) is thinking mode with the encoder's effort instruction as text
right after BOS, before the first message; High is thinking mode as it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from appliance.engine.dsml import render_tool_calls, render_tool_result, tools_parts
from appliance.engine.tokenizer import BOS_TOKEN, EOS_TOKEN, Tokenizer
from appliance.engine.types import ChatMessage, ReasoningEffort, ToolCall
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
_ROLES = ("system", "user", "assistant", "tool")
# encoding_dsv4.py's REASONING_EFFORT_MAX, written before message 0 in thinking mode with effort max.
REASONING_EFFORT_MAX = (
    "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n"
    "You MUST be very thorough in your thinking and comprehensively decompose the problem to resolve "
    "the root cause, rigorously stress-testing your logic against all potential paths, edge cases, and "
    "adversarial scenarios.\n"
    "Explicitly write out your entire deliberation process, documenting every intermediate step, "
    "considered alternative, and rejected hypothesis to ensure absolutely no assumption is left "
    "unchecked.\n\n"
)


class Special(str):
    """A piece of prompt markup that is one control token (never produced from user text)."""


Segments = list[str]  # markup (Special) and text pieces, in order


def render_chat(
    messages: Sequence[ChatMessage],
    *,
    thinking: bool,
    drop_thinking: bool = True,
    tools: Sequence[Mapping[str, Any]] | None = None,
    reasoning_effort: ReasoningEffort | None = None,
) -> str:
    """The prompt text for ``messages``, exactly as DeepSeek's encoder writes it."""
    segments = chat_segments(
        messages,
        thinking=thinking,
        drop_thinking=drop_thinking,
        tools=tools,
        reasoning_effort=reasoning_effort,
    )
    return "".join(segments)


@dataclass
class _Turn:
    """A message as the encoder renders it: consecutive user and tool messages are one user turn."""

    role: str
    content: str = ""
    reasoning: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    # (tool_call_id, text) of each part; the id is None for user text.
    blocks: list[tuple[str | None, str]] = field(default_factory=list)
    functions: Sequence[Mapping[str, Any]] = ()

    def user_text(self) -> str:
        return "\n\n".join(text if call is None else render_tool_result(text) for call, text in self.blocks)


def _turns(messages: Sequence[ChatMessage], tools: Sequence[Mapping[str, Any]]) -> list[_Turn]:
    """The encoder's merge_tool_messages + sort_tool_results_by_call_order, and the tools attached."""
    turns: list[_Turn] = []
    for m in messages:
        if m.role in ("user", "tool"):
            block = (None if m.role == "user" else (m.tool_call_id or ""), m.content)
            if turns and turns[-1].role == "user":
                turns[-1].blocks.append(block)
            else:
                turns.append(_Turn("user", blocks=[block]))
            continue
        turns.append(_Turn(m.role, m.content, m.reasoning, m.tool_calls))
    order: dict[str, int] = {}
    for turn in turns:
        if turn.role == "assistant" and turn.tool_calls:
            order = {c.id: k for k, c in enumerate(turn.tool_calls)}
        results = [b for b in turn.blocks if b[0] is not None]
        if len(results) > 1 and order:
            ranked = iter(sorted(results, key=lambda b: order.get(b[0] or "", 0)))  # stable, as the encoder's
            turn.blocks = [b if b[0] is None else next(ranked) for b in turn.blocks]
    if tools:
        functions = [t.get("function", t) for t in tools]
        # On the chat's own system message (vLLM first put a new, empty one in front even then,
        # which moved the tools above the instructions); a new empty one only when there is none.
        if turns and turns[0].role == "system":
            turns[0].functions = functions
        else:
            turns.insert(0, _Turn("system", functions=functions))
    return turns


def chat_segments(
    messages: Sequence[ChatMessage],
    *,
    thinking: bool,
    drop_thinking: bool = True,
    tools: Sequence[Mapping[str, Any]] | None = None,
    reasoning_effort: ReasoningEffort | None = None,
) -> Segments:
    """:func:`render_chat` as segments: control tokens as :class:`Special`, everything else text."""
    if not messages:
        raise InputError("a chat needs at least one message")
    for message in messages:
        if message.role not in _ROLES:
            raise InputError(f"unknown chat role {message.role!r} (expected system, user, assistant or tool)")
    turns = _turns(messages, tools or ())
    drop = drop_thinking and not tools  # the encoder keeps all reasoning when tools are offered
    last_user = max((i for i, t in enumerate(turns) if t.role == "user"), default=-1)
    parts: Segments = [Special(BOS_TOKEN)]
    if thinking and reasoning_effort == "max":
        parts.append(REASONING_EFFORT_MAX)
    for i, turn in enumerate(turns):
        if turn.role == "system":
            parts.append(turn.content)
            if turn.functions:
                parts.append("\n\n")
                parts += [Special(text) if control else text for text, control in tools_parts(turn.functions)]
        elif turn.role == "user":
            parts += [Special(USER_TOKEN), turn.user_text()]
            followed_by_reply = i == len(turns) - 1 or turns[i + 1].role == "assistant"
            if followed_by_reply:
                opens_thinking = thinking and (not drop or i >= last_user)
                parts += [Special(ASSISTANT_TOKEN), Special(THINK_START if opens_thinking else THINK_END)]
        else:
            # Reasoning of turns before the last user message is dropped (drop_thinking).
            keeps_reasoning = thinking and (not drop or i > last_user)
            if keeps_reasoning:
                parts += [turn.reasoning or "", Special(THINK_END)]
            parts += [turn.content, render_tool_calls(turn.tool_calls), Special(EOS_TOKEN)]
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

    def chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        thinking: bool = False,
        tools: Sequence[Mapping[str, Any]] | None = None,
        reasoning_effort: ReasoningEffort | None = None,
    ) -> list[int]:
        segments = chat_segments(messages, thinking=thinking, tools=tools, reasoning_effort=reasoning_effort)
        return encode_segments(self._tokenizer, segments)

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
