"""Prometheus metrics, written in the text exposition format (version 0.0.4) without a client library.

Counters, gauges and histograms are small locked objects; ``Metrics.render()`` produces the page that
``GET /metrics`` serves. Gauges that belong to someone else (the engine's queue depth) are read at
render time through callbacks, so they are never stale.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable, Iterable, Sequence

__all__ = ["Counter", "Gauge", "Histogram", "Metrics"]

Labels = tuple[tuple[str, str], ...]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Labels, extra: Labels = ()) -> str:
    items = labels + extra
    if not items:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in items) + "}"


def _num(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class _Metric(abc.ABC):
    kind = ""

    def __init__(self, name: str, help_text: str) -> None:
        self.name = name
        self.help = help_text
        self._lock = threading.Lock()

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    @abc.abstractmethod
    def lines(self) -> list[str]: ...


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help_text: str) -> None:
        super().__init__(name, help_text)
        self._values: dict[Labels, float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        with self._lock:
            return self._values.get(tuple(sorted(labels.items())), 0.0)

    def lines(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return [f"{self.name}{_labels(k)} {_num(v)}" for k, v in items]


class Gauge(_Metric):
    kind = "gauge"

    def __init__(self, name: str, help_text: str, read: Callable[[], float] | None = None) -> None:
        super().__init__(name, help_text)
        self._value = 0.0
        self._read = read

    def add(self, amount: float) -> None:
        with self._lock:
            self._value += amount

    def set(self, value: float) -> None:
        with self._lock:
            self._value = value

    def value(self) -> float:
        if self._read is not None:
            return float(self._read())
        with self._lock:
            return self._value

    def lines(self) -> list[str]:
        return [f"{self.name} {_num(self.value())}"]


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name: str, help_text: str, buckets: Sequence[float] = LATENCY_BUCKETS) -> None:
        super().__init__(name, help_text)
        self._bounds = tuple(sorted(buckets))
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0
        self._count = 0

    def observe(self, value: float) -> None:
        with self._lock:
            self._sum += value
            self._count += 1
            for i, bound in enumerate(self._bounds):
                if value <= bound:
                    self._counts[i] += 1
                    break

    @property
    def count(self) -> int:
        with self._lock:
            return self._count

    def lines(self) -> list[str]:
        with self._lock:
            counts, total, n = list(self._counts), self._sum, self._count
        out, running = [], 0
        for bound, c in zip(self._bounds, counts, strict=True):
            running += c
            out.append(f'{self.name}_bucket{{le="{_num(bound)}"}} {running}')
        out.append(f'{self.name}_bucket{{le="+Inf"}} {n}')
        out.append(f"{self.name}_sum {_num(total)}")
        out.append(f"{self.name}_count {n}")
        return out


class Metrics:
    """The appliance's metrics. ``queue_depth``/``running`` read the engine when rendered."""

    def __init__(
        self, *, queue_depth: Callable[[], float] | None = None, running: Callable[[], float] | None = None
    ) -> None:
        self.requests = Counter("enclave_http_requests_total", "HTTP requests by route, method and status.")
        self.generations = Counter(
            "enclave_generations_total", "Generations by endpoint and outcome (completed, cancelled, failed)."
        )
        self.tokens = Counter("enclave_tokens_total", "Tokens processed, by kind (prompt, completion).")
        self.time_to_first_token = Histogram(
            "enclave_time_to_first_token_seconds", "From request arrival to the first generated token."
        )
        self.request_latency = Histogram(
            "enclave_generation_duration_seconds", "From request arrival to the end of the generation."
        )
        self.audit_commit = Histogram(
            "enclave_audit_commit_seconds", "Time to durably commit one audit event."
        )
        self.audit_suppressed = Counter(
            "enclave_audit_failures_suppressed_total",
            "Unauthenticated failures counted into a summary record instead of recorded one by one.",
        )
        self.disk_free = Gauge("enclave_disk_free_bytes", "Free space on the data directory's file system.")
        self.disk_low = Gauge(
            "enclave_disk_low", "1 while free space is under disk_min_free_bytes: new work is refused."
        )
        self.active_streams = Gauge("enclave_active_generations", "Generations in flight in this process.")
        self.queue_depth = Gauge(
            "enclave_engine_queue_depth", "Requests waiting for an engine slot.", queue_depth or (lambda: 0.0)
        )
        self.engine_running = Gauge(
            "enclave_engine_running", "Sequences the engine is running.", running or (lambda: 0.0)
        )

    def _all(self) -> Iterable[_Metric]:
        return (
            self.requests,
            self.generations,
            self.tokens,
            self.time_to_first_token,
            self.request_latency,
            self.audit_commit,
            self.audit_suppressed,
            self.disk_free,
            self.disk_low,
            self.active_streams,
            self.queue_depth,
            self.engine_running,
        )

    def render(self) -> str:
        lines: list[str] = []
        for metric in self._all():
            lines.extend(metric.header())
            lines.extend(metric.lines())
        return "\n".join(lines) + "\n"
