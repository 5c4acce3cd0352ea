"""difo's throughput on this machine: enqueue, drain, memory and Redis commands per unit.

    python bench/throughput.py [--n 100000] [--quick] [--json FILE]
    python bench/throughput.py --url sqlite:///difo-bench.db    # the embedded backend

Starts its own redis-server on a free loopback port (never the one on 6379) and removes it at
the end. With a sqlite:/// URL it measures that file instead (removed first, and after):
enqueue, bulk, drain and RSS; the Redis-only rows (commands, Redis CPU) stay empty. What
each number means is in bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis

import difo
import difo.api
from difo import unit
from difo.backends.redis import keys

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import bench_units  # noqa: E402  (lives beside this file; the server imports it too)

QUICK_N = 20_000
WORKERS = 10
POLL = 0.01  # seconds between drain polls
FIRST_POLL = 0.001  # ... until the first claim is seen
SETTLE = 0.5  # seconds a server gets after a drain, before its RSS is read
# ... after registering: its scheduler's first poll (0.25-0.75 s in) opens a connection.
STARTUP_SETTLE = 1.5
IDLE_WINDOW = 3.0  # seconds over which an idle server's Redis commands are counted
WARM_UP = 200  # untimed calls before each timed loop (connections, caches, branch warm-up)
DRAIN_LIMIT = 600.0
# Commands this script sends between the two INFO commandstats snapshots, besides its polls.
RELEASE_COMMANDS = {"multi": 1, "rename": 1, "lpush": 1, "exec": 1}


@dataclass
class Results:
    n: int
    python: str
    redis_version: str
    hiredis: bool
    workers: int = WORKERS
    baseline_lpush_per_s: float = 0.0
    baseline_pushes: int = 0
    enqueue_one_per_s: float = 0.0
    enqueue_one_units: int = 0
    enqueue_bulk_per_s: float = 0.0
    drain_per_s: float = 0.0
    drain_seconds: float = 0.0
    wake_seconds: float = 0.0
    idle_round_trips_per_s: float = 0.0
    idle_commands_per_s: float = 0.0
    idle_round_trips_by_name: dict[str, int] = field(default_factory=dict)
    rss_idle_mib: float = 0.0
    rss_after_mib: float = 0.0
    server_cpu_us_per_unit: float = 0.0
    redis_cpu_us_per_unit: float = 0.0
    commands_per_unit: float = 0.0
    script_calls_per_unit: float = 0.0
    commands_by_name: dict[str, int] = field(default_factory=dict)


def main(argv: list[str] | None = None) -> int:
    options = parse(argv)
    n = QUICK_N if options.quick else options.n
    if n < 10:
        print("throughput: --n must be at least 10", file=sys.stderr)
        return 2
    if options.url:
        if not options.url.startswith("sqlite:///"):
            print("throughput: --url takes a sqlite:/// URL (Redis runs privately)",
                  file=sys.stderr)
            return 2
        results = Results(n=n, python=platform.python_version(), redis_version="-",
                          hiredis=redis.utils.HIREDIS_AVAILABLE)
        measure_sqlite(results, options.url)
        print_table(results, options.url)
        if options.json:
            Path(options.json).write_text(json.dumps(asdict(results), indent=2) + "\n")
        return 0
    binary = shutil.which("redis-server")
    if binary is None:
        print("throughput: redis-server is not installed (Debian: apt-get install "
              "redis-server); the bench starts its own", file=sys.stderr)
        return 1
    try:
        with private_redis(binary) as (url, r):
            results = Results(
                n=n, python=platform.python_version(),
                redis_version=str(r.info("server")["redis_version"]),
                hiredis=redis.utils.HIREDIS_AVAILABLE,
            )
            difo.configure(url)
            measure(results, url, r)
            difo.client.default().close()
    except KeyboardInterrupt:
        print("\nthroughput: interrupted", file=sys.stderr)
        return 130
    print_table(results)
    if options.json:
        Path(options.json).write_text(json.dumps(asdict(results), indent=2) + "\n")
        print(f"\nwrote {options.json}")
    return 0


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000,
                        help="units to drain and to bulk-enqueue (default 100,000); the "
                        "one-by-one enqueue and the LPUSH baseline use N/10")
    parser.add_argument("--quick", action="store_true", help=f"N = {QUICK_N:,}")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--url", help="sqlite:///FILE: measure the embedded backend instead")
    return parser.parse_args(argv)


def measure_sqlite(results: Results, url: str) -> None:
    """The embedded backend: the same enqueue, bulk and drain, timed through difo.api."""
    n = results.n
    path = Path(url[len("sqlite:///"):]).expanduser()
    for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        leftover.unlink(missing_ok=True)
    difo.configure(url)
    queue = difo.api.Queue(bench_units.QUEUE)
    step("enqueue one by one")
    for index in range(WARM_UP):
        difo.perform(bench_units.noop, index)
    queue.clear()
    results.enqueue_one_units = n // 10
    started = time.perf_counter()
    for index in range(n // 10):
        difo.perform(bench_units.noop, index)
    results.enqueue_one_per_s = n // 10 / (time.perf_counter() - started)
    queue.clear()
    step("enqueue bulk")
    queue.pause()  # held until the server is up and idle, as the Redis run renames it
    started = time.perf_counter()
    difo.perform_bulk(bench_units.noop, [[index] for index in range(n)])
    results.enqueue_bulk_per_s = n / (time.perf_counter() - started)
    assert queue.size == n
    step("idle server")
    with server(url) as process:
        deadline = time.monotonic() + 30
        while not len(difo.api.ProcessSet()):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server did not register")
            time.sleep(0.05)
        time.sleep(STARTUP_SETTLE)
        results.rss_idle_mib = rss_mib(process.pid)
        [identity] = [entry.identity for entry in difo.api.ProcessSet()]
        backend = queue.backend
        step("drain")
        cpu_before = process_cpu(process.pid)
        queue.unpause()
        released = time.perf_counter()
        first_claim: float | None = None
        while True:
            waiting, running = queue.size, len(backend.in_flight(identity))
            now = time.perf_counter()
            if first_claim is None and (waiting < n or running):
                first_claim = now
            if first_claim is not None and waiting == 0 and running == 0:
                break
            if process.poll() is not None or now - released > DRAIN_LIMIT:
                raise RuntimeError(f"the drain failed or took too long; {waiting} waiting")
            time.sleep(POLL if first_claim is not None else FIRST_POLL)
        results.server_cpu_us_per_unit = (process_cpu(process.pid) - cpu_before) / n * 1e6
        results.drain_seconds = now - first_claim
        results.drain_per_s = n / results.drain_seconds
        results.wake_seconds = first_claim - released
        time.sleep(SETTLE)
        results.rss_after_mib = rss_mib(process.pid)
    difo.client.default().close()
    for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        leftover.unlink(missing_ok=True)


def measure(results: Results, url: str, r: redis.Redis) -> None:
    n = results.n
    step("LPUSH baseline")
    results.baseline_pushes = n // 10
    results.baseline_lpush_per_s = baseline(r, n // 10)
    r.flushall()

    step("enqueue one by one")
    results.enqueue_one_units = n // 10
    for index in range(WARM_UP):
        difo.perform(bench_units.noop, index)
    r.flushall()
    started = time.perf_counter()
    for index in range(n // 10):
        difo.perform(bench_units.noop, index)
    results.enqueue_one_per_s = n // 10 / (time.perf_counter() - started)
    r.flushall()

    step("enqueue bulk")
    started = time.perf_counter()
    difo.perform_bulk(bench_units.noop, [[index] for index in range(n)])
    results.enqueue_bulk_per_s = n / (time.perf_counter() - started)
    queue = keys.queue(bench_units.QUEUE)
    assert r.llen(queue) == n
    # Hidden until the server is up and idle, so its idle RSS can be read and the drain is
    # timed from the first claim, not from the server's start.
    r.rename(queue, queue + "-held")

    step("idle server")
    with server(url) as process:
        identity = wait_registered(r, process)
        time.sleep(STARTUP_SETTLE)
        round_trips, inside_scripts = monitor(r, IDLE_WINDOW)
        results.idle_round_trips_per_s = sum(round_trips.values()) / IDLE_WINDOW
        results.idle_commands_per_s = (sum(round_trips.values()) + inside_scripts) / IDLE_WINDOW
        results.idle_round_trips_by_name = round_trips
        results.rss_idle_mib = rss_mib(process.pid)
        step("drain")
        drain(results, r, process, identity)
        time.sleep(SETTLE)
        results.rss_after_mib = rss_mib(process.pid)


def baseline(r: redis.Redis, count: int) -> float:
    """Plain redis-py LPUSH of a unit-sized payload, one round trip each."""
    payload = unit.encode(unit.build("bench_units:noop", [0], "baseline", {}))
    for _ in range(WARM_UP):
        r.lpush("baseline", payload)
    started = time.perf_counter()
    for _ in range(count):
        r.lpush("baseline", payload)
    return count / (time.perf_counter() - started)


def drain(results: Results, r: redis.Redis, process: subprocess.Popen[bytes],
          identity: str) -> None:
    n = results.n
    queue = keys.queue(bench_units.QUEUE)
    in_flight = keys.in_flight(identity)
    commands_before = commandstats(r)
    cpu_before = process_cpu(process.pid), redis_cpu(r)
    pipe = r.pipeline(transaction=True)
    pipe.rename(queue + "-held", queue)
    pipe.lpush(keys.wake(bench_units.QUEUE), "1")
    pipe.execute()
    released = time.perf_counter()
    first_claim: float | None = None
    polls = 0
    poll = r.pipeline(transaction=False)
    while True:
        poll.llen(queue)
        poll.hlen(in_flight)
        waiting, running = poll.execute()
        polls += 1
        now = time.perf_counter()
        if first_claim is None and (waiting < n or running):
            first_claim = now
        if first_claim is not None and waiting == 0 and running == 0:
            break
        if process.poll() is not None:
            raise RuntimeError(f"the server exited during the drain ({process.returncode})")
        if now - released > DRAIN_LIMIT:
            raise RuntimeError(f"the drain took over {DRAIN_LIMIT:.0f} s; {waiting} waiting")
        time.sleep(POLL if first_claim is not None else FIRST_POLL)
    server_cpu = process_cpu(process.pid) - cpu_before[0]
    redis_used = redis_cpu(r) - cpu_before[1]
    commands_after = commandstats(r)
    mine = {"llen": polls, "hlen": polls, "info": 3, **RELEASE_COMMANDS}
    by_name = {name: commands_after.get(name, 0) - commands_before.get(name, 0)
               - mine.get(name, 0) for name in commands_after}
    by_name = {name: calls for name, calls in sorted(by_name.items(), key=lambda kv: -kv[1])
               if calls > 0}
    results.drain_seconds = now - first_claim
    results.drain_per_s = n / results.drain_seconds
    results.wake_seconds = first_claim - released
    results.server_cpu_us_per_unit = server_cpu / n * 1e6
    results.redis_cpu_us_per_unit = redis_used / n * 1e6
    results.commands_by_name = by_name
    results.commands_per_unit = sum(by_name.values()) / n
    results.script_calls_per_unit = (by_name.get("evalsha", 0) + by_name.get("eval", 0)) / n


# -- measuring -------------------------------------------------------------------------------------


def commandstats(r: redis.Redis) -> dict[str, int]:
    """Calls per command name so far (Redis counts commands run inside scripts too)."""
    stats: dict[str, Any] = r.info("commandstats")
    return {name.removeprefix("cmdstat_").lower(): int(value["calls"])
            for name, value in stats.items()}


def monitor(r: redis.Redis, seconds: float) -> tuple[dict[str, int], int]:
    """What Redis runs for `seconds` (MONITOR): round trips by command, and the number of
    commands run inside scripts. Only for quiet periods: MONITOR slows a busy Redis."""
    kwargs = r.connection_pool.connection_kwargs
    round_trips: dict[str, int] = {}
    inside = 0
    with socket.create_connection((kwargs["host"], kwargs["port"]), timeout=seconds) as sock:
        sock.sendall(b"MONITOR\r\n")
        deadline = time.monotonic() + seconds
        buffered = b""
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            *lines, buffered = (buffered + chunk).split(b"\r\n")
            for line in lines:
                # +1700000000.123456 [0 127.0.0.1:5555] "evalsha" ...   ([0 lua] in scripts)
                if not line.startswith(b"+") or b"] \"" not in line:
                    continue
                source, _, command = line.partition(b"] \"")
                if source.endswith(b" lua"):
                    inside += 1
                else:
                    name = command.partition(b"\"")[0].decode().lower()
                    round_trips[name] = round_trips.get(name, 0) + 1
    return dict(sorted(round_trips.items(), key=lambda kv: -kv[1])), inside


def redis_cpu(r: redis.Redis) -> float:
    info: dict[str, Any] = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of `pid` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of stat
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    """VmRSS of `pid` in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# -- the processes it starts -----------------------------------------------------------------------


