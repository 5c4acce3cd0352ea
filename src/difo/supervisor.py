"""The supervisor: `difo server --processes N` forks N server processes and keeps them up.

Each child is an ordinary server (WORKERS threads, its own fetcher, identity and heartbeat).
The supervisor forwards signals (TERM/INT stop, twice: at once; TSTP quiets; TTIN dumps),
restarts a child that dies (crash or kill) after a backoff, restarts at once a child that asks
for it (exit code RESTART: recycled past --max-units-per-child / --max-memory, or a unit's
thread would not stop), and does not restart a child that stopped on request (exit 0: a
forwarded signal, `Process#stop!` through the backend). It exits when no child is left.
It opens no backend and starts no thread, so forking from it is safe.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Iterable
from types import FrameType

from difo.config import Settings
from difo.server import RESTART, SUPERVISED

log = logging.getLogger("difo.supervisor")

MAX_BACKOFF = 30.0
STEADY = 30.0  # a child that lived this long resets its slot's backoff


class Supervisor:
    """Runs `settings.processes` server processes; `run()` blocks until all have stopped."""

    def __init__(self, settings: Settings, imports: Iterable[str] = ()) -> None:
        self.settings = settings
        self.imports = tuple(imports)
        self.children: dict[int, tuple[int, float]] = {}  # pid -> (slot, started)
        self.pending: dict[int, float] = {}  # slot -> monotonic time to start it again
        self.failures: dict[int, int] = {}
        self.signals = 0

    def run(self) -> int:
        self._install_signal_handlers()
        log.info("difo supervisor %d: %d server processes", os.getpid(), self.settings.processes)
        for slot in range(self.settings.processes):
            self._spawn(slot)
        while self.children or self.pending:
            self._reap()
            now = time.monotonic()
            for slot, when in list(self.pending.items()):
                if self.signals:
                    del self.pending[slot]
                elif now >= when:
                    del self.pending[slot]
                    self._spawn(slot)
            time.sleep(0.05)
        log.info("difo supervisor %d stopped", os.getpid())
        return 0

    def _spawn(self, slot: int) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            os._exit(self._child())
        self.children[pid] = (slot, time.monotonic())
        log.info("started server process %d (slot %d)", pid, slot)

    def _child(self) -> int:
        from difo import server
        from difo.errors import DifoError

        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGTSTP, signal.SIGTTIN):
            signal.signal(signum, signal.SIG_DFL)
        os.environ[SUPERVISED] = "1"
        code = 1
        try:
            code = server.start(imports=self.imports, settings=self.settings)
        except DifoError as exc:
            print(f"difo: {exc}", file=sys.stderr)
            code = 2
        except BaseException:
            log.exception("server process failed")
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
        return code

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            slot, started = self.children.pop(pid, (-1, 0.0))
            if slot < 0:
                continue
            code = os.waitstatus_to_exitcode(status)
            if self.signals or code == 0:
                log.info("server process %d stopped (exit %d)", pid, code)
                continue
            if code == RESTART:
                log.info("server process %d asked for a restart", pid)
                self._spawn(slot)
                continue
            if time.monotonic() - started > STEADY:
                self.failures[slot] = 0
            failures = self.failures.get(slot, 0)
            delay = min(2.0 ** failures, MAX_BACKOFF)
            self.failures[slot] = failures + 1
            log.warning("server process %d died (%s); restarting in %.0f s", pid,
                        f"signal {-code}" if code < 0 else f"exit {code}", delay)
            self.pending[slot] = time.monotonic() + delay

    def _forward(self, signum: int) -> None:
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def _install_signal_handlers(self) -> None:
        def stop(signum: int, frame: FrameType | None) -> None:
            self.signals += 1
            log.info("%s received: stopping %d server processes%s",
                     signal.Signals(signum).name, len(self.children),
                     " now" if self.signals > 1 else "")
            self._forward(signal.SIGTERM)

        def forward(signum: int, frame: FrameType | None) -> None:
            self._forward(signum)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTSTP, forward)
        signal.signal(signal.SIGTTIN, forward)


def needed(settings: Settings) -> bool:
    """Whether `difo server` runs under a supervisor: several processes, recycling, or unit
    timeouts (the restart is the last resort against a thread that will not stop)."""
    return (settings.processes > 1 or settings.unit_timeout is not None
            or settings.max_units_per_child is not None or settings.max_memory is not None)
