"""Unit time limits for thread units: a watchdog that stops a unit running past its limit.

A unit's limit is `@difo.job(timeout=...)`, else DIFO_UNIT_TIMEOUT. An async def unit is
cancelled on the loop (worker.py). A thread cannot be cancelled, so the watchdog raises
UnitTimeout inside it with `PyThreadState_SetAsyncExc`. Limits of that mechanism:

- the exception lands only when the thread runs Python bytecode again: a unit inside C code
  or a blocking call (a socket read without a timeout, `time.sleep`, a C extension's loop)
  sees it only when that call returns;
- a unit may catch it (`except Exception:`) and carry on.

So the watchdog gives a thread `GRACE` seconds after the interruption; a thread still in the
unit then is abandoned: its unit is failed (and retried as usual) and the server process asks
its supervisor for a restart, the last resort that always works (`difo server` runs under the
supervisor whenever DIFO_UNIT_TIMEOUT is set). The injection happens under the worker's
guard lock, and a worker clears any pending injection when its unit ends, so the exception
never lands in difo's own code after the unit.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections.abc import Callable, Sequence

from difo.errors import UnitTimeout
from difo.worker import Runner, WorkerState

log = logging.getLogger("difo.server")

GRACE = 5.0  # seconds a thread gets to stop after the interruption
INTERVAL = 0.1  # seconds between watchdog passes

_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.argtypes = (ctypes.c_ulong, ctypes.py_object)
_set_async_exc.restype = ctypes.c_int


def interrupt(ident: int) -> bool:
    """Raise UnitTimeout in thread `ident` when it next runs bytecode; True if it exists."""
    return bool(_set_async_exc(ident, UnitTimeout))


def clear_pending(ident: int) -> None:
    """Drop an interruption not yet raised in thread `ident`."""
    _set_async_exc(ident, ctypes.py_object())


class Watchdog:
    """Watches the worker threads' deadlines; `step(now)` is one pass."""

    def __init__(
        self, states: Sequence[WorkerState], runner: Runner, on_stuck: Callable[[], None],
        grace: float = GRACE,
    ) -> None:
        self.states = states
        self.runner = runner
        self.on_stuck = on_stuck
        self.grace = grace

    def step(self, now: float) -> None:
        for state in self.states:
            deadline = state.deadline
            if not deadline or now < deadline:
                continue
            abandoned = None
            with state.guard:
                if not state.deadline or state.running is None:
                    continue
                if not state.interrupted:
                    state.interrupted = True
                    state.stuck_at = now + self.grace
                    interrupt(state.ident)
                    log.warning("%s %s ran past its time limit: interrupted",
                                state.running[1].jid, state.running[1].class_name)
                elif now >= state.stuck_at and not state.abandoned:
                    state.abandoned = True
                    abandoned = state.running
            if abandoned is not None:
                claimed, current = abandoned
                log.error("%s %s did not stop %.0f s after its interruption (blocked in C code "
                          "or it caught UnitTimeout): failing it and restarting the process",
                          current.jid, current.class_name, self.grace)
                self.runner.abandon(state, claimed, current)
                self.on_stuck()

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(INTERVAL):
            try:
                self.step(time.monotonic())
            except Exception:  # the watchdog must outlive a bug in one pass
                log.exception("unit watchdog failed")
