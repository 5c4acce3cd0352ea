"""The server: a process running WORKERS workers over QUEUES, until it is told to stop.

It starts the pieces and owns their lifecycle: the fetcher (claims and acks), the workers
(run units), the heartbeat (process record, counts, signals, orphan recovery) and the
scheduler (due units onto queues). Stopping is graceful: stop claiming, put back units no
worker started, wait up to `timeout` seconds for running units, then put back the rest; a
second SIGTERM/SIGINT skips the wait. No unit is lost on either path: losing one is worse
than running it twice.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable
from types import FrameType
from typing import Any

from difo import config, logs
from difo.asyncpool import AsyncPool
from difo.backends import Backend, open_backend
from difo.config import Settings
from difo.errors import BackendError
from difo.fetch import Fetcher
from difo.heartbeat import Heartbeat, new_identity
from difo.registry import Resolver
from difo.scheduler import Scheduler
from difo.timeouts import Watchdog
from difo.worker import Runner, WorkerState, work

log = logging.getLogger("difo.server")

# Exit codes a supervisor reads: 0 stopped on request (not restarted), RESTART asks for a
# fresh process at once (recycled, or a unit's thread would not stop); anything else crashed.
RESTART = 75
SUPERVISED = "DIFO_SUPERVISED"  # set in the environment of a supervisor's children


class Server:
    """One server process. `run()` blocks until it has stopped."""

    def __init__(self, settings: Settings, backend: Backend | None = None) -> None:
        self.settings = settings
        self.identity = new_identity()
        self.backend = backend or open_backend(settings.url)
        self.resolver = Resolver(settings.imports)
        self.fetcher = Fetcher(
            self.backend, self.identity, settings.queues, settings.weighted,
            settings.workers, settings.prefetch,
        )
        self.stopping = threading.Event()  # no more claims: finish and leave
        self.fetcher.stopping = self.stopping
        self.hard_stop = threading.Event()  # skip the grace period
        self._services_stop = threading.Event()
        self.states = [WorkerState(index) for index in range(settings.workers)]
        self.pool = AsyncPool(settings.async_workers, settings.workers, self.fetcher.notify)
        self.fetcher.handed_off = self.pool.running
        self.runner = Runner(self.backend, self.identity, self.resolver, self.fetcher.done,
                             self.hard_stop, self.pool, settings.unit_timeout)
        self.heartbeat = Heartbeat(self.backend, self.identity, settings,
                                   self.states + self.pool.states,
                                   self.on_signal, self.fetcher.quiet.is_set,
                                   self.stopping.is_set)
        self.scheduler = Scheduler(self.backend, self.identity, settings.poll_interval)
        self.watchdog = Watchdog(self.states, self.runner, self._restart_for_stuck_thread)
        self.supervised = os.environ.get(SUPERVISED) == "1"
        self.exit_code = 0
        self._threads: list[threading.Thread] = []
        self._workers: list[threading.Thread] = []

    # -- control -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask for a graceful stop (what the first SIGTERM/SIGINT does); a second call
        stops at once, still putting every unfinished unit back."""
        if self.stopping.is_set():
            self.hard_stop.set()
        self.stopping.set()

    def quiet(self) -> None:
        """Stop taking new units; keep running those already taken (SIGTSTP)."""
        if not self.fetcher.quiet.is_set():
            log.info("quiet: taking no new units")
        self.fetcher.quiet.set()

    def on_signal(self, name: str) -> None:
        """A signal sent through the backend (Sidekiq's Process#quiet! / #stop!)."""
        if name == "TSTP":
            self.quiet()
        elif name == "TERM":
            log.info("stop requested through %s", self.backend.url)
            self.stop()
        elif name == "TTIN":
            _dump_threads()

    # -- lifecycle -----------------------------------------------------------------------------

    def run(self) -> None:
        """Start, serve until stopped, shut down gracefully. Raises when it cannot start."""
        self.backend.ping()
        for warning in self.backend.warnings():
            log.warning(warning)
        self.resolver.import_all()
        # Beat before the first claim: units of a process with no beat are never recovered.
        if not self.heartbeat.step():
            raise BackendError(f"cannot register the server at {self.backend.url}")
        self._start_threads()
        queues = " ".join(f"{s.name}:{s.weight}" if self.settings.weighted else s.name
                          for s in self.settings.queues)
        log.info("difo server %s started: %d workers on %s, queues %s", self.identity,
                 self.settings.workers, self.backend.url, queues)
        # Poll rather than Event.wait: a signal handler setting the event while this thread
        # holds the event's lock would deadlock.
        ticks = 0
        while not self.stopping.is_set():
            time.sleep(0.1)
            ticks += 1
            if ticks % 10 == 0:
                self._check_recycle()
        self._shutdown()

    def _check_recycle(self) -> None:
        """Under a supervisor: past --max-units-per-child or --max-memory, stop gracefully
        and exit with RESTART, so a fresh process takes over (no unit is lost: the stop is
        the graceful one)."""
        if not self.supervised:
            return
        settings, reason = self.settings, ""
        if settings.max_units_per_child is not None:
            done = sum(state.processed for state in self.heartbeat.states)
            if done >= settings.max_units_per_child:
                reason = f"{done} units run (--max-units-per-child {settings.max_units_per_child})"
        if not reason and settings.max_memory is not None:
            from difo.heartbeat import rss_kb

            rss = rss_kb() // 1024
            if rss > settings.max_memory:
                reason = f"{rss} MB resident (--max-memory {settings.max_memory} MB)"
        if reason:
            log.info("recycling this server process: %s", reason)
            self.exit_code = RESTART
            self.stopping.set()

    def _restart_for_stuck_thread(self) -> None:
        if self.supervised:
            self.exit_code = RESTART
            self.stopping.set()
        else:
            log.error("a worker thread is lost to a unit that will not stop; run the server "
                      "with DIFO_UNIT_TIMEOUT set (it then runs under a supervisor that "
                      "restarts the process)")

    def _start_threads(self) -> None:
        fetcher = self.fetcher
        self.pool.start()
        for state in self.states:
            thread = threading.Thread(
                target=work, name=f"difo-worker-{state.index}", daemon=True,
                args=(fetcher.inbox, self.runner, state, fetcher.running_low),
            )
            thread.start()
            self._workers.append(thread)
        services: list[tuple[str, Any]] = [
            ("difo-fetcher", self._fetch_loop),
            ("difo-heartbeat", lambda: self.heartbeat.run(self._services_stop)),
            ("difo-scheduler", lambda: self.scheduler.run(self._services_stop)),
            ("difo-watchdog", lambda: self.watchdog.run(self._services_stop)),
        ]
        for name, target in services:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _fetch_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                self.fetcher.step()
            except Exception:  # the fetcher must outlive any bug in one pass
                log.exception("fetcher step failed")
                time.sleep(0.5)

    def _shutdown(self) -> None:
        fetcher = self.fetcher
        fetcher.quiet.set()
        self.pool.closing.set()  # a unit still waiting for an async slot is put back
        # Take the waiting units now, or a worker freed while the fetcher finishes its pass
        # would start one after the signal; then those of a claim that was under way.
        waiting = fetcher.take_waiting()
        self._threads[0].join()  # the fetcher's pass ends within its wait bound
        waiting += fetcher.take_waiting()
        log.info("stopping: %d units running, %d not started put back",
                 sum(1 for s in self.states if s.current is not None) + self.pool.running(),
                 len(waiting))
        self._put_back(waiting)
        for _ in self._workers:
            fetcher.inbox.put(None)
        deadline = time.monotonic() + self.settings.timeout
        while any(t.is_alive() for t in self._workers):
            if self.hard_stop.is_set() or time.monotonic() >= deadline:
                break
            for thread in self._workers:
                thread.join(timeout=0.05)
            self._try(fetcher.flush)
        # Async units get the same grace period, then are cancelled and put back.
        self.pool.wait_idle(deadline, self.hard_stop, lambda: self._try(fetcher.flush))
        self.hard_stop.set()  # settle calls still in progress give up now
        if self.pool.running():
            log.info("cancelling %d async units still running; they go back to their queues",
                     self.pool.cancel_all())
        self.pool.stop()
        self._try(fetcher.flush)
        self._put_back(list(fetcher.outstanding.values()))
        self._services_stop.set()
        for thread in self._threads[1:]:
            thread.join(timeout=5)
        self._final_beat()

    def _put_back(self, units: list[Any]) -> None:
        if not units:
            return
        for attempt in range(5):
            try:
                moved = self.fetcher.requeue(units)
                log.info("put back %d units at the front of their queues", moved)
                return
            except BackendError as exc:
                log.warning("could not put units back (%s); retrying", exc)
                time.sleep(0.2 * (attempt + 1))
        log.error("%d units stay in this server's in-flight record; a live server will "
                  "put them back within %.0f s", len(units), self.settings.dead_after)

    def _final_beat(self) -> None:
        """Flush the counts and leave the registry (only when nothing is left in flight)."""
        try:
            self.heartbeat.step(final=True)
            # Units left staged by a failed release: if they cannot go now, staying
            # registered lets a live server recover them once this one counts as dead.
            self.scheduler.release_leftovers()
            self.heartbeat.release_leftovers()
            if not self.backend.in_flight(self.identity):
                self.backend.forget_process(self.identity)
        except BackendError as exc:
            log.error("final heartbeat failed: %s", exc)
        log.info("difo server %s stopped", self.identity)

    def _try(self, action: Any) -> None:
        try:
            action()
        except BackendError as exc:
            log.warning("%s", exc)

    # -- signals -------------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT stop (twice: at once), SIGTSTP quiets, SIGTTIN dumps threads."""

        def stop(signum: int, frame: FrameType | None) -> None:
            name = signal.Signals(signum).name
            log.info("%s received: %s", name, "stopping now" if self.stopping.is_set()
                     else f"stopping within {self.settings.timeout:g} s")
            self.stop()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTSTP, lambda signum, frame: self.quiet())
        signal.signal(signal.SIGTTIN, lambda signum, frame: _dump_threads())


