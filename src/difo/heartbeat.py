"""The heartbeat: the process record, the counts, remote signals, and orphan recovery.

Every few seconds a server writes Sidekiq's process record (so Sidekiq's ProcessSet and Web
see it), adds the counts its workers made since the last beat (kept in memory, never a round
trip per unit), records its liveness beat at the backend's clock, and reads one pending
signal (Sidekiq's `Process#quiet!` / `#stop!`). Then it looks for servers that stopped
beating and puts their in-flight units back: a unit that was started and orphaned three
times is a poison pill and goes to the dead set instead.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from difo import __version__, stats, unit
from difo.backends import Backend, Placement, ProcessBeat, Staged
from difo.config import Settings
from difo.errors import BackendError, PayloadError
from difo.worker import WorkerState

log = logging.getLogger("difo.heartbeat")

POISON_LIMIT = 3


def new_identity() -> str:
    """`hostname:pid:nonce`, Sidekiq's form."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(6).hex()}"


class Heartbeat:
    """Beats for one server process; `step()` is one beat."""

    def __init__(
        self,
        backend: Backend,
        identity: str,
        settings: Settings,
        states: Sequence[WorkerState],
        on_signal: Callable[[str], None],
        is_quiet: Callable[[], bool],
        is_stopping: Callable[[], bool] | None = None,
    ) -> None:
        self.backend = backend
        self.identity = identity
        self.settings = settings
        self.states = states
        self.on_signal = on_signal
        self.is_quiet = is_quiet
        self.is_stopping = is_stopping or (lambda: False)
        self.started_at = time.time()
        self.info = self._info()
        self._flushed_processed = 0
        self._flushed_failed = 0
        self._flushed_functions: dict[str, list[float]] = {}
        self._last_success: float | None = None
        self._healthy = False
        self.unreleased: list[Placement] = []  # orphans taken whose release failed

    def step(self, final: bool = False) -> bool:
        """One beat; True when it reached the backend. Recovers orphans when healthy, unless
        `final` (the beat that flushes the last counts at shutdown)."""
        processed = sum(state.processed for state in self.states)
        failed = sum(state.failed for state in self.states)
        functions = stats.totals(state.functions for state in self.states)
        work = {}
        for state in self.states:
            current = state.current
            if current is not None:
                queue, raw = current
                work[state.tid or str(state.index)] = json.dumps({
                    "queue": queue,
                    "payload": raw.decode("utf-8", "replace"),
                    "run_at": int(state.started_at),
                }).encode()
        beat = ProcessBeat(
            identity=self.identity, info=self.info, busy=len(work), quiet=self.is_quiet(),
            rss_kb=rss_kb(), concurrency=self.settings.workers, work=work,
            processed=processed - self._flushed_processed,
            failed=failed - self._flushed_failed,
            stopping=self.is_stopping(),
            functions=stats.since(functions, self._flushed_functions), minute=stats.minute(),
        )
        try:
            reply = self.backend.beat(beat)
        except BackendError as exc:
            log.warning("heartbeat: %s", exc)
            self._healthy = False
            return False
        self._flushed_processed, self._flushed_failed = processed, failed
        self._flushed_functions = functions
        now = time.monotonic()
        # After a stall every server looks dead at once: recover only on steady beats.
        steady = (self._last_success is not None
                  and now - self._last_success < self.settings.dead_after / 2)
        self._last_success = now
        self._healthy = True
        if final:
            return True
        if reply.signal:
            self.on_signal(reply.signal)
        if steady:
            self.recover()
        return True

    def recover(self) -> int:
        """Put back the in-flight units of servers that stopped beating; return how many."""
        try:
            self.release_leftovers()
            staged = self.backend.take_orphans(self.identity, self.settings.dead_after)
            if not staged:
                return 0
            placements = [place_orphan(item, unit.now())
                          for item in sorted(staged, key=_newest_claim_first)]
            self.unreleased = placements
            self.release_leftovers()
        except BackendError as exc:
            log.warning("orphan recovery: %s", exc)
            return 0
        owners = sorted({item.owner for item in staged})
        dead = sum(1 for p in placements if p.dead)
        log.warning("recovered %d units of dead server(s) %s (%d to the dead set)",
                    len(placements), ", ".join(owners), dead)
        return len(placements)

    def release_leftovers(self) -> None:
        """Release the orphans a failed call left in our staging record: nobody else would
        while this server lives (release skips refs already moved)."""
        if self.unreleased:
            self.backend.release(self.identity, self.unreleased)
            self.unreleased = []

    def run(self, stop: threading.Event) -> None:
        # A beat counts as steady only within dead_after / 2 of the last one (see step), and
        # beats come a little later than every `heartbeat`: with DIFO_DEAD_AFTER at exactly
        # twice DIFO_HEARTBEAT, as allowed, no beat would be steady and nothing recovered.
        interval = min(self.settings.heartbeat, self.settings.dead_after / 2.5)
        while not stop.wait(interval):
            try:
                self.step()
            except Exception:  # never let the heartbeat die: the server would look dead
                log.exception("heartbeat failed")

    def _info(self) -> bytes:
        weights = {spec.name: spec.weight for spec in self.settings.queues}
        return json.dumps({
            "hostname": socket.gethostname(),
            "started_at": self.started_at,
            "pid": os.getpid(),
            "tag": self.settings.tag,
            "concurrency": self.settings.workers,
            "queues": [spec.name for spec in self.settings.queues],
            "weights": [weights],
            "labels": ["difo"],
            "identity": self.identity,
            "version": __version__,
            "embedded": False,
        }).encode()


