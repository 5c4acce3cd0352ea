"""Workers: threads that each run one unit at a time, and the steps of running one.

A worker takes a claimed unit from the fetcher's inbox and runs it through named steps:
decode, resolve (the allow rule), run (through the user's server middleware), then settle:
a success is acked in the fetcher's next batch; a failure is retried, killed or dropped
(retry.py decides) by moving it out of the in-flight record at once. Counts are kept per
worker, written by that worker only, and summed by the heartbeat: no lock on the hot path.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from queue import SimpleQueue
from typing import TYPE_CHECKING, Any

from difo import retry, stats, unit
from difo.backends import Backend, Claimed
from difo.errors import BackendError, PayloadError, UnitRefused, UnitTimeout
from difo.registry import FunctionMissing, Resolver

if TYPE_CHECKING:
    from difo.asyncpool import AsyncPool

log = logging.getLogger("difo.unit")

# What a worker tells the fetcher about a unit it finished with.
SETTLED = 0  # already moved out of the in-flight record (retry, dead, dropped)
ACK = 1  # remove it from the in-flight record with the next claim
CAREFUL_ACK = 2  # the same, and forget its "started" mark
KEEP = 3  # could not be settled (backend gone while stopping): leave it to be requeued
CAREFUL_SOLO = 2.0  # seconds a once-orphaned unit runs before another may start beside it

Middleware = Callable[[unit.Unit, Callable[[], Any]], Any]
FailureHook = Callable[[BaseException, "Current"], Any]

_server_middleware: list[Middleware] = []
_failure_hooks: list[FailureHook] = []
_context = threading.local()
_async_unit: ContextVar[unit.Unit | None] = ContextVar("difo_unit", default=None)


@dataclass(frozen=True)
class Current:
    """The unit the calling thread is running: `difo.current()` inside a unit."""

    jid: str
    queue: str
    function: str
    args: unit.Args
    retry_count: int | None
    enqueued_at: float | None


def current() -> Current | None:
    """The running unit's context, or None outside a unit."""
    running: unit.Unit | None = getattr(_context, "unit", None) or _async_unit.get()
    if running is None:
        return None
    return Current(running.jid, running.queue, running.class_name, running.args,
                   running.retry_count, running.enqueued_at)


def on_failure(hook: FailureHook) -> FailureHook:
    """Call `hook(exc, current)` whenever a unit raises (Sentry and the like); a decorator."""
    _failure_hooks.append(hook)
    return hook


def server_middleware(middleware: Middleware) -> Middleware:
    """Wrap every unit run: `middleware(unit, call_next)` must call `call_next()`."""
    _server_middleware.append(middleware)
    return middleware


class WorkerState:
    """One worker's counters and current unit; written by that worker only."""

    __slots__ = ("abandoned", "current", "deadline", "failed", "functions", "guard", "ident",
                 "index", "interrupted", "processed", "running", "started_at", "stuck_at", "tid")

    def __init__(self, index: int) -> None:
        self.index = index
        self.tid = ""
        self.processed = 0
        self.failed = 0
        self.current: tuple[str, bytes] | None = None  # (queue, raw payload)
        self.started_at = 0.0
        # function -> [count, failures, seconds, buckets...] (difo.stats)
        self.functions: dict[str, list[float]] = {}
        # A unit with a time limit (difo.timeouts): read by the watchdog under `guard`.
        self.guard = threading.Lock()
        self.ident = 0
        self.deadline = 0.0  # monotonic; 0 when no limited unit runs
        self.running: tuple[Claimed, unit.Unit] | None = None
        self.interrupted = False
        self.stuck_at = 0.0
        self.abandoned = False


