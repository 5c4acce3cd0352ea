"""The fetcher: one per server process, the only thread that claims units.

Each call to the backend acks the units finished since the last call and claims new ones,
oldest first, over the queues in order (strict, or shuffled by weight per claim as Sidekiq
does). It claims only what free workers plus a bounded prefetch can hold, so no more than
`prefetch` claimed units ever wait for a worker. Unless the prefetch is set, it adapts: about
PREFETCH_SECONDS of work at the rate units finish, between WORKERS and PREFETCH_FACTOR times
WORKERS, so fast units are claimed by the hundred (a few Redis commands per hundred units)
and slow ones are not hoarded away from other servers. When every queue is empty it blocks
on the backend's wake-up and claims as soon as woken (one round trip on Redis): at most a
second at a time (the bound on noticing units pushed by foreign clients), and a few hundred
milliseconds while units are still running, so their acks go out.
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
PREFETCH_SECONDS = 0.03  # an adaptive prefetch holds about this much work...
PREFETCH_FACTOR = 20  # ... and at most this many times WORKERS units
ACK_DELAY = 0.05  # seconds acks may wait for a claim to ride on before they go alone
YIELD = 0.0002  # seconds the fetcher sleeps after a wake-up hands units to workers
RATE_WINDOW = 0.1  # seconds between two measures of the rate units finish at


class Fetcher:
    """Claims units for the workers of one process and acks what they finish."""

    def __init__(
        self,
        backend: Backend,
        identity: str,
        queues: Sequence[QueueSpec],
        weighted: bool,
        workers: int,
        prefetch: int | None,
    ) -> None:
        self.backend = backend
        self.identity = identity
        self.queues = [spec.name for spec in queues]
        self._weighted_list = [spec.name for spec in queues for _ in range(spec.weight)]
        self.weighted = weighted
        self.workers = workers
        self.adaptive = prefetch is None
        self.prefetch = 0
        self.capacity = self.low_water = 0
        self._set_prefetch(workers if prefetch is None else prefetch)
        self._finished = 0
        self._last_call = 0.0
        self.held: list[Claimed] = []  # claimed after the server began to stop
        self._dry = False  # the last claim found every queue empty
        self._window_start = time.monotonic()
        self.inbox: SimpleQueue[Claimed | None] = SimpleQueue()
        self.done: deque[tuple[str, int]] = deque()
        self.wakeup = threading.Event()
        self.quiet = threading.Event()  # claim nothing more (TSTP, or stopping)
        self.stopping = threading.Event()  # the server's: it is stopping
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
        if want == 0:
            # Nothing to claim: acks ride on the next claim, or go alone once ACK_DELAY old.
            if self._acks and time.monotonic() - self._last_call >= ACK_DELAY:
                self._claim(0)
                return
            self.wakeup.wait(ACK_DELAY if self._acks else BUSY_WAIT)
            self.wakeup.clear()
            return
        if self._dry:
            # The last claim found the queues empty: send the acks, sleep until a push wakes
            # us, claim: one round trip, and nothing else the worker must wait behind.
            claimed = self._claim(want, BUSY_WAIT if self.outstanding else IDLE_WAIT)
        else:
            claimed = self._claim(want)
        if claimed is None:
            return
        for unit in claimed:
            self.outstanding[unit.ref] = unit
        if self.quiet.is_set() or self.stopping.is_set():
            self.held += claimed  # claimed as the server stops: put back, never started
        else:
            for unit in claimed:
                self.inbox.put(unit)
        if self._dry and claimed:
            # Woken from idle: let the workers take the GIL and start before this thread
            # builds its next call (which would keep them waiting for a fraction of a ms).
            time.sleep(YIELD)
        self._dry = len(claimed) < want

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

    def running_low(self) -> None:
        """Called by a worker after it takes or finishes a unit: wake the fetcher when the
        claimed units waiting for a worker are at or below the low-water mark."""
        if self.inbox.qsize() <= self.low_water and not self.wakeup.is_set():
            self.wakeup.set()

    # -- stopping ------------------------------------------------------------------------------

    def take_waiting(self) -> list[Claimed]:
        """Remove the claimed units no worker has started (at shutdown)."""
        waiting, self.held = self.held, []
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

    def _set_prefetch(self, prefetch: int) -> None:
        self.prefetch = prefetch
        self.capacity = self.workers + prefetch
        self.low_water = prefetch // 4 if self.adaptive else prefetch // 2

    def _adapt(self, now: float) -> None:
        """Size the adaptive prefetch to the rate units finished at over the last window."""
        rate = self._finished / (now - self._window_start)
        self._finished, self._window_start = 0, now
        wanted = min(max(int(rate * PREFETCH_SECONDS), self.workers),
                     self.workers * PREFETCH_FACTOR)
        if wanted != self.prefetch:
            self._set_prefetch(wanted)

    def _collect(self) -> None:
        done = self.done
        if self.adaptive:
            self._finished += len(done)
            now = time.monotonic()
            if now - self._window_start >= RATE_WINDOW:
                self._adapt(now)
        while done:
            ref, kind = done.popleft()
            if kind == ACK:
                self._acks.append(ref)
            elif kind == CAREFUL_ACK:
                self._careful_acks.append(ref)
                self._acks.append(ref)
            elif kind != KEEP:
                self.outstanding.pop(ref, None)

    def _claim(self, want: int, wait: float | None = None) -> list[Claimed] | None:
        """Ack and claim; with `wait`, block up to that long for a wake-up in between."""
        acks, careful = self._acks, self._careful_acks
        first_seq = self._seq
        self._seq += want
        self._last_call = time.monotonic()
        try:
            if wait is None:
                claimed = self.backend.claim(self.identity, self.order(), want, acks, careful,
                                             first_seq)
            else:
                claimed = self.backend.wait_claim(self.identity, self.order(), wait, want,
                                                  acks, careful, first_seq)
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
