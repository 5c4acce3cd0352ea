"""The read and manage API: what the CLI and the dashboard show, and what they change.

    from difo.api import Queue, ScheduledSet, RetrySet, DeadSet, find
    Queue("default").size, Queue("default").latency()
    RetrySet().retry_all()
    find(jid)            # wherever the unit waits
    Stats().processed, Stats().history(7), ProcessSet(), Workers(), Metrics().functions(60)

Every class takes `backend=` (a Backend or a URL); by default it reads the backend the
process's client uses (DIFO_URL / REDIS_URL).
"""

from __future__ import annotations

from difo.api.connection import backend_for
from difo.api.entries import Entry
from difo.api.metrics import FunctionMetrics, Metrics, MinuteMetrics
from difo.api.processes import Process, ProcessSet, Work, Workers
from difo.api.queues import Queue, QueueEntry
from difo.api.sets import DeadSet, RetrySet, ScheduledSet, SetEntry, SortedSet
from difo.api.stats import Day, Stats
from difo.backends import Backend


def backend_info(*, backend: Backend | str | None = None) -> dict[str, str]:
    """What the backend is (Redis version, memory, clients, uptime; SQLite path and size)."""
    return backend_for(backend).info()


def find(jid: str, *, backend: Backend | str | None = None) -> Entry | None:
    """The unit with this jid in any queue, the schedule, the retry set or the dead set."""
    for queue in Queue.all(backend=backend):
        entry = queue.find(jid)
        if entry is not None:
            return entry
    for kind in (ScheduledSet, RetrySet, DeadSet):
        found = kind(backend=backend).find(jid)
        if found is not None:
            return found
    return None


__all__ = [
    "Day",
    "DeadSet",
    "Entry",
    "FunctionMetrics",
    "Metrics",
    "MinuteMetrics",
    "Process",
    "ProcessSet",
    "Queue",
    "QueueEntry",
    "RetrySet",
    "ScheduledSet",
    "SetEntry",
    "SortedSet",
    "Stats",
    "Work",
    "Workers",
    "backend_info",
    "find",
]