class Runner:
    """Runs one claimed unit to its end; shared by every worker of a server."""

    def __init__(
        self,
        backend: Backend,
        identity: str,
        resolver: Resolver,
        done: deque[tuple[str, int]],
        stopping: threading.Event,
        pool: AsyncPool | None = None,
        unit_timeout: float | None = None,
    ) -> None:
        self.backend = backend
        self.identity = identity
        self.resolver = resolver
        self.done = done
        self.stopping = stopping
        self._careful = _Solo(CAREFUL_SOLO)  # once-orphaned units start one at a time
        self.pool = pool
        self.unit_timeout = unit_timeout
        self.log_units = log.isEnabledFor(logging.INFO)
        self._is_async: dict[str, bool] = {}

    def run(self, claimed: Claimed, state: WorkerState) -> None:
        started = time.perf_counter()
        state.current = (claimed.queue, claimed.raw)
        state.started_at = time.time()
        try:
            current = unit.decode(claimed.raw, claimed.queue)
        except PayloadError as exc:
            self._finish(state, claimed, None, "dead", started, self._kill_invalid(claimed, exc))
            return
        careful = _orphaned(current.payload) > 0
        if careful:
            # Units orphaned before start one at a time in a process, each alone for its first
            # CAREFUL_SOLO seconds, their start recorded first: if one is a poison pill, the
            # others were not running beside it (not started), so not blamed for its crash.
            self._careful.enter()
            self._settle(lambda: self.backend.mark_started(self.identity, [claimed.ref]))
        outcome, kind = "done", (CAREFUL_ACK if careful else ACK)
        ran = False
        _context.unit = current
        try:
            fn = self.resolver.resolve(current.class_name)
            if self.pool is not None and self._async(current.class_name, fn):
                if not self._hand_off(claimed, current, fn, kind, state, started):
                    state.current = None  # stopping before a slot freed: put back, not run
                    self.done.append((claimed.ref, KEEP))
                return
            limit = self.limit_for(fn)
            if limit is not None:
                self._run_limited(state, claimed, current, fn, limit)
            elif _server_middleware:
                _through_middleware(current, fn)
            else:
                fn(*current.args)
            ran = True
        except UnitRefused as exc:
            outcome, kind = "dead", self._refuse(claimed, current, exc)
        except Exception as exc:
            outcome, kind = self._fail(claimed, current, exc)
        except _Abandoned:
            return  # the watchdog failed the unit already
        finally:
            _context.unit = None
            if careful:
                if ran:
                    # Acked before the next once-orphaned unit may start: finished, it must
                    # not be found in flight (and blamed) if that one ends the process.
                    ref = claimed.ref
                    kind = self._settle(lambda: self.backend.claim(
                        self.identity, [], 0, [ref], [ref], 0))
                self._careful.leave()
        self._finish(state, claimed, current, outcome, started, kind)

    def _run_limited(
        self, state: WorkerState, claimed: Claimed, current: unit.Unit, fn: Callable[..., Any],
        limit: float,
    ) -> None:
        """Run a thread unit under the watchdog (difo.timeouts): UnitTimeout past `limit`."""
        guard = state.guard
        with guard:
            state.ident = threading.get_ident()
            state.running = (claimed, current)
            state.interrupted = False
            state.deadline = time.monotonic() + limit
        interrupted = False
        try:
            if _server_middleware:
                _through_middleware(current, fn)
            else:
                fn(*current.args)
        except UnitTimeout:
            if not state.interrupted:
                raise
        finally:
            with guard:
                state.deadline = 0.0
                state.running = None
                interrupted = state.interrupted
                if interrupted:
                    from difo.timeouts import clear_pending

                    clear_pending(state.ident)
            if state.abandoned:
                state.abandoned = False
                raise _Abandoned
        if interrupted:
            raise UnitTimeout(f"{current.class_name} ran longer than its {limit:g} s limit; "
                              "it was stopped")

    def abandon(self, state: WorkerState, claimed: Claimed, current: unit.Unit) -> None:
        """Fail a unit whose thread would not stop (called by the watchdog); the thread's
        own ending is then dropped."""
        exc = UnitTimeout(f"{current.class_name} ran past its time limit and did not stop "
                          "when interrupted; its server process was restarted")
        outcome, kind = self._fail(claimed, current, exc)
        started = time.perf_counter() - max(time.time() - state.started_at, 0.0)
        self._finish(state, claimed, current, outcome, started, kind)

    def limit_for(self, fn: Callable[..., Any]) -> float | None:
        """The unit time limit: the function's own (`@difo.job(timeout=...)`), else
        DIFO_UNIT_TIMEOUT; None for no limit."""
        own = getattr(fn, "timeout", None)
        return float(own) if isinstance(own, (int, float)) and own > 0 else self.unit_timeout

    # -- async def units -----------------------------------------------------------------------

    def _async(self, name: str, fn: Callable[..., Any]) -> bool:
        try:
            return self._is_async[name]
        except KeyError:
            found = self._is_async[name] = inspect.iscoroutinefunction(getattr(fn, "fn", fn))
            return found

    def _hand_off(
        self, claimed: Claimed, current: unit.Unit, fn: Callable[..., Any], kind: int,
        state: WorkerState, started: float,
    ) -> bool:
        """Move the unit to a free async slot and start it on the loop; False if the
        server stops before a slot frees."""
        assert self.pool is not None
        slot = self.pool.acquire(self.stopping)
        if slot is None:
            return False
        slot.current, slot.started_at = state.current, state.started_at
        state.current = None
        self.pool.submit(self._run_async(claimed, current, fn, kind, slot, started))
        return True

    async def _run_async(
        self, claimed: Claimed, current: unit.Unit, fn: Callable[..., Any], kind: int,
        slot: WorkerState, started: float,
    ) -> None:
        """Run an async unit on the loop and settle it like a thread's (failures are settled
        in a thread: backend writes block)."""
        assert self.pool is not None
        outcome = "done"
        token = _async_unit.set(current)
        try:
            if _server_middleware:
                awaitable = _through_middleware(current, fn)
            else:
                awaitable = fn(*current.args)
            if inspect.isawaitable(awaitable):
                await _with_limit(awaitable, self.limit_for(fn), current)
        except asyncio.CancelledError:
            if self.stopping.is_set():  # cancelled at shutdown: put back, not failed
                slot.current = None
                self.done.append((claimed.ref, KEEP))
                self.pool.release(slot)
                return
            outcome, kind = await asyncio.to_thread(
                self._fail, claimed, current, UnitTimeout(f"{current.class_name} was cancelled"))
        except UnitRefused as exc:
            outcome, kind = "dead", await asyncio.to_thread(self._refuse, claimed, current, exc)
        except Exception as exc:
            outcome, kind = await asyncio.to_thread(self._fail, claimed, current, exc)
        finally:
            _async_unit.reset(token)
        self._finish(slot, claimed, current, outcome, started, kind)
        self.pool.release(slot)

    def _finish(
        self, state: WorkerState, claimed: Claimed, current: unit.Unit | None,
        outcome: str, started: float, kind: int,
    ) -> None:
        state.current = None
        state.processed += 1
        if outcome != "done":
            state.failed += 1
        elapsed = time.perf_counter() - started
        if current is not None:
            stats.record(state.functions, current.class_name, elapsed, outcome != "done")
        self.done.append((claimed.ref, kind))
        if self.log_units:
            elapsed *= 1000
            name = current.class_name if current else "?"
            jid = current.jid if current else "-"
            log.info(
                "%s %s queue=%s %.2f ms %s", jid, name, claimed.queue, elapsed, outcome,
                extra={"difo": {"jid": jid, "function": name, "queue": claimed.queue,
                                "duration_ms": round(elapsed, 3), "outcome": outcome}},
            )

    # -- failures ----------------------------------------------------------------------------

    def _fail(self, claimed: Claimed, current: unit.Unit, exc: Exception) -> tuple[str, int]:
        fn = self.resolver.cached(current.class_name)
        retry_in = getattr(fn, "retry_in", None)
        decision = retry.decide(current.payload, exc, unit.now(), retry_in)
        _call_failure_hooks(exc, current)
        if isinstance(exc, FunctionMissing):
            log.warning("%s %s: %s", current.jid, current.class_name, exc)
        else:
            log.warning("%s %s failed: %s: %s", current.jid, current.class_name,
                        decision.payload["error_class"], decision.payload["error_message"],
                        exc_info=log.isEnabledFor(logging.DEBUG))
        raw = unit.encode(decision.payload)
        ref = claimed.ref
        if decision.action == "retry":
            kind = self._settle(lambda: self.backend.retry_later(self.identity, ref, raw,
                                                                 decision.at))
            return "retry", kind
        if decision.action == "dead":
            return "dead", self._settle(lambda: self.backend.kill(self.identity, ref, raw))
        return "fail", self._settle(lambda: self.backend.discard(self.identity, ref))

    def _refuse(self, claimed: Claimed, current: unit.Unit, exc: UnitRefused) -> int:
        failed = retry.decide(current.payload, exc, unit.now()).payload
        _call_failure_hooks(exc, current)
        log.error("%s refused: %s", current.jid, exc)
        raw = unit.encode(failed)
        return self._settle(lambda: self.backend.kill(self.identity, claimed.ref, raw))

    def _kill_invalid(self, claimed: Claimed, exc: PayloadError) -> int:
        wrapped = unit.wrap_invalid(claimed.raw, f"{exc} (found in queue {claimed.queue!r})",
                                    claimed.queue)
        log.error("invalid payload in queue %s moved to dead: %s", claimed.queue, exc)
        raw = unit.encode(wrapped)
        return self._settle(lambda: self.backend.kill(self.identity, claimed.ref, raw))

    def _settle(self, write: Callable[[], object]) -> int:
        """Run a backend write until it succeeds; KEEP if the server stops first."""
        delay = 0.05
        while True:
            try:
                write()
                return SETTLED
            except BackendError as exc:
                if self.stopping.is_set():
                    log.error("could not settle a unit while stopping: %s", exc)
                    return KEEP
                log.warning("%s; retrying in %.1f s", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)