def start(
    imports: Iterable[str] = (), settings: Settings | None = None, **overrides: Any
) -> int:
    """Run a server until it stops (blocking), configured from the environment, then
    `settings`/`overrides` (the same names as the flags: workers, queues, url, timeout...).
    Returns the exit code for a supervisor (0, or RESTART)."""
    base = settings or config.load()
    chosen = base.with_overrides(**overrides)
    if imports:
        chosen = chosen.with_overrides(imports=tuple(chosen.imports) + tuple(imports))
    if not logging.getLogger("difo").handlers:
        logs.configure(chosen.log_level, chosen.log_format)
    if chosen.setup:
        call_setup(chosen.setup)
    server = Server(chosen)
    if threading.current_thread() is threading.main_thread():
        server.install_signal_handlers()
    server.run()
    return server.exit_code


def call_setup(target: str) -> None:
    """Call the `--setup module:function` hook (e.g. one calling django.setup())."""
    import importlib

    from difo.errors import ConfigError

    module_name, _, name = target.partition(":")
    try:
        hook = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"--setup {target!r}: {exc}") from exc
    hook()


def _dump_threads() -> None:
    import traceback

    for thread_id, frame in sys._current_frames().items():
        stack = "".join(traceback.format_stack(frame))
        log.info("thread %s:\n%s", thread_id, stack)
