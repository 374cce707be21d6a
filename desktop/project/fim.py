"""Fill-in-the-middle: the text before and after the cursor, trimmed to what the model can take.

A file can be far longer than the model's context (and a long prompt is slow to prefill), so only
the lines nearest the cursor go: the suffix gets up to :data:`SUFFIX_SHARE` of the budget, the
prefix the rest (and whatever the suffix leaves). Whole lines are kept — a half line at the edge
reads to the model like a syntax error — except the cursor's own line, whose part next to the
cursor is always kept, cut to the budget when it alone is longer. Token counts use the same
estimate as context assembly (:func:`desktop.project.context.estimate_tokens`).

The desktop editor and the language server both trim with :func:`fim_window`.
"""

from __future__ import annotations

from desktop.project.context import estimate_tokens

__all__ = ["DEFAULT_FIM_BUDGET", "SUFFIX_SHARE", "fim_window"]

DEFAULT_FIM_BUDGET = 1024
SUFFIX_SHARE = 0.25


def _keep_tail(text: str, budget: int) -> str:
    """The last whole lines of ``text`` within ``budget`` tokens (its last line always, cut if need be)."""
    if estimate_tokens(text) <= budget:
        return text
    head, sep, last = text.rpartition("\n")
    if estimate_tokens(last) >= budget:
        return last[len(last) - budget * 4 :] if budget > 0 else ""
    used = estimate_tokens(last)
    kept: list[str] = [last]
    for line in reversed(head.split("\n")) if sep else ():
        cost = estimate_tokens(line) + 1
        if used + cost > budget:
            break
        kept.append(line)
        used += cost
    return "\n".join(reversed(kept))


def _keep_head(text: str, budget: int) -> str:
    """The first whole lines of ``text`` within ``budget`` tokens (its first line always, cut if need be)."""
    if estimate_tokens(text) <= budget:
        return text
    first, sep, rest = text.partition("\n")
    if estimate_tokens(first) >= budget:
        return first[: budget * 4] if budget > 0 else ""
    used = estimate_tokens(first)
    kept = [first]
    for line in rest.split("\n") if sep else ():
        cost = estimate_tokens(line) + 1
        if used + cost > budget:
            break
        kept.append(line)
        used += cost
    return "\n".join(kept)


def fim_window(prefix: str, suffix: str, *, budget: int = DEFAULT_FIM_BUDGET, suffix_share: float = SUFFIX_SHARE) -> tuple[str, str]:
    """``(prefix, suffix)`` trimmed to about ``budget`` tokens in all, around the cursor between them."""
    if budget < 1:
        raise ValueError("the FIM budget must be at least one token")
    suffix_kept = _keep_head(suffix, max(0, int(budget * suffix_share)))
    prefix_kept = _keep_tail(prefix, budget - estimate_tokens(suffix_kept))
    # What the prefix left (a short file head) flows back to the suffix.
    room = budget - estimate_tokens(prefix_kept)
    if len(suffix_kept) < len(suffix) and room > estimate_tokens(suffix_kept):
        suffix_kept = _keep_head(suffix, room)
    return prefix_kept, suffix_kept