def place_orphan(staged: Staged, now: float) -> Placement:
    """Where an orphaned unit goes: back to be popped next, or dead as a poison pill.

    A unit counts as orphaned when its server is known to have started it, or when it was
    never orphaned before (it may have been running). Once orphaned, a unit's start is
    recorded before it runs, so units merely fetched beside a poison pill are not blamed.
    A unit in staging for promotion never ran: it goes to its queue as a new push.
    """
    try:
        current = unit.decode(staged.raw, staged.queue)
    except PayloadError as exc:
        wrapped = unit.wrap_invalid(staged.raw, f"{exc} (recovered from a dead server)",
                                    staged.queue or "default")
        return Placement(staged.ref, unit.encode(wrapped), dead=True)
    if not staged.counted:
        promoted = dict(current.payload)
        promoted["enqueued_at"] = now
        return Placement(staged.ref, unit.encode(promoted), queue=current.queue)
    queue = staged.queue or current.queue
    orphaned = current.payload.get("difo_orphaned", 0)
    orphaned = orphaned if isinstance(orphaned, int) else 0
    if not staged.started and orphaned > 0:
        return Placement(staged.ref, staged.raw, queue=queue, front=True)
    payload: dict[str, Any] = dict(current.payload)
    payload["difo_orphaned"] = orphaned + 1
    if orphaned + 1 < POISON_LIMIT:
        return Placement(staged.ref, unit.encode(payload), queue=queue, front=True)
    payload["error_class"] = "difo.PoisonPill"
    payload["error_message"] = (
        f"orphaned {orphaned + 1} times: the server running it died each time (killed, out "
        "of memory, or the unit ended the process); moved to the dead set as a poison pill"
    )
    payload.setdefault("failed_at", now)
    payload.setdefault("retry_count", 0)
    return Placement(staged.ref, unit.encode(payload), dead=True)


def _newest_claim_first(staged: Staged) -> tuple[str, int]:
    """Orphans go back one by one onto the end popped next, so the last placed is popped
    first: placing each owner's newest claim first keeps the queue's order. A record's
    entries come back in no particular order; its refs end in `<seq>:<queue>`."""
    seq = staged.ref.rpartition("|")[2].partition(":")[0]
    return staged.owner, -int(seq) if seq.isdigit() else 0


def rss_kb() -> int:
    """Resident memory of this process in KB (Sidekiq's `rss` field)."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
