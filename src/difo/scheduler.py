"""The scheduler: moves scheduled and retry units whose time has come onto their queues,
and fires the ticks of periodic units (periodic.py).

A backend script moves due units into this process's staging record (atomically, so two
servers never enqueue one unit twice); Python sets `enqueued_at`, as Sidekiq does on every
push into a list, and a second script pushes them. A crash between the two leaves the units
in staging, recovered like any orphan. Every server polls, each at a jittered interval.
"""

from __future__ import annotations

import logging
import random
import threading

from difo import unit
from difo.backends import Backend, Placement, Staged
from difo.errors import BackendError, PayloadError
from difo.periodic import Firing

log = logging.getLogger("difo.scheduler")

BATCH = 100


class Scheduler:
    """Promotes due units for one server process."""

    def __init__(self, backend: Backend, identity: str, interval: float) -> None:
        self.backend = backend
        self.identity = identity
        self.interval = interval
        self.firing = Firing(backend, unit.now())
        # Staged units whose release failed: nobody else moves them while this server lives,
        # and a clean stop would strand them, so every pass (and the stop) tries again.
        self.unreleased: list[Placement] = []

    def step(self, now: float | None = None) -> int:
        """Fire periodic ticks and promote everything due; return how many units moved."""
        moved = self.firing.step(unit.now() if now is None else now)
        self.release_leftovers()
        while True:
            staged = self.backend.stage_due(self.identity, BATCH)
            if not staged:
                return moved
            self.unreleased = [promote(item, unit.now()) for item in staged]
            self.release_leftovers()
            moved += len(staged)

    def release_leftovers(self) -> None:
        """Release what a failed call left staged (release skips refs already moved)."""
        if self.unreleased:
            self.backend.release(self.identity, self.unreleased)
            self.unreleased = []

    def run(self, stop: threading.Event) -> None:
        """Poll until `stop` is set, at intervals jittered so servers do not poll together."""
        while not stop.wait(self.interval * random.uniform(0.5, 1.5)):
            try:
                self.step()
            except BackendError as exc:
                log.warning("scheduler: %s", exc)
            except Exception:  # keep polling: one bad entry must not stop every schedule
                log.exception("scheduler step failed")


def promote(staged: Staged, now: float) -> Placement:
    """A due unit goes to the head of its queue with a fresh enqueued_at; junk goes to dead."""
    try:
        current = unit.decode(staged.raw)
    except PayloadError as exc:
        wrapped = unit.wrap_invalid(staged.raw, f"{exc} (found in the schedule or retry set)",
                                    "default")
        return Placement(staged.ref, unit.encode(wrapped), dead=True)
    payload = dict(current.payload)
    payload["enqueued_at"] = now
    return Placement(staged.ref, unit.encode(payload), queue=current.queue)
