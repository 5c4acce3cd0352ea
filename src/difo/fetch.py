"""The fetcher: one per server process, the only thread that claims units.

Each call to the backend acks the units finished since the last call and claims new ones,
oldest first, over the queues in order (strict, or shuffled by weight per claim as Sidekiq
does). It claims only what free workers plus a bounded prefetch can hold, so no more than
`prefetch` claimed units ever wait for a worker. When every queue is empty it blocks on the
backend's wake-up, at most a second at a time (the bound on noticing units pushed by foreign
clients), and a few hundred milliseconds while units are still running, so their acks go out.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from queue import Empty, SimpleQueue

from difo.backends import Backend, Claimed
from difo.config import QueueSpec
from difo.errors import BackendError
from difo.worker import ACK, CAREFUL_ACK, KEEP

log = logging.getLogger("difo.fetch")

IDLE_WAIT = 1.0  # seconds blocked on the wake-up when nothing runs
BUSY_WAIT = 0.25  # ... while units run, so their acks are not held long


class Fetcher:
    """Claims units for the workers of one process and acks what they finish."""

    def __init__(
        self,
        backend: Backend,
        identity: str,
        queues: Sequence[QueueSpec],
        weighted: bool,
        workers: int,
        prefetch: int,
    ) -> None:
        self.backend = backend
        self.identity = identity
        self.queues = [spec.name for spec in queues]
        self._weighted_list = [spec.name for spec in queues for _ in range(spec.weight)]
        self.weighted = weighted
        self.capacity = workers + prefetch
        self.low_water = max(prefetch // 2, 0)
        self.inbox: SimpleQueue[Claimed | None] = SimpleQueue()
        self.done: deque[tuple[str, int]] = deque()
        self.wakeup = threading.Event()
        self.quiet = threading.Event()
        self.outstanding: dict[str, Claimed] = {}  # claimed, not yet acked or settled
        self._acks: list[str] = []
        self._careful_acks: list[str] = []
        self._seq = 1
        self._reconcile = False
        self._failures = 0
        # Units handed to the event loop (async def) free their worker thread: they are not
        # counted against the threads' capacity, so prefetch stays bounded for both kinds.
        self.handed_off: Callable[[], int] = _none

    # -- the loop ------------------------------------------------------------------------------

    def step(self) -> None:
        """One pass: collect finished units, ack and claim in one call, or wait."""
        self._collect()
        if self._reconcile:
            self._reconcile_in_flight()
        want = self._want()
        if want == 0 and not self._acks:
            self.wakeup.wait(BUSY_WAIT)
            self.wakeup.clear()
            return
        claimed = self._claim(want)
        if claimed is None:
            return
        for unit in claimed:
            self.outstanding[unit.ref] = unit
            self.inbox.put(unit)
        if want > 0 and len(claimed) < want:
            # The queues ran dry: sleep until a push wakes us (or a unit finishes).
            timeout = BUSY_WAIT if self.outstanding else IDLE_WAIT
            try:
                self.backend.wait(self.queues, timeout)
            except BackendError as exc:
                self._backoff(exc)

    def order(self) -> list[str]:
        """The queues for one claim: as listed, or shuffled by weight (Sidekiq's rule)."""
        if not self.weighted:
            return self.queues
        expanded = self._weighted_list[:]
        random.shuffle(expanded)
        return list(dict.fromkeys(expanded))

    def notify(self) -> None:
        """Called by workers: a unit finished or the inbox runs low."""
        if not self.wakeup.is_set():
            self.wakeup.set()

    # -- stopping ------------------------------------------------------------------------------

    def take_waiting(self) -> list[Claimed]:
        """Remove the claimed units no worker has started (at shutdown)."""
        waiting: list[Claimed] = []
        while True:
            try:
                unit = self.inbox.get_nowait()
            except Empty:
                return waiting
            if unit is not None:
                waiting.append(unit)

    def flush(self) -> bool:
        """Send pending acks now; True when nothing is left to send."""
        self._collect()
        if not self._acks:
            return True
        return self._claim(0) is not None

    def requeue(self, units: Sequence[Claimed]) -> int:
        """Put claimed units back at the end of their queues popped next, oldest popped first."""
        ordered = sorted(units, key=_seq_of, reverse=True)
        moved = self.backend.requeue(self.identity, [(u.ref, u.queue) for u in ordered])
        for unit in units:
            self.outstanding.pop(unit.ref, None)
        return moved

    # -- helpers ---------------------------------------------------------------------------------

    def _want(self) -> int:
        if self.quiet.is_set():
            return 0
        if self.inbox.qsize() > self.low_water:
            return 0
        return max(self.capacity - len(self.outstanding) + len(self._acks)
                   + self.handed_off(), 0)

    def _collect(self) -> None:
        done = self.done
        while done:
            ref, kind = done.popleft()
            if kind == ACK:
                self._acks.append(ref)
            elif kind == CAREFUL_ACK:
                self._careful_acks.append(ref)
                self._acks.append(ref)
            elif kind != KEEP:
                self.outstanding.pop(ref, None)

    def _claim(self, want: int) -> list[Claimed] | None:
        acks, careful = self._acks, self._careful_acks
        first_seq = self._seq
        self._seq += want
        try:
            claimed = self.backend.claim(self.identity, self.order(), want, acks, careful,
                                         first_seq)
        except BackendError as exc:
            # The claim may have run with its reply lost: find its units on reconnect.
            self._reconcile = want > 0 or self._reconcile
            self._backoff(exc)
            return None
        if self._failures:
            log.warning("backend reachable again at %s", self.backend.url)
            self._failures = 0
        for ref in acks:
            self.outstanding.pop(ref, None)
        self._acks, self._careful_acks = [], []
        return claimed

    def _reconcile_in_flight(self) -> None:
        try:
            recorded = self.backend.in_flight(self.identity)
            lost = [ref for ref in recorded if ref not in self.outstanding]
            if lost:
                units = [(ref, ref.partition(":")[2]) for ref in lost]
                units.sort(key=lambda item: int(item[0].partition(":")[0]), reverse=True)
                moved = self.backend.requeue(self.identity, units)
                log.warning("put back %d units claimed by a call whose reply was lost", moved)
        except BackendError as exc:
            self._backoff(exc)
            return
        self._reconcile = False

    def _backoff(self, exc: BackendError) -> None:
        self._failures += 1
        delay = min(0.05 * 2 ** min(self._failures, 7), 5.0) * random.uniform(0.5, 1.0)
        if self._failures == 1 or self._failures % 20 == 0:
            log.warning("%s; retrying in %.2f s", exc, delay)
        time.sleep(delay)


def _none() -> int:
    return 0


def _seq_of(unit: Claimed) -> int:
    return int(unit.ref.partition(":")[0])
