"""Per-caller quotas from the team policy: requests/min, tokens/min, concurrent streams, prompt and output caps.

A rate limit that will clear by itself is a :class:`QuotaError` with ``retry_after`` (-> 429 with
``Retry-After``); a hard cap the request itself breaks (a prompt longer than the policy allows) is a
:class:`QuotaError` without it (-> 400 naming the limit), since retrying cannot help.

The limits come from the caller's team policy and apply to each caller (user) separately: a team of
twenty does not share one budget. Windows are sliding, sixty seconds long, kept in memory per
appliance process — several replicas each enforce the policy on what they serve.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from shared.errors import QuotaError

__all__ = ["QuotaLease", "QuotaLimits", "QuotaTracker"]

WINDOW_S = 60.0


@dataclass(frozen=True, kw_only=True)
class QuotaLimits:
    """``None`` means no limit."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    concurrent_streams: int | None = None
    max_prompt_tokens: int | None = None
    max_output_tokens: int | None = None


@dataclass
class _Usage:
    requests: deque[float] = field(default_factory=deque)
    tokens: deque[tuple[float, int]] = field(default_factory=deque)
    token_total: int = 0
    active: int = 0

    def expire(self, now: float) -> None:
        while self.requests and self.requests[0] <= now - WINDOW_S:
            self.requests.popleft()
        while self.tokens and self.tokens[0][0] <= now - WINDOW_S:
            self.token_total -= self.tokens.popleft()[1]


class QuotaLease:
    """One admitted request. ``finish(completion_tokens)`` once, when it ends however it ends."""

    def __init__(self, tracker: QuotaTracker, key: Hashable) -> None:
        self._tracker = tracker
        self._key = key
        self._done = False

    def finish(self, completion_tokens: int) -> None:
        if self._done:
            return
        self._done = True
        self._tracker._release(self._key, completion_tokens)


class QuotaTracker:
    def __init__(self, monotonic: Callable[[], float]) -> None:
        self._now = monotonic
        self._lock = threading.Lock()
        self._usage: dict[Hashable, _Usage] = {}

    def admit(
        self, key: Hashable, limits: QuotaLimits, *, prompt_tokens: int, max_output_tokens: int
    ) -> QuotaLease:
        """Admit one generation or raise :class:`QuotaError`; the caller must ``finish`` the lease."""
        if limits.max_prompt_tokens is not None and prompt_tokens > limits.max_prompt_tokens:
            raise QuotaError(
                f"prompt has {prompt_tokens} tokens; the policy allows at most {limits.max_prompt_tokens} "
                "(max_prompt_tokens)"
            )
        if limits.max_output_tokens is not None and max_output_tokens > limits.max_output_tokens:
            raise QuotaError(
                f"max_tokens {max_output_tokens} is over the policy's limit of {limits.max_output_tokens} "
                "(max_output_tokens)"
            )
        with self._lock:
            now = self._now()
            usage = self._usage.setdefault(key, _Usage())
            usage.expire(now)
            if limits.concurrent_streams is not None and usage.active >= limits.concurrent_streams:
                raise QuotaError(
                    f"{usage.active} generations already running; the policy allows "
                    f"{limits.concurrent_streams} at once (concurrent_streams)",
                    retry_after=1.0,
                )
            rpm = limits.requests_per_minute
            if rpm is not None and len(usage.requests) >= rpm:
                raise QuotaError(
                    f"more than {rpm} requests in a minute (requests_per_minute)",
                    retry_after=usage.requests[len(usage.requests) - rpm] + WINDOW_S - now,
                )
            tpm = limits.tokens_per_minute
            if tpm is not None and usage.token_total + prompt_tokens > tpm:
                raise QuotaError(
                    f"more than {tpm} tokens in a minute (tokens_per_minute)",
                    retry_after=self._token_retry(usage, tpm - prompt_tokens, now),
                )
            usage.requests.append(now)
            self._add_tokens(usage, now, prompt_tokens)
            usage.active += 1
        return QuotaLease(self, key)

    @staticmethod
    def _token_retry(usage: _Usage, room: int, now: float) -> float:
        """Seconds until the window's total falls to ``room`` (or the whole window when it never will)."""
        if room < 0:
            return WINDOW_S
        total = usage.token_total
        for stamp, amount in usage.tokens:
            total -= amount
            if total <= room:
                return max(stamp + WINDOW_S - now, 0.001)
        return WINDOW_S

    @staticmethod
    def _add_tokens(usage: _Usage, now: float, amount: int) -> None:
        if amount > 0:
            usage.tokens.append((now, amount))
            usage.token_total += amount

    def _release(self, key: Hashable, completion_tokens: int) -> None:
        with self._lock:
            usage = self._usage[key]
            usage.active -= 1
            now = self._now()
            usage.expire(now)
            self._add_tokens(usage, now, completion_tokens)

    def active(self, key: Hashable) -> int:
        with self._lock:
            usage = self._usage.get(key)
            return usage.active if usage else 0
