"""Time, passed in rather than read inside, so tests can drive quotas, expiry and latency."""

from __future__ import annotations

import datetime as dt
import time
from typing import Protocol

__all__ = ["Clock", "SystemClock"]


class Clock(Protocol):
    def now(self) -> dt.datetime:
        """Aware UTC wall-clock time (token expiry, audit times)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (rate windows, latencies)."""
        ...


class SystemClock:
    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    def monotonic(self) -> float:
        return time.perf_counter()
