"""DeepSeek V4's chat encoder rules (``encoding_dsv4.py``'s ``encode_messages``), written down from
its rules for text-only chats, as an independent check on ``appliance.engine.prompt``.

Only what a chat without tools uses: system, user and assistant turns, ``thinking_mode`` ``chat`` or
``thinking``, ``drop_thinking`` and ``reasoning_effort``. The result is the prompt as one string;
the model's tokenizer then encodes it with special-token strings as control tokens, which is how
DeepSeek's reference (and vLLM's ``deepseek_v4`` tokenizer mode) turns it into ids.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["encode_messages"]

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
USER = "<｜User｜>"
ASSISTANT = "<｜Assistant｜>"
THINK_START, THINK_END = "<think>", "</think>"
EFFORT_MAX = (
    "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n"
    "You MUST be very thorough in your thinking and comprehensively decompose the problem to resolve the "
    "root cause, rigorously stress-testing your logic against all potential paths, edge cases, and "
    "adversarial scenarios.\n"
    "Explicitly write out your entire deliberation process, documenting every intermediate step, "
    "considered alternative, and rejected hypothesis to ensure absolutely no assumption is left unchecked."
    "\n\n"
)


def encode_messages(
    messages: Sequence[Mapping[str, Any]],
    *,
    thinking_mode: str,
    drop_thinking: bool = True,
    reasoning_effort: str | None = None,
) -> str:
    thinking = thinking_mode == "thinking"
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=-1)
    # Dropping thinking: every assistant turn before the last user message loses its reasoning.
    turns = [
        {k: v for k, v in m.items() if k != "reasoning_content"}
        if thinking and drop_thinking and m["role"] == "assistant" and i < last_user
        else dict(m)
        for i, m in enumerate(messages)
    ]
    prompt = BOS
    for i, turn in enumerate(turns):
        if i == 0 and thinking and reasoning_effort == "max":
            prompt += EFFORT_MAX
        role = turn["role"]
        if role == "system":
            prompt += turn["content"]
        elif role == "user":
            prompt += USER + turn["content"]
        elif role == "assistant":
            if thinking and (not drop_thinking or i > last_user):
                prompt += turn.get("reasoning_content", "") + THINK_END
            prompt += turn["content"] + EOS
        else:
            raise ValueError(f"role {role!r} is outside these rules")
        next_role = turns[i + 1]["role"] if i + 1 < len(turns) else None
        if next_role not in (None, "assistant"):
            continue
        if role == "user":
            opens = thinking and (not drop_thinking or i >= last_user)
            prompt += ASSISTANT + (THINK_START if opens else THINK_END)
    return prompt
