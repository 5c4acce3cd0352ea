"""`Metrics`: which function is slow or failing, per minute, as Sidekiq 7's metrics pages.

    Metrics().functions(minutes=60)       # per function over the last hour, slowest total first
    Metrics().series("app.mail:send", 60)  # per minute for one function, oldest first

Each server keeps per-function counts, total run time and a run-time histogram in memory and
adds them to the current UTC minute at every heartbeat (difo.stats); minutes are kept a few
days. Percentiles are read from the histogram, so they are estimates within a bucket (about
x1.5 wide); the count, failures and total time are exact.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from difo import stats
from difo.api.connection import backend_for
from difo.backends import Backend, FunctionTimes

KEPT_MINUTES = 3 * 24 * 60  # how far back minutes are kept (METRICS_TTL)


@dataclass(frozen=True)
class FunctionMetrics:
    """Runs of one function over a window (or one minute): times in milliseconds; the
    percentiles are None when it did not run."""

    function: str
    count: int
    failures: int
    total_ms: float
    p50_ms: float | None
    p95_ms: float | None

    @property
    def mean_ms(self) -> float | None:
        return self.total_ms / self.count if self.count else None

    def to_dict(self) -> dict[str, Any]:
        def ms(value: float | None) -> float | None:
            return None if value is None else round(value, 3)

        return {"function": self.function, "count": self.count, "failures": self.failures,
                "total_ms": ms(self.total_ms), "mean_ms": ms(self.mean_ms),
                "p50_ms": ms(self.p50_ms), "p95_ms": ms(self.p95_ms)}


@dataclass(frozen=True)
class MinuteMetrics:
    """One function in one minute; `minute` is its start (epoch seconds, UTC)."""

    minute: float
    metrics: FunctionMetrics

    def to_dict(self) -> dict[str, Any]:
        return {"minute": self.minute, **self.metrics.to_dict()}


class Metrics:
    """Per-function metrics read from the backend (the read side of difo.stats)."""

    def __init__(self, *, backend: Backend | str | None = None) -> None:
        self.backend = backend_for(backend)

    def functions(self, minutes: int = 60, *, now: float | None = None) -> list[FunctionMetrics]:
        """Every function that ran in the last `minutes` minutes (the current one included),
        the largest total run time first."""
        merged: dict[str, FunctionTimes] = {}
        for per_function in self.backend.function_metrics(_stamps(minutes, now)):
            for name, times in per_function.items():
                stats.merge(merged.setdefault(name, FunctionTimes()), times)
        found = [_summary(name, times) for name, times in merged.items()]
        return sorted(found, key=lambda m: (-m.total_ms, m.function))

    def series(self, function: str, minutes: int = 60, *,
               now: float | None = None) -> list[MinuteMetrics]:
        """`function` minute by minute over the last `minutes` minutes, oldest first; a
        minute it did not run in has count 0."""
        stamps = _stamps(minutes, now)
        start = _minute_start(now)
        out = []
        for back, per_minute in enumerate(self.backend.function_metrics(stamps)):
            times = per_minute.get(function, FunctionTimes())
            out.append(MinuteMetrics(start - 60 * back, _summary(function, times)))
        out.reverse()
        return out

    def totals(self) -> list[FunctionMetrics]:
        """Every function since the store began, the largest total run time first."""
        found = [_summary(name, times) for name, times in self.backend.function_totals().items()]
        return sorted(found, key=lambda m: (-m.total_ms, m.function))


def _minute_start(now: float | None) -> float:
    current = time.time() if now is None else now
    return current - current % 60


def _stamps(minutes: int, now: float | None) -> list[str]:
    """The stamps of the last `minutes` minutes, the current one first."""
    start = _minute_start(now)
    count = min(max(minutes, 1), KEPT_MINUTES)
    return [stats.minute(start - 60 * back) for back in range(count)]


def _summary(name: str, times: FunctionTimes) -> FunctionMetrics:
    return FunctionMetrics(name, times.count, times.failures, times.seconds * 1000,
                           stats.percentile(times.buckets, 0.50),
                           stats.percentile(times.buckets, 0.95))