@contextmanager
def private_redis(binary: str) -> Iterator[tuple[str, redis.Redis]]:
    with tempfile.TemporaryDirectory(prefix="difo-bench-") as directory:
        port = free_port()
        process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", directory],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        r = redis.Redis(host="127.0.0.1", port=port)
        try:
            wait_until(lambda: ping(r), 10, "redis-server to answer", process)
            yield f"redis://127.0.0.1:{port}/0", r
        finally:
            r.close()
            stop(process)


@contextmanager
def server(url: str) -> Iterator[subprocess.Popen[bytes]]:
    environment = dict(os.environ)
    environment.pop("DIFO_URL", None)  # it would win over REDIS_URL
    environment["REDIS_URL"] = url
    if url.startswith("sqlite:"):
        environment["DIFO_URL"] = url
    environment["PYTHONPATH"] = os.pathsep.join(
        path for path in (str(BENCH), environment.get("PYTHONPATH")) if path
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "difo.cli", "server", "--import", "bench_units",
         "--log-level", "WARNING", "-w", str(WORKERS), "-q", bench_units.QUEUE],
        env=environment, start_new_session=True,
    )
    try:
        yield process
    finally:
        stop(process)


def wait_registered(r: redis.Redis, process: subprocess.Popen[bytes]) -> str:
    """The identity of the (only) server once it has beaten."""
    wait_until(lambda: bool(r.scard(keys.PROCESSES)), 20, "the server to register", process)
    members: set[bytes] = r.smembers(keys.PROCESSES)  # type: ignore[assignment]
    return next(iter(members)).decode()


