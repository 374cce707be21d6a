"""Free space on the data directory: refuse new work before the disk is full, and say so.

The audit log is append-only and every generation must be recorded before it runs, so a full disk
stops the appliance with a half-written transaction at the worst moment. Below
``disk_min_free_bytes`` free, new generations get 503 (``disk_low``), ``/readyz`` reports
``disk: low`` (503, so a load balancer moves traffic elsewhere) and ``/metrics`` shows
``enclave_disk_low 1`` with ``enclave_disk_free_bytes`` for alerting. What is already running
finishes, and its closing records still fit in the margin.

The data directory is where SQLite, the keys and the models live; with PostgreSQL the database's
own disk is the database server's to watch.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path

from appliance.api.errors import ApiError
from appliance.api.metrics import Metrics

__all__ = ["DiskWatch"]

# statvfs is cheap, but not free at thousands of requests a second: look at most this often.
_EVERY_S = 1.0


class DiskWatch:
    def __init__(
        self, path: Path, *, min_free_bytes: int, metrics: Metrics, monotonic: Callable[[], float]
    ) -> None:
        self._path = path
        self._min_free = min_free_bytes
        self._metrics = metrics
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._checked_at: float | None = None
        self._free = 0

    def free_bytes(self) -> int:
        now = self._monotonic()
        with self._lock:
            if self._checked_at is None or now - self._checked_at >= _EVERY_S:
                self._free = shutil.disk_usage(self._existing(self._path)).free
                self._checked_at = now
                self._metrics.disk_free.set(self._free)
                self._metrics.disk_low.set(1.0 if self._free < self._min_free else 0.0)
            return self._free

    def status(self) -> str:
        """``ok``, or ``low: N bytes free, under M`` for /readyz."""
        free = self.free_bytes()
        return "ok" if free >= self._min_free else f"low: {free} bytes free, under {self._min_free}"

    def refuse_if_low(self) -> None:
        free = self.free_bytes()
        if free < self._min_free:
            raise ApiError(
                503,
                f"the appliance's disk is almost full ({free} bytes free); new work is refused until "
                "an administrator frees space",
                type="service_unavailable",
                code="disk_low",
            )

    @staticmethod
    def _existing(path: Path) -> Path:
        while not path.exists() and path.parent != path:
            path = path.parent
        return path
