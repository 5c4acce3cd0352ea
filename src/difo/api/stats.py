"""`Stats`: totals, queue sizes and latencies, set sizes and the process count, computed as
Sidekiq's Stats computes them, so difo and Sidekiq's Web show the same numbers.

    stats = Stats()
    stats.processed, stats.failed, stats.enqueued, stats.default_queue_latency
    stats.history(7)     # per UTC day, today first

A Stats reads the backend once, when made; make a new one to refresh.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from difo import unit
from difo.api.connection import backend_for
from difo.api.entries import Entry
from difo.backends import Backend


@dataclass(frozen=True)
class Day:
    """One UTC day's counts: every finished unit is processed, failures also failed."""

    date: str
    processed: int
    failed: int


class Stats:
    """A snapshot of the totals and sizes (Sidekiq::Stats)."""

    def __init__(self, *, backend: Backend | str | None = None) -> None:
        self.backend = backend_for(backend)
        snapshot = self.backend.stats()
        self.fetched_at = unit.now()
        self.processed = snapshot.processed
        self.failed = snapshot.failed
        self.scheduled_size = snapshot.scheduled
        self.retry_size = snapshot.retry
        self.dead_size = snapshot.dead
        self.processes_size = snapshot.processes
        self.workers_size = snapshot.busy
        self.paused_queues = snapshot.paused
        # Largest first, as Sidekiq's Stats#queues sorts them.
        self.queues: dict[str, int] = dict(sorted(snapshot.queues.items(),
                                                  key=lambda item: (-item[1], item[0])))
        self.enqueued = sum(snapshot.queues.values())
        self.latencies: dict[str, float] = {
            name: _latency(self.backend, snapshot.oldest.get(name), name, self.fetched_at)
            for name in self.queues
        }

    def __repr__(self) -> str:
        return (f"<Stats processed={self.processed} failed={self.failed} "
                f"enqueued={self.enqueued}>")

    @property
    def default_queue_latency(self) -> float:
        """Seconds the oldest unit of queue `default` has waited (0.0 when empty)."""
        return self.latencies.get("default", 0.0)

    def history(self, days: int = 30) -> list[Day]:
        """Per-day processed and failed counts for the last `days` UTC days, today first."""
        today = time.time()
        dates = [time.strftime("%Y-%m-%d", time.gmtime(today - 86400 * back))
                 for back in range(max(days, 0))]
        counts = self.backend.day_counts(dates)
        return [Day(date, processed, failed)
                for date, (processed, failed) in zip(dates, counts, strict=True)]

    def to_dict(self) -> dict[str, Any]:
        """Fields for JSON output (`difo stats --json`)."""
        return {
            "processed": self.processed,
            "failed": self.failed,
            "enqueued": self.enqueued,
            "scheduled_size": self.scheduled_size,
            "retry_size": self.retry_size,
            "dead_size": self.dead_size,
            "processes_size": self.processes_size,
            "workers_size": self.workers_size,
            "default_queue_latency": round(self.default_queue_latency, 3),
            "queues": [{"queue": name, "size": size,
                        "latency": round(self.latencies[name], 3),
                        "paused": name in self.paused_queues}
                       for name, size in self.queues.items()],
            "paused_queues": sorted(self.paused_queues),
        }


def _latency(backend: Backend, oldest: bytes | None, queue: str, now: float) -> float:
    if oldest is None:
        return 0.0
    enqueued = Entry(backend, oldest, queue).enqueued_at
    return max(now - enqueued, 0.0) if enqueued else 0.0