def work(
    inbox: SimpleQueue[Claimed | None],
    runner: Runner,
    state: WorkerState,
    running_low: Callable[[], None],
) -> None:
    """A worker thread's loop: run units from the inbox until it hands over None, telling
    the fetcher (`running_low`, which checks the inbox) after each take and each unit."""
    state.tid = _base36(threading.get_ident())
    while True:
        claimed = inbox.get()
        if claimed is None:
            return
        running_low()
        try:
            runner.run(claimed, state)
        except Exception:  # a bug of ours must not kill the worker: log and keep serving
            log.exception("worker %d failed on a unit in %s", state.index, claimed.queue)
            runner.done.append((claimed.ref, KEEP))
        # This worker is free: if little waits for it, the fetcher should claim now rather
        # than when its busy wait runs out.
        running_low()


class _Solo:
    """Lets one thread in at a time, or the next once the one inside has been in `window`
    seconds (so long units orphaned together are not run one after another)."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._inside = 0
        self._since = 0.0
        self._changed = threading.Condition()

    def enter(self) -> None:
        with self._changed:
            while self._inside and (left := self._since + self.window - time.monotonic()) > 0:
                self._changed.wait(left)
            self._inside += 1
            self._since = time.monotonic()

    def leave(self) -> None:
        with self._changed:
            self._inside -= 1
            self._changed.notify()


class _Abandoned(BaseException):
    """The watchdog settled this thread's unit: drop the thread's own ending."""


async def _with_limit(awaitable: Awaitable[Any], limit: float | None,
                      current: unit.Unit) -> None:
    """Await a unit, cancelling it past `limit` seconds (then UnitTimeout)."""
    if limit is None:
        await awaitable
        return
    task = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait({task}, timeout=limit)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if done:
        task.result()
        return
    task.cancel()
    await asyncio.wait({task}, timeout=1.0)  # a unit that swallows the cancel runs on alone
    raise UnitTimeout(f"{current.class_name} ran longer than its {limit:g} s limit; "
                      "it was cancelled")


def _through_middleware(current: unit.Unit, fn: Callable[..., Any]) -> Any:
    def call(position: int) -> Any:
        if position == len(_server_middleware):
            return fn(*current.args)
        return _server_middleware[position](current, lambda: call(position + 1))

    return call(0)


def _call_failure_hooks(exc: BaseException, current: unit.Unit) -> None:
    if not _failure_hooks:
        return
    context = Current(current.jid, current.queue, current.class_name, current.args,
                      current.retry_count, current.enqueued_at)
    for hook in list(_failure_hooks):
        try:
            hook(exc, context)
        except Exception:
            log.exception("failure hook %r raised", hook)


def _orphaned(payload: dict[str, Any]) -> int:
    count = payload.get("difo_orphaned", 0)
    return count if isinstance(count, int) else 0


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while number:
        number, rest = divmod(number, 36)
        out = digits[rest] + out
    return out or "0"
