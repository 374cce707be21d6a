"""Unauthenticated failures (a malformed or unknown bearer token, a throttled login) kept as evidence
without letting strangers fill the disk with it.

Each failure costs an attacker nothing, and each used to be a durable audit record (~1,000 records/s,
16 MB a minute, on an append-only log). Now, per fixed interval of ``interval_s``:

- the first ``per_source`` failures from a source are recorded one by one, as before, so the log
  still shows what each source tried first, with its request id;
- past that, and past ``per_interval`` individual records in all (many sources at once), failures
  are only counted; when the interval closes one ``auth.failures.suppressed`` record carries the
  counts, by source (the ``top_sources`` busiest named; the rest summed) and by action and reason.

So the log grows by at most ``per_interval + 1`` records per interval, whatever the attacker sends.
A source is an IPv4 address, or the /64 an IPv6 address is in (one host is given a whole /64, so
per-address counting would not cap anything there).

The closing summary is written when the next failure arrives after the interval, and by
:meth:`FailureAggregator.drain` at a housekeeping tick and at shutdown (``force``), so a flood that
stops still leaves its count.
"""

from __future__ import annotations

import ipaddress
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FailureAggregator", "Summary", "source_of"]

SUMMARY_ACTION = "auth.failures.suppressed"


def source_of(address: str) -> str:
    """The unit a cap applies to: the address, or its /64 for IPv6."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


@dataclass(frozen=True)
class Summary:
    """What one closed interval suppressed: the details of its ``auth.failures.suppressed`` record."""

    window_start: float
    window_s: float
    details: dict[str, Any]


@dataclass
class _Window:
    start: float
    written: Counter[str] = field(default_factory=Counter)
    suppressed: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)

    @property
    def total_written(self) -> int:
        return sum(self.written.values())


class FailureAggregator:
    def __init__(
        self, *, interval_s: float, per_source: int, per_interval: int, top_sources: int = 20
    ) -> None:
        self._interval = interval_s
        self._per_source = per_source
        self._per_interval = per_interval
        self._top = top_sources
        self._lock = threading.Lock()
        self._window: _Window | None = None

    def offer(self, address: str, action: str, reason: str, *, now: float) -> tuple[bool, list[Summary]]:
        """Whether to record this failure on its own, and the summaries of intervals that closed."""
        source = source_of(address)
        with self._lock:
            closed = self._roll(now)
            window = self._window
            assert window is not None
            if window.written[source] < self._per_source and window.total_written < self._per_interval:
                window.written[source] += 1
                return True, closed
            window.suppressed[source] += 1
            window.kinds[f"{action}:{reason}"] += 1
            return False, closed

    def drain(self, *, now: float, force: bool = False) -> list[Summary]:
        """Summaries of closed intervals; with ``force``, the open one too (shutdown)."""
        with self._lock:
            closed = self._roll(now)
            if force and self._window is not None:
                closed += self._close(self._window)
                self._window = None
            return closed

    def _roll(self, now: float) -> list[Summary]:
        window = self._window
        start = now - now % self._interval
        if window is not None and window.start == start:
            return []
        self._window = _Window(start)
        return self._close(window) if window is not None else []

    def _close(self, window: _Window) -> list[Summary]:
        total = sum(window.suppressed.values())
        if total == 0:
            return []
        busiest = window.suppressed.most_common(self._top)
        named = sum(count for _, count in busiest)
        details: dict[str, Any] = {
            "suppressed": total,
            "recorded": window.total_written,
            "interval_s": int(self._interval),
            "sources": dict(busiest),
            "other_sources": total - named,
            "distinct_sources": len(window.suppressed),
            "kinds": dict(window.kinds),
        }
        return [Summary(window.start, self._interval, details)]
