"""A server and a client at work: `difo demo`, `--url` to choose the backend.

By default everything runs on the embedded backend, a SQLite file in a temporary folder
removed at exit, so the demo needs nothing but Python. `--url redis://...` runs the same
on Redis (the demo then writes its queues demo-critical and demo-default there, and removes
them afterwards). It starts a `difo server` subprocess, enqueues a mix of units (fast, slow,
failing once into the retry set, scheduled, and a periodic one every two seconds), shows
their progress through `difo.api`, prints a summary and stops the server gracefully.
Ctrl-C stops it cleanly at any point.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import difo
from difo import config
from difo.errors import DifoError

CRITICAL = "demo-critical"
DEFAULT = "demo-default"
QUEUES = (CRITICAL, DEFAULT)
WORKERS = 10
FAST = 400
SLOW = 200
FLAKY = 20
SCHEDULED = 40
RUN_LIMIT = 90.0  # seconds before the demo gives up waiting for its units
POLL = 0.1

# -- the units the server runs -------------------------------------------------------------


def add(a: int, b: int) -> int:
    """A fast unit."""
    return a + b


def sleepy(milliseconds: int) -> None:
    """A slow unit: waits as a call to another service would."""
    time.sleep(milliseconds / 1000)


@difo.job(queue=DEFAULT, retry=3, retry_in=lambda count, exc: 1.0)
def flaky(n: int) -> None:
    """Fails on its first run, succeeds on its retry a second later."""
    current = difo.current()
    if current is not None and current.retry_count is None:
        raise RuntimeError(f"flaky unit {n} fails once, as a flaky network call would")


def tick() -> None:
    """The periodic unit."""


difo.periodic("* * * * * */2", tick, queue=CRITICAL, name="difo-demo-tick")


# -- the demo --------------------------------------------------------------------------------


@dataclass
class Progress:
    processed: int = 0
    failed: int = 0
    waiting: int = 0
    scheduled: int = 0
    retries: int = 0
    busy: int = 0

    @property
    def succeeded(self) -> int:
        return self.processed - self.failed


def main(url: str | None = None, keep: bool = True) -> int:
    """Run the demo on a temporary SQLite file, or on `url`; return an exit status. On a
    terminal, with `keep`, the server and dashboard stay up after the summary until Ctrl-C."""
    try:
        with _backend_url(url) as target:
            return _demo(target, own=url is None, keep=keep)
    except KeyboardInterrupt:
        print(f"{_fresh_line()}difo demo: interrupted; everything it started has stopped",
              file=sys.stderr)
        return 130
    except (DifoError, OSError, RuntimeError) as exc:
        print(f"{_fresh_line()}difo demo: {exc}", file=sys.stderr)
        return 1


def _demo(url: str, *, own: bool, keep: bool) -> int:
    from difo import api

    where = "a temporary file, removed at exit" if own else "yours: the demo writes queues " \
        + " and ".join(QUEUES) + " there and removes them afterwards"
    print(f"backend   {config.mask_url(url)} ({where})")
    client = difo.configure(url)
    client.backend.ping()
    before = _progress(url)
    with _server(url) as server, _dashboard(url) as dashboard:
        print(f"server    pid {server.pid}: {WORKERS} workers on queues {' '.join(QUEUES)}")
        print(f"dashboard {dashboard}" if dashboard else "dashboard not installed (pip install "
              "'difo[web]'); `difo stats --watch` shows the numbers instead")
        started = time.monotonic()
        total = _enqueue()
        try:
            progress = _watch(url, before, total, started, server)
            elapsed = time.monotonic() - started
            print(f"summary   {total} units enqueued, {progress.succeeded} ran to success "
                  f"({progress.failed} failures, each retried) in {elapsed:.1f} s, periodic "
                  "ticks included")
            if keep and sys.stdin.isatty():
                print(f"running   the server{' and the dashboard' if dashboard else ''} keep "
                      "running (a periodic unit every 2 s); press Ctrl-C to stop")
                while server.poll() is None:
                    time.sleep(0.5)
        except KeyboardInterrupt:
            print(f"{_fresh_line()}stopping  the server finishes its units and stops")
        finally:
            if not own:
                for name in QUEUES:
                    api.Queue(name, backend=url).clear()
    print("done      the server stopped gracefully")
    difo.client.default().close()
    return 0


def _enqueue() -> int:
    rng = random.Random(7)
    begin = time.monotonic()
    for i in range(SLOW):
        difo.perform_on(CRITICAL if i % 2 else DEFAULT, sleepy, rng.randint(10, 50))
    difo.perform_bulk(add, [[i, i * i] for i in range(FAST)], queue=DEFAULT)
    flaky.perform_bulk([[n] for n in range(FLAKY)])
    for i in range(SCHEDULED):
        difo.perform_in(1 + i / 10, add, i, i, queue=DEFAULT)
    print(f"client    enqueued {SLOW} slow units one by one (perform_on), {FAST} fast ones "
          f"and {FLAKY} that fail once (perform_bulk),\n          {SCHEDULED} scheduled 1-5 s "
          f"ahead (perform_in), in {time.monotonic() - begin:.2f} s; a periodic unit runs "
          "every 2 s")
    return SLOW + FAST + FLAKY + SCHEDULED


def _progress(url: str) -> Progress:
    from difo import api

    stats = api.Stats(backend=url)
    return Progress(stats.processed, stats.failed,
                    sum(stats.queues.get(name, 0) for name in QUEUES),
                    stats.scheduled_size, stats.retry_size, stats.workers_size)


def _watch(url: str, before: Progress, total: int, started: float,
           server: subprocess.Popen[bytes]) -> Progress:
    """Poll difo.api until every unit has succeeded; show a progress line meanwhile."""
    tty = sys.stdout.isatty()
    last_line = 0.0
    while True:
        now = time.monotonic()
        seen = _progress(url)
        seen.processed -= before.processed
        seen.failed -= before.failed
        complete = (seen.succeeded >= total and seen.waiting == 0 and seen.retries == 0
                    and seen.scheduled == 0)
        line = (f"progress  {min(seen.succeeded, total):>4}/{total} done  "
                f"{seen.waiting:>4} waiting  {seen.scheduled:>3} scheduled  "
                f"{seen.retries:>3} retrying  {seen.failed:>3} failures  "
                f"{now - started:5.1f} s")
        if tty:
            print("\r" + line, end="", flush=True)
        elif complete or now - last_line >= 1.0:
            print(line, flush=True)
            last_line = now
        if complete:
            if tty:
                print()
            return seen
        if server.poll() is not None:
            raise RuntimeError(f"the difo server exited early (status {server.returncode})")
        if now - started > RUN_LIMIT:
            raise RuntimeError(f"units still not done after {RUN_LIMIT:.0f} s")
        time.sleep(POLL)


# -- the processes it starts -----------------------------------------------------------------


@contextmanager
def _backend_url(url: str | None) -> Iterator[str]:
    """`url` itself, or a SQLite file in a temporary folder removed at exit."""
    if url is not None:
        config.parse_url(url, "--url")
        yield url
        return
    with tempfile.TemporaryDirectory(prefix="difo-demo-") as directory:
        yield f"sqlite:///{directory}/difo.db"


@contextmanager
def _server(url: str) -> Iterator[subprocess.Popen[bytes]]:
    """A `difo server` subprocess on `url`; stopped gracefully at exit."""
    environment = dict(os.environ)
    environment.update({"DIFO_URL": url, "DIFO_HEARTBEAT": "0.5", "DIFO_POLL_INTERVAL": "0.2"})
    process = subprocess.Popen(
        [sys.executable, "-m", "difo.cli", "server", "--import", "difo.demo",
         "-q", " ".join(QUEUES), "-w", str(WORKERS), "--log-level", "ERROR"],
        env=environment, start_new_session=True,  # Ctrl-C reaches the demo, which stops it
    )
    try:
        yield process
    finally:
        _stop(process)


@contextmanager
def _dashboard(url: str) -> Iterator[str | None]:
    """`difo web` on a free loopback port, if the dashboard's libraries are installed."""
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        yield None
        return
    port = _free_port()
    environment = dict(os.environ)
    environment["DIFO_URL"] = url
    process = subprocess.Popen(
        [sys.executable, "-m", "difo.cli", "web", "--host", "127.0.0.1", "--port", str(port)],
        env=environment, start_new_session=True, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        _stop(process)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM and wait (a server finishes its running units); a Ctrl-C meanwhile kills."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        print(f"{_fresh_line()}difo demo: the server (pid {process.pid}) did not stop; "
              "killing it", file=sys.stderr)
        process.kill()
        process.wait()


def _fresh_line() -> str:
    """A newline when a `\\r` progress line may be showing on the terminal."""
    return "\n" if sys.stdout.isatty() else ""
