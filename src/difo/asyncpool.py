"""The event loop of a server process, where `async def` units run.

One loop thread per server process, and DIFO_ASYNC_WORKERS slots beside the WORKERS threads.
A worker thread that resolves an async function takes a free slot, hands the coroutine to the
loop and returns at once; the unit settles (ack, retry, counts) when it finishes, on the
slot's own WorkerState, written only from the loop thread, so counts stay lock-free. The
fetcher does not count units running here against its thread capacity (`running()`), so an
idle worker thread keeps feeding the loop while prefetch stays bounded.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from queue import Empty, SimpleQueue
from typing import Any

from difo.worker import WorkerState

log = logging.getLogger("difo.server")


class AsyncPool:
    """The loop thread and its slots; `submit()` runs a coroutine there."""

    def __init__(self, size: int, first_index: int, notify: Callable[[], None]) -> None:
        self.size = size
        self.states = [WorkerState(first_index + n) for n in range(size)]
        self.notify = notify  # a unit finished: the fetcher may claim again
        self.closing = threading.Event()  # graceful stop: no new unit takes a slot
        self._free: SimpleQueue[WorkerState] = SimpleQueue()
        for state in self.states:
            state.tid = f"async-{state.index - first_index}"
            self._free.put(state)
        self.loop = asyncio.new_event_loop()
        self._futures: set[concurrent.futures.Future[None]] = set()
        self._thread = threading.Thread(target=self._run, name="difo-async", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def running(self) -> int:
        """Slots in use (units handed to the loop and not yet settled)."""
        return self.size - self._free.qsize()

    def acquire(self, give_up: threading.Event) -> WorkerState | None:
        """A free slot, waiting for one; None once `give_up` or `closing` is set."""
        while True:
            try:
                return self._free.get(timeout=0.1)
            except Empty:
                if give_up.is_set() or self.closing.is_set():
                    return None

    def release(self, state: WorkerState) -> None:
        self._free.put(state)
        self.notify()

    def submit(self, coroutine: Coroutine[Any, Any, None]) -> None:
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        self._futures.add(future)
        future.add_done_callback(self._futures.discard)

    def wait_idle(self, deadline: float, give_up: threading.Event,
                  between: Callable[[], None]) -> bool:
        """Wait until no unit runs on the loop, until `deadline` (monotonic) or `give_up`;
        call `between` every 50 ms (to flush acks). True when idle."""
        while self.running():
            if give_up.is_set() or time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
            between()
        return True

    def cancel_all(self, grace: float = 2.0) -> int:
        """Cancel every running unit and wait up to `grace` s for them to settle (a cancelled
        unit is put back, not failed); return how many were cancelled."""
        futures = list(self._futures)
        for future in futures:
            future.cancel()  # cancels the task on the loop (thread-safe)
        deadline = time.monotonic() + grace
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.02)
        return len(futures)

    def stop(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=5)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            log.debug("event loop stopped")
