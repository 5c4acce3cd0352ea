"""CPU-bound units with 1 and 2 server processes: threads share the GIL, processes do not.

    python bench/cpu_bound.py [--n 200] [--work 200000] [--processes 1 2]

Starts its own redis-server on a free loopback port (never the one on 6379). Each unit sums
squares in pure Python (`--work` iterations) and pushes one token when done; the time from
the server's start until every token is there gives units/s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

import difo

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DONE = "bench:cpu:done"


def burn(work: int) -> None:
    """The unit: pure-Python CPU work, then one token."""
    total = 0
    for n in range(work):
        total += n * n
    redis.Redis.from_url(os.environ["REDIS_URL"]).rpush(DONE, total & 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--work", type=int, default=200_000)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    options = parser.parse_args(argv)
    binary = shutil.which("redis-server")
    if binary is None:
        print("cpu_bound: redis-server is not installed", file=sys.stderr)
        return 2
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    folder = tempfile.mkdtemp()
    redis_process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", folder],
        stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    r = redis.Redis.from_url(url)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                r.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        print(f"{options.n} units of {options.work} iterations, {os.cpu_count()} CPUs")
        for processes in options.processes:
            rate = run(url, r, processes, options.n, options.work)
            print(f"  --processes {processes}: {rate:8.1f} units/s")
    finally:
        redis_process.terminate()
        redis_process.wait(10)
        shutil.rmtree(folder, ignore_errors=True)
    return 0


def run(url: str, r: redis.Redis, processes: int, n: int, work: int) -> float:
    r.flushall()
    difo.configure(url)
    sys.path.insert(0, str(BENCH))
    import cpu_bound  # the unit must live in an importable module, not __main__

    difo.perform_bulk(cpu_bound.burn, [[work] for _ in range(n)], queue="cpu")
    environment = dict(os.environ, REDIS_URL=url, PYTHONPATH=f"{BENCH}:{ROOT / 'src'}",
                       DIFO_LOG_LEVEL="WARNING")
    started = time.monotonic()
    server = subprocess.Popen(
        [sys.executable, "-m", "difo.cli", "server", "--import", "cpu_bound", "-q", "cpu",
         "-w", "4", "--processes", str(processes)], cwd=BENCH, env=environment)
    try:
        while r.llen(DONE) < n:
            if server.poll() is not None:
                raise RuntimeError(f"the server exited with {server.returncode}")
            time.sleep(0.01)
        return n / (time.monotonic() - started)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)


if __name__ == "__main__":
    sys.exit(main())
