"""A server and a client at work: `python -m difo.demo [--url redis://...]`.

Starts a private `redis-server` (never writing into a Redis it did not start, unless given
`--url`), a `difo server` subprocess over two queues, enqueues a few hundred units with
`perform_on` and `perform_bulk`, shows their progress and a summary, then stops the server
gracefully. The unit functions below are what the server runs: each records that it ran by
incrementing a counter in the same Redis, which is how the demo watches progress.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import redis

import difo
from difo import config
from difo.backends.redis import connect
from difo.errors import DifoError

CRITICAL = "demo-critical"
DEFAULT = "demo-default"
QUEUES = (CRITICAL, DEFAULT)
WORKERS = 10
COUNTER = "difo-demo:done:"  # + queue name: units finished on that queue
SLOW_CRITICAL = 200  # sleepy units, enqueued one by one with perform_on
SLOW_DEFAULT = 200  # sleepy units, one perform_bulk call
FAST_DEFAULT = 400  # add units, one perform_bulk call
RUN_LIMIT = 60.0  # seconds before the demo gives up waiting for its units
POLL = 0.05

# -- the units the server runs -------------------------------------------------------------------

_unit_redis: redis.Redis | None = None
_unit_redis_lock = threading.Lock()


def add(a: int, b: int) -> int:
    """A fast unit: adds two numbers and records that it ran."""
    _record_done()
    return a + b


def sleepy(milliseconds: int) -> None:
    """A slow unit: waits as a call to another service would, then records that it ran."""
    time.sleep(milliseconds / 1000)
    _record_done()


def _record_done() -> None:
    global _unit_redis
    running = difo.current()
    queue = running.queue if running else "none"
    if _unit_redis is None:
        with _unit_redis_lock:
            if _unit_redis is None:
                # The server's own setting (REDIS_URL / DIFO_URL), parsed as difo parses it.
                _unit_redis = connect(config.parse_url(config.load().url))
    _unit_redis.incr(COUNTER + queue)


# -- the demo ------------------------------------------------------------------------------------


@dataclass
class QueueProgress:
    """What the demo saw of one queue: units enqueued, done, first and last completion."""

    name: str
    enqueued: int = 0
    done: int = 0
    first_done: float | None = None
    last_done: float | None = None

    @property
    def seconds(self) -> float:
        if self.first_done is None or self.last_done is None:
            return 0.0
        return self.last_done - self.first_done

    @property
    def rate(self) -> float:
        # The first completion is seen at most one poll late; count the window from a poll
        # earlier so a queue that drains between two polls still gets a finite rate.
        return self.done / (self.seconds + POLL) if self.done else 0.0


@dataclass
class Run:
    queues: dict[str, QueueProgress] = field(
        default_factory=lambda: {name: QueueProgress(name) for name in QUEUES}
    )
    enqueue_seconds: float = 0.0
    started: float = 0.0
    finished: float = 0.0

    @property
    def enqueued(self) -> int:
        return sum(q.enqueued for q in self.queues.values())

    @property
    def done(self) -> int:
        return sum(min(q.done, q.enqueued) for q in self.queues.values())


def main(url: str | None = None) -> int:
    """Run the demo against a private redis-server, or against `url` when given."""
    if url is not None and not config.parse_url(url).is_redis:
        print(f"difo demo: {config.mask_url(url)} is not a Redis URL; the demo counts its "
              "units in Redis (redis://, rediss:// or unix://)", file=sys.stderr)
        return 2
    if url is None and shutil.which("redis-server") is None:
        print("difo demo: redis-server is not installed. Install it (Debian/Ubuntu: "
              "apt-get install redis-server; macOS: brew install redis), or pass --url "
              "redis://HOST:PORT/DB to use a Redis you run (the demo then writes its queues "
              "demo-critical and demo-default there).", file=sys.stderr)
        return 1
    try:
        with _redis_for(url) as target:
            return _demo(target, private=url is None)
    except KeyboardInterrupt:
        print(f"{_fresh_line()}difo demo: interrupted; everything it started has stopped",
              file=sys.stderr)
        return 130
    except (DifoError, redis.RedisError, OSError, RuntimeError) as exc:
        print(f"{_fresh_line()}difo demo: {exc}", file=sys.stderr)
        return 1


def _demo(url: str, *, private: bool) -> int:
    watcher = connect(config.parse_url(url))
    try:
        return _demo_with(url, watcher, private=private)
    finally:
        watcher.close()


def _demo_with(url: str, watcher: redis.Redis, *, private: bool) -> int:
    masked = config.mask_url(url)
    version = watcher.info("server").get("redis_version", "?")
    where = "private, removed at exit" if private else "yours: the demo writes queues " + \
        " and ".join(QUEUES) + " there"
    print(f"redis     {version} at {masked} ({where})")
    watcher.delete(*(COUNTER + name for name in QUEUES))
    run = Run()
    with _server(url, watcher) as server:
        print(f"server    pid {server.pid}: {WORKERS} workers on queues {' '.join(QUEUES)}")
        difo.configure(url)
        try:
            _enqueue(run)
            _watch(run, watcher, server)
        finally:
            difo.client.default().close()
            if not private:
                _tidy(url, watcher)
    _summary(run)
    return 0 if run.done == run.enqueued else 1


def _enqueue(run: Run) -> None:
    rng = random.Random(7)
    run.started = time.monotonic()
    first = ""
    for _ in range(SLOW_CRITICAL):
        jid = difo.perform_on(CRITICAL, sleepy, rng.randint(10, 50))
        first = first or jid
    run.queues[CRITICAL].enqueued += SLOW_CRITICAL
    difo.perform_bulk(sleepy, [[rng.randint(10, 50)] for _ in range(SLOW_DEFAULT)],
                      queue=DEFAULT)
    difo.perform_bulk(add, [[i, i * i] for i in range(FAST_DEFAULT)], queue=DEFAULT)
    run.queues[DEFAULT].enqueued += SLOW_DEFAULT + FAST_DEFAULT
    run.enqueue_seconds = time.monotonic() - run.started
    print(f"client    enqueued {run.enqueued} units in {run.enqueue_seconds:.2f} s: "
          f"{SLOW_CRITICAL} sleepy on {CRITICAL} one by one\n"
          f"          (difo.perform_on; the first jid is {first}), {SLOW_DEFAULT} sleepy and "
          f"{FAST_DEFAULT} add\n          on {DEFAULT} (two difo.perform_bulk calls)")


def _watch(run: Run, watcher: redis.Redis, server: subprocess.Popen[bytes]) -> None:
    """Poll the counters until every unit is done; show a progress line as they move."""
    tty = sys.stdout.isatty()
    last_line = 0.0
    deadline = run.started + RUN_LIMIT
    while True:
        now = time.monotonic()
        counts = watcher.mget([COUNTER + name for name in QUEUES])
        for name, raw in zip(QUEUES, counts, strict=True):
            progress = run.queues[name]
            done = int(raw or 0)
            if done > progress.done:
                progress.first_done = progress.first_done or now
                progress.last_done = now
            progress.done = done
        complete = run.done >= run.enqueued
        if tty:
            print("\r" + _progress_line(run, now), end="", flush=True)
        elif complete or now - last_line >= 1.0:
            print(_progress_line(run, now), flush=True)
            last_line = now
        if complete:
            run.finished = now
            if tty:
                print()
            return
        if server.poll() is not None:
            raise RuntimeError(f"the difo server exited early (status {server.returncode})")
        if now > deadline:
            raise RuntimeError(f"{run.enqueued - run.done} units still not done after "
                               f"{RUN_LIMIT:.0f} s")
        time.sleep(POLL)


def _progress_line(run: Run, now: float) -> str:
    parts = [f"{name} {min(q.done, q.enqueued):>4}/{q.enqueued}" for name, q in
             run.queues.items()]
    width = 30
    filled = width * run.done // max(run.enqueued, 1)
    bar = "#" * filled + "." * (width - filled)
    return f"progress  [{bar}] {run.done:>4}/{run.enqueued}  {'  '.join(parts)}  " \
           f"{now - run.started:5.1f} s"


def _summary(run: Run) -> None:
    elapsed = run.finished - run.started
    print(f"summary   {run.enqueued} enqueued, {run.done} completed in {elapsed:.2f} s "
          f"({run.done / elapsed:.0f} units/s overall, the enqueue included)")
    print(f"          {'queue':<14} {'enqueued':>8} {'completed':>9} {'seconds':>8} "
          f"{'units/s':>8}")
    for q in run.queues.values():
        print(f"          {q.name:<14} {q.enqueued:>8} {min(q.done, q.enqueued):>9} "
              f"{q.seconds:>8.2f} {q.rate:>8.0f}")
    print("          (seconds: from the queue's first completion seen to its last; "
          f"{CRITICAL} is served first)")


def _tidy(url: str, watcher: redis.Redis) -> None:
    """In a Redis the demo did not start: remove its counters and queues, leave the rest."""
    from difo.api import Queue

    watcher.delete(*(COUNTER + name for name in QUEUES))
    for name in QUEUES:
        Queue(name, backend=url).clear()


# -- the processes it starts ---------------------------------------------------------------------


@contextmanager
def _redis_for(url: str | None) -> Iterator[str]:
    """`url` itself, or the URL of a private redis-server stopped (and removed) at exit."""
    if url is not None:
        yield url
        return
    binary = shutil.which("redis-server")
    assert binary is not None
    with tempfile.TemporaryDirectory(prefix="difo-demo-") as directory:
        port = _free_port()
        process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", directory],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches the demo only; it stops this in order
        )
        try:
            private = f"redis://127.0.0.1:{port}/0"
            _wait_for_redis(private, process)
            yield private
        finally:
            _stop(process, "redis-server")


@contextmanager
def _server(url: str, watcher: redis.Redis) -> Iterator[subprocess.Popen[bytes]]:
    """A `difo server` subprocess, registered and serving; stopped gracefully at exit."""
    environment = dict(os.environ)
    environment.pop("DIFO_URL", None)  # it would win over REDIS_URL
    environment["REDIS_URL"] = url
    before = set(watcher.smembers("processes"))
    process = subprocess.Popen(
        [sys.executable, "-m", "difo.cli", "server", "--import", "difo.demo",
         "-q", " ".join(QUEUES), "-w", str(WORKERS), "--log-level", "WARNING"],
        env=environment, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not set(watcher.smembers("processes")) - before:
            if process.poll() is not None:
                raise RuntimeError(f"the difo server exited at start (status "
                                   f"{process.returncode}); its error is above")
            if time.monotonic() > deadline:
                raise RuntimeError("the difo server did not register within 20 s")
            time.sleep(POLL)
        yield process
    finally:
        _stop(process, "difo server")


def _stop(process: subprocess.Popen[bytes], name: str) -> None:
    """SIGTERM and wait (a server finishes its running units); a Ctrl-C meanwhile kills."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        print(f"{_fresh_line()}difo demo: {name} (pid {process.pid}) did not stop; killing it",
              file=sys.stderr)
        process.kill()
        process.wait()


def _wait_for_redis(url: str, process: subprocess.Popen[bytes]) -> None:
    client = connect(config.parse_url(url), socket_timeout=1.0)
    deadline = time.monotonic() + 10
    try:
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if process.poll() is not None:
                    raise RuntimeError(f"redis-server exited at start (status "
                                       f"{process.returncode})") from None
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not answer at {url} within "
                                       "10 s") from None
                time.sleep(0.02)
    finally:
        client.close()


def _fresh_line() -> str:
    """A newline when a `\\r` progress line may be showing on the terminal."""
    return "\n" if sys.stdout.isatty() else ""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m difo.demo",
        description="A difo server and client at work, on a private redis-server.",
    )
    parser.add_argument("--url", help="Use this Redis instead of starting a private one "
                        "(the demo writes queues demo-critical and demo-default there).")
    return parser.parse_args(argv)


if __name__ == "__main__":
    # Run the module's importable twin: a server cannot import functions from __main__.
    from difo import demo

    sys.exit(demo.main(_parse(None).url))