def wait_until(condition: Callable[[], bool], timeout: float, what: str,
               process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise RuntimeError(f"gave up waiting for {what}: it exited ({process.returncode})")
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up waiting for {what} after {timeout:.0f} s")
        time.sleep(0.02)


def ping(r: redis.Redis) -> bool:
    try:
        return bool(r.ping())
    except redis.ConnectionError:
        return False


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def step(name: str) -> None:
    print(f"... {name}", file=sys.stderr, flush=True)


# -- output ---------------------------------------------------------------------------------------


def print_table(res: Results, sqlite_url: str = "") -> None:
    n, tenth = res.n, res.n // 10
    if sqlite_url:
        print(f"difo throughput on {sqlite_url}: N = {n:,}; Python {res.python}, "
              f"{os.cpu_count()} CPUs")
        for name, value in (
            ("enqueue one by one", f"{res.enqueue_one_per_s:,.0f} units/s ({tenth:,} units)"),
            ("enqueue bulk", f"{res.enqueue_bulk_per_s:,.0f} units/s"),
            ("drain, one server", f"{res.drain_per_s:,.0f} units/s ({res.workers} workers, "
             f"{res.drain_seconds:.2f} s)"),
            ("first claim after unpause", f"{res.wake_seconds * 1000:.1f} ms"),
            ("server CPU per unit", f"{res.server_cpu_us_per_unit:,.1f} us"),
            ("server RSS idle / after", f"{res.rss_idle_mib:.1f} / {res.rss_after_mib:.1f} MiB"),
        ):
            print(f"  {name:<26}  {value}")
        return
    rows = [
        ("redis-py LPUSH loop (baseline)", f"{res.baseline_lpush_per_s:,.0f}", "pushes/s",
         f"{res.baseline_pushes:,} pushes, one round trip each"),
        ("enqueue one by one", f"{res.enqueue_one_per_s:,.0f}", "units/s",
         f"difo.perform, {tenth:,} units"),
        ("enqueue bulk", f"{res.enqueue_bulk_per_s:,.0f}", "units/s",
         f"difo.perform_bulk, {n:,} units"),
        ("drain, one server", f"{res.drain_per_s:,.0f}", "units/s",
         f"{n:,} no-op units, {res.workers} workers, {res.drain_seconds:.2f} s"),
        ("first claim after release", f"{res.wake_seconds * 1000:.1f}", "ms",
         f"units appear on an idle server's queue (polled every {FIRST_POLL * 1000:.0f} ms)"),
        ("server CPU per unit", f"{res.server_cpu_us_per_unit:,.1f}", "us", "during the drain"),
        ("Redis CPU per unit", f"{res.redis_cpu_us_per_unit:,.1f}", "us", "during the drain"),
        ("Redis commands per unit", f"{res.commands_per_unit:.3f}", "calls",
         "worker side, inside scripts included"),
        ("  of them script calls", f"{res.script_calls_per_unit:.4f}", "calls", "EVALSHA"),
        ("idle server round trips", f"{res.idle_round_trips_per_s:.1f}", "per s",
         f"over {IDLE_WINDOW:.0f} s before the drain (MONITOR)"),
        ("idle server Redis commands", f"{res.idle_commands_per_s:.1f}", "per s",
         "the same, inside scripts included"),
        ("server RSS, idle", f"{res.rss_idle_mib:.1f}", "MiB", "before the drain"),
        ("server RSS, after drain", f"{res.rss_after_mib:.1f}", "MiB", ""),
    ]
    print(f"difo throughput: N = {n:,}; Python {res.python}, Redis {res.redis_version}, "
          f"hiredis {'yes' if res.hiredis else 'no'}, {os.cpu_count()} CPUs")
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for name, value, unit_name, note in rows:
        print(f"  {name:<{widths[0]}}  {value:>{widths[1]}}  {unit_name:<{widths[2]}}  "
              f"{note}".rstrip())
    top = ", ".join(f"{name} {calls / n:.3f}" for name, calls in
                    list(res.commands_by_name.items())[:8])
    print(f"  drain commands per unit by name: {top}")
    idle = ", ".join(f"{name} {calls / IDLE_WINDOW:.1f}" for name, calls in
                     res.idle_round_trips_by_name.items())
    print(f"  idle round trips per second by name: {idle}")


if __name__ == "__main__":
    sys.exit(main())
