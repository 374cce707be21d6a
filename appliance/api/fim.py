"""Fill-in-the-middle prompts that fit the context: an IDE sends whole files, so a FIM prompt longer
than the model holds is trimmed, never refused.

    encode(prefix, suffix) fits in budget?          -> as is
    else keep the lines nearest the cursor:            prefix loses lines from its start,
                                                       suffix loses lines from its end,
                                                       in proportion to their share, until it fits

Cutting at line boundaries keeps what the model sees well-formed code around the hole; the split in
proportion keeps both sides of the cursor (a prefix-only cut would blind the model to the code that
follows). Each round re-encodes, so the result is measured, not estimated.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["encode_fim_within", "fim_output_reserve", "trim_around_cursor"]

# Rounds of trimming before giving up on the lines and cutting characters.
_MAX_ROUNDS = 12


def fim_output_reserve(context_length: int, requested: int | None) -> int:
    """Tokens to leave for the completion: what was asked for, else a quarter of the context
    (at most 1024) — an autocomplete wants a few lines, not the room a chat answer needs."""
    if requested is not None:
        return min(requested, context_length - 1)
    return max(1, min(1024, context_length // 4))


def trim_around_cursor(prefix: str, suffix: str, keep: float) -> tuple[str, str]:
    """About ``keep`` (0..1) of each side, whole lines nearest the cursor first."""
    before = prefix.splitlines(keepends=True)
    after = suffix.splitlines(keepends=True)
    keep_before = int(len(prefix) * keep)
    keep_after = int(len(suffix) * keep)
    kept_before: list[str] = []
    size = 0
    for line in reversed(before):
        if size + len(line) > keep_before and kept_before:
            break
        if size + len(line) > keep_before:
            # The cursor's own line is longer than what may stay: keep its end.
            kept_before.append(line[len(line) - keep_before :] if keep_before else "")
            break
        kept_before.append(line)
        size += len(line)
    kept_after: list[str] = []
    size = 0
    for line in after:
        if size + len(line) > keep_after and kept_after:
            break
        if size + len(line) > keep_after:
            kept_after.append(line[:keep_after])
            break
        kept_after.append(line)
        size += len(line)
    return "".join(reversed(kept_before)), "".join(kept_after)


def encode_fim_within(
    encode: Callable[[str, str], list[int]], prefix: str, suffix: str, budget: int
) -> list[int]:
    """``encode(prefix, suffix)``, trimmed around the cursor until it is at most ``budget`` tokens."""
    ids = encode(prefix, suffix)
    keep = 1.0
    for _ in range(_MAX_ROUNDS):
        if len(ids) <= budget or not (prefix or suffix):
            return ids
        # Tokens are roughly proportional to characters: aim a little under the budget.
        keep *= max(0.05, min(0.95, 0.9 * budget / len(ids)))
        trimmed_prefix, trimmed_suffix = trim_around_cursor(prefix, suffix, keep)
        ids = encode(trimmed_prefix, trimmed_suffix)
    if len(ids) > budget:
        ids = encode("", "")
    return ids
