"""difo side by side with RQ, Celery, Dramatiq, Huey, arq and Sidekiq, on one private Redis.

    python bench/compare.py [--quick] [--runs 3] [--only difo,rq] [--no-scaling] [--json FILE]

Installs each Python peer into its own virtual environment under bench/.peers/ (pip, from
PyPI, once), starts its own redis-server on a free loopback port (never 6379), and runs every
system on the same unit (one INCR) through its public API and its recommended configuration
for a 2-core machine, interleaved, taking medians. bench/README.md says what each column
means and how every system is configured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

BENCH = Path(__file__).resolve().parent
PEERS = BENCH / "peers"  # the apps, one per system (in git)
VENVS = BENCH / ".peers"  # their virtual environments (git-ignored)
sys.path.insert(0, str(BENCH))

import throughput  # noqa: E402  (private_redis, free_port, rss_mib, commandstats)

POLL = 0.002  # seconds between drain polls
LATENCY_RATE = 200.0  # units per second in the latency run
IDLE_RATE = 20.0  # ... in difo's idle latency run: every unit finds the server idle
STOP_TIMEOUT = 20.0
START_TIMEOUT = 60.0  # Celery takes a few seconds to start on a busy 2-core machine


@dataclass(frozen=True)
class System:
    name: str
    label: str
    one: list[list[str]]  # the worker processes of "drain, 1 process"
    two: list[list[str]]  # ... of "drain, best on 2 cores"
    fill: tuple[int, int]  # units queued before a drain: full, --quick
    pip: str = ""  # what its virtual environment installs; "" for difo and Sidekiq
    ruby: bool = False
    python_peer: bool = True


DIFO = ["difo", "server", "-q", "bench", "--import", "app_difo", "--log-level", "WARNING"]
SIDEKIQ = ["sidekiq", "-r", "./sidekiq_app.rb", "-q", "bench", "-c", "10"]

SYSTEMS = [
    System("difo", "difo -w 10 | 2 x difo -w 10", [[*DIFO, "-w", "10"]],
           [[*DIFO, "-w", "10"]] * 2, (100_000, 20_000), python_peer=False),
    System("rq", "rq worker (fork) | 2 x rq worker", [["rq", "worker", "-q", "bench"]],
           [["rq", "worker", "-q", "bench"]] * 2, (2_000, 600), pip="rq"),
    System("celery", "-P threads -c 10 | -P prefork -c 2",
           [["celery", "-A", "app_celery", "worker", "-P", "threads", "-c", "10", "-l",
             "WARNING"]],
           [["celery", "-A", "app_celery", "worker", "-P", "prefork", "-c", "2", "-l",
             "WARNING"]], (10_000, 4_000), pip="celery[redis]"),
    System("dramatiq", "-p 1 -t 10 | -p 2 -t 8",
           [["dramatiq", "app_dramatiq", "-p", "1", "-t", "10"]],
           [["dramatiq", "app_dramatiq", "-p", "2", "-t", "8"]], (10_000, 4_000),
           pip="dramatiq[redis]"),
    System("huey", "-k thread -w 10 | -k process -w 2",
           [["huey_consumer", "app_huey.huey", "-k", "thread", "-w", "10", "-q"]],
           [["huey_consumer", "app_huey.huey", "-k", "process", "-w", "2", "-q"]],
           (10_000, 4_000), pip="huey"),
    System("arq", "arq (max_jobs 10) | 2 x arq", [["arq", "app_arq.WorkerSettings"]],
           [["arq", "app_arq.WorkerSettings"]] * 2, (10_000, 4_000), pip="arq"),
    System("sidekiq", "sidekiq -c 10 | 2 x sidekiq -c 10", [SIDEKIQ], [SIDEKIQ] * 2,
           (50_000, 20_000), ruby=True, python_peer=False),
]

# The floors' driver runs in difo's environment: app_baseline.py, same redis-py.
BASELINE = System("baseline", "bare redis-py loops", [], [], (0, 0), python_peer=False)


@dataclass
class Row:
    """One system's medians."""

    system: str
    config: str
    enqueue_per_s: float = 0.0
    drain_one_per_s: float = 0.0
    drain_two_per_s: float = 0.0
    latency_p50_ms: float = 0.0
    latency_p99_ms: float = 0.0
    commands_per_job: float = 0.0
    runs: dict[str, list[float]] = field(default_factory=dict)


class Bench:
    def __init__(self, url: str, r: redis.Redis, quick: bool) -> None:
        self.url = url
        self.r = r
        self.quick = quick
        self.mine: Counter[str] = Counter()  # commands this script sent, by name
        self.notes: list[str] = []

    # -- the systems' processes -----------------------------------------------------------------

    def environment(self) -> dict[str, str]:
        environment = dict(os.environ, BENCH_REDIS_URL=self.url, REDIS_URL=self.url,
                           PYTHONPATH=str(PEERS), PYTHONUNBUFFERED="1")
        environment.pop("DIFO_URL", None)
        return environment

    def executable(self, system: System, name: str) -> str:
        if system.ruby:
            return shutil.which(name) or name
        if system.name == "difo":
            return str(Path(sys.executable).with_name(name))
        return str(VENVS / system.name / "bin" / name)

    def start(self, system: System, commands: list[list[str]]) -> list[subprocess.Popen[bytes]]:
        processes = []
        for command in commands:
            argv = [self.executable(system, command[0]), *command[1:]]
            processes.append(subprocess.Popen(
                argv, cwd=PEERS, env=self.environment(), stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True))
        return processes

    def driver(self, system: System, *args: object) -> float:
        """Run the system's driver (bench/peers/driver.py or sidekiq_app.rb); its seconds."""
        if system.ruby:
            argv = ["ruby", "sidekiq_app.rb", *map(str, args)]
        else:
            python = sys.executable if system.name in ("difo", "baseline") else str(
                VENVS / system.name / "bin" / "python")
            argv = [python, "driver.py", system.name, *map(str, args)]
        done = subprocess.run(argv, cwd=PEERS, env=self.environment(), capture_output=True,
                              check=False, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"{system.name} driver {args} failed: "
                               f"{done.stderr.decode()[-2000:]}")
        return float(json.loads(done.stdout.decode().strip().splitlines()[-1])["seconds"])

    # -- measuring ----------------------------------------------------------------------------

    def call(self, name: str, *args: Any) -> Any:
        self.mine[name.lower()] += 1
        return self.r.execute_command(name, *args)

    def count(self) -> int:
        return int(self.call("GET", "bench:count") or 0)

    def enqueue(self, system: System, count: int) -> float:
        self.r.flushall()
        return count / self.driver(system, "send", count)

    def drain(self, system: System, commands: list[list[str]], budget: float, *,
              fill: int, unit: str = "incr", pad: int = 0) -> dict[str, float]:
        """Fill the queue, start the workers, time units from the first to the last (or
        until `budget` seconds pass); commands per job from INFO commandstats."""
        self.r.flushall()
        if system.ruby and unit != "incr":
            self.driver(system, "fill", fill, unit)
        elif unit != "incr" or pad:
            self.driver(system, "fill", fill, unit, pad)
        else:
            self.driver(system, "fill", fill)
        done = self.count if unit == "incr" else self._empty_done(fill, system)
        processes = self.start(system, commands)
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while (first := done()) == 0:
                self._check(processes, deadline, f"{system.name} to start")
                time.sleep(POLL)
            started = time.perf_counter()
            self.mine.clear()
            before = throughput.commandstats(self.r)
            rss_early = 0.0  # read a tenth of the way in: start-up (connections) is done
            current = first
            while current < fill and time.perf_counter() - started < budget:
                self._check(processes, None, "")
                time.sleep(POLL)
                current = done()
                if not rss_early and current >= first + fill // 10:
                    rss_early = throughput.rss_mib(processes[0].pid)
            elapsed = time.perf_counter() - started
            after = throughput.commandstats(self.r)
            rss_after = throughput.rss_mib(processes[0].pid)
        finally:
            stop(processes)
        jobs = current - first
        calls = {name: after.get(name, 0) - before.get(name, 0) - self.mine.get(name, 0)
                 for name in after}
        calls["info"] = calls.get("info", 0) - 1  # the first snapshot's own INFO
        if os.environ.get("BENCH_VERBOSE"):
            top = sorted(calls.items(), key=lambda item: -item[1])[:8]
            print(f"  {system.name} {unit}: {jobs} jobs; commands: "
                  + ", ".join(f"{name} {count / max(jobs, 1):.3f}" for name, count in top),
                  file=sys.stderr)
        return {"per_s": jobs / elapsed, "jobs": jobs,
                "commands_per_job": sum(calls.values()) / max(jobs, 1),
                "rss_early_mib": rss_early, "rss_after_mib": rss_after}

    def _empty_done(self, fill: int, system: System) -> Callable[[], int]:
        """Units finished of a queue of no-op units: difo's, neither waiting nor in flight;
        Sidekiq's, no longer waiting (its basic fetch holds at most one per thread, 10 of
        the 50,000, with nothing to count them by)."""
        if system.ruby:
            return lambda: fill - int(self.call("LLEN", "queue:bench"))

        def done() -> int:
            waiting = int(self.call("LLEN", "queue:bench"))
            records = self.call("KEYS", "difo:inflight:*")
            running = sum(int(self.call("HLEN", key)) for key in records)
            return fill - waiting - running
        return done

    def latency(self, system: System, count: int, rate: float = LATENCY_RATE,
                idle_count: int = 0) -> dict[str, float]:
        """Units sent at `rate` to an idle, warmed-up 1-process worker: latency percentiles
        from the units' own clock reading (sender and worker share this machine's clock)."""
        self.r.flushall()
        processes = self.start(system, system.one)
        out: dict[str, float] = {}
        try:
            self.driver(system, "send", 0)  # 100 warm-up units (and a start-up check)
            deadline = time.monotonic() + START_TIMEOUT
            while self.count() < 100:
                self._check(processes, deadline, f"{system.name} to run warm-up units")
                time.sleep(0.01)
            time.sleep(0.5)
            out["rss_idle_mib"] = throughput.rss_mib(processes[0].pid)
            out.update(self._timed(system, processes, rate, count, ""))
            if idle_count:
                out.update(self._timed(system, processes, IDLE_RATE, idle_count, "idle_"))
        finally:
            stop(processes)
        return out

    def _timed(self, system: System, processes: list[subprocess.Popen[bytes]], rate: float,
               count: int, prefix: str) -> dict[str, float]:
        self.r.delete("bench:latency")
        self.driver(system, "paced", rate, count)
        deadline = time.monotonic() + 30
        while int(self.r.llen("bench:latency")) < count:
            self._check(processes, deadline, f"{system.name}'s timed units")
            time.sleep(0.01)
        values = sorted(float(v) * 1000 for v in self.r.lrange("bench:latency", 0, -1))
        return {f"{prefix}p50_ms": percentile(values, 50),
                f"{prefix}p99_ms": percentile(values, 99)}

    @staticmethod
    def _check(processes: list[subprocess.Popen[bytes]], deadline: float | None,
               what: str) -> None:
        for process in processes:
            if process.poll() is not None:
                raise RuntimeError(f"{process.args} exited ({process.returncode})")
        if deadline is not None and time.monotonic() > deadline:
            raise RuntimeError(f"gave up waiting for {what}")


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    index = min(len(values) - 1, max(0, round(pct / 100 * len(values) + 0.5) - 1))
    return values[index]


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each worker's whole process group (forks, prefork children), then SIGKILL."""
    for process in processes:
        if process.poll() is None:
            with _quiet():
                os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with _quiet():
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        with _quiet():
            os.killpg(process.pid, signal.SIGKILL)  # leftovers: horses, pool children


class _quiet:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return exc[0] is ProcessLookupError or exc[0] is PermissionError


# -- setup ---------------------------------------------------------------------------------------


def install_peer(system: System) -> bool:
    """Create bench/.peers/NAME with the peer from PyPI, once; False if it cannot."""
    venv = VENVS / system.name
    stamp = venv / ".bench-installed"
    wanted = f"{system.pip} redis hiredis"
    if stamp.exists() and stamp.read_text() == wanted:
        return True
    print(f"... installing {system.pip} into {venv}", file=sys.stderr, flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                        "--disable-pip-version-check", *wanted.split()], check=True)
    except subprocess.CalledProcessError as exc:
        print(f"compare: could not install {system.pip}: {exc}; skipped", file=sys.stderr)
        return False
    stamp.write_text(wanted)
    return True


def available(system: System) -> bool:
    if system.ruby:
        if shutil.which("ruby") is None or shutil.which("sidekiq") is None:
            print("compare: Ruby or the sidekiq gem not found; Sidekiq skipped", file=sys.stderr)
            return False
        check = subprocess.run(["ruby", "-e", 'require "sidekiq"'], capture_output=True,
                               check=False)
        return check.returncode == 0
    if system.pip:
        return install_peer(system)
    return True


def baselines(bench: Bench, count: int) -> tuple[float, float]:
    """(LPUSH /s, INCR /s): bare redis-py loops, one round trip each, in a fresh driver
    process like every system's enqueue (bench/peers/app_baseline.py; the same redis-py
    and hiredis as difo). Timed in this long-lived process instead, the LPUSH loop once read
    31,000/s against 13,000/s in a fresh one, minutes apart."""
    bench.r.delete("baseline", "baseline:n")
    rates = [count / bench.driver(BASELINE, mode, count) for mode in ("send", "incr")]
    bench.r.delete("baseline", "baseline:n")
    return rates[0], rates[1]


def baseline_latency(r: redis.Redis, count: int) -> tuple[float, float]:
    """(p50, p99) ms of a bare LPUSH -> BLPOP hand-over at IDLE_RATE: this machine's floor
    for any queue's latency (scheduling noise included)."""
    kwargs = r.connection_pool.connection_kwargs
    reader = redis.Redis(host=kwargs["host"], port=kwargs["port"])
    seen: list[float] = []

    def consume() -> None:
        while True:
            reply = reader.blpop(["baseline:latency"], timeout=5)
            if reply is None or reply[1] == b"stop":
                return
            seen.append((time.time() - float(reply[1])) * 1000)

    thread = threading.Thread(target=consume)
    thread.start()
    started = time.perf_counter()
    for index in range(count):
        delay = started + index / IDLE_RATE - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        r.lpush("baseline:latency", repr(time.time()))
    r.lpush("baseline:latency", "stop")
    thread.join()
    reader.close()
    seen.sort()
    return percentile(seen, 50), percentile(seen, 99)


# -- the run -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    options = parse(argv)
    runs = 1 if options.quick and options.runs is None else (options.runs or 3)
    binary = shutil.which("redis-server")
    if binary is None:
        print("compare: redis-server is not installed; the bench starts its own",
              file=sys.stderr)
        return 1
    wanted = options.only.split(",") if options.only else [s.name for s in SYSTEMS]
    systems = [s for s in SYSTEMS if s.name in wanted and available(s)]
    results: dict[str, Any] = {"python": platform.python_version(), "runs": runs,
                               "quick": options.quick, "cpus": os.cpu_count()}
    samples: dict[str, dict[str, list[float]]] = {s.name: {} for s in systems}
    base: dict[str, list[float]] = {}
    with throughput.private_redis(binary) as (url, r):
        results["redis_version"] = str(r.info("server")["redis_version"])
        bench = Bench(url, r, options.quick)
        for run in range(runs):
            for system in systems:
                step(f"run {run + 1}/{runs}: {system.name}")
                try:
                    measure(bench, system, samples[system.name], options.quick)
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    print(f"compare: {system.name}: {exc}", file=sys.stderr)
                lpush, incr = baselines(bench, 2_000 if options.quick else 5_000)
                base.setdefault("lpush_per_s", []).append(lpush)
                base.setdefault("incr_per_s", []).append(incr)
            p50, p99 = baseline_latency(r, 40 if options.quick else 100)
            base.setdefault("blpop_p50_ms", []).append(p50)
            base.setdefault("blpop_p99_ms", []).append(p99)
        if "difo" in samples and not options.no_scaling:
            step("difo scaling")
            results["scaling"] = scaling(bench, SYSTEMS[0], options.quick)
    results["baseline"] = {name: statistics.median(values) for name, values in base.items()}
    results["systems"] = {name: {metric: statistics.median(values)
                                 for metric, values in metrics.items()}
                          for name, metrics in samples.items()}
    results["samples"] = samples
    report(results, {s.name: s for s in systems})
    path = Path(options.json) if options.json else (
        BENCH / "results" / time.strftime("compare-%Y%m%d-%H%M%S.json"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {path}")
    return 0


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smaller fills, shorter runs, 1 run instead of 3")
    parser.add_argument("--runs", type=int, help="runs per system (median taken; default 3)")
    parser.add_argument("--only", help="comma-separated systems, e.g. difo,dramatiq")
    parser.add_argument("--no-scaling", action="store_true", help="skip difo's scaling table")
    parser.add_argument("--json", metavar="FILE",
                        help="where to write the JSON (default bench/results/compare-*.json)")
    return parser.parse_args(argv)


def measure(bench: Bench, system: System, into: dict[str, list[float]], quick: bool) -> None:
    def keep(name: str, value: float) -> None:
        into.setdefault(name, []).append(value)

    fill = system.fill[1] if quick else system.fill[0]
    budget = 4.0 if quick else 8.0
    keep("enqueue_per_s", bench.enqueue(system, 2_000 if quick else 5_000))
    one = bench.drain(system, system.one, budget, fill=fill)
    keep("drain_one_per_s", one["per_s"])
    keep("commands_per_job", one["commands_per_job"])
    two = bench.drain(system, system.two, budget, fill=fill)
    keep("drain_two_per_s", two["per_s"])
    count = int(LATENCY_RATE * (2 if quick else 4))
    timed = bench.latency(system, count, idle_count=(40 if quick else 100)
                          if system.name == "difo" else 0)
    for name, value in timed.items():
        keep(f"latency_{name}" if "ms" in name else name, value)
    # The empty unit: the same fill for difo and Sidekiq (sidekiqload's no-op unit), as a
    # drain's first fraction of a second runs slower (connections, difo's prefetch adapting).
    empty_fill = 20_000 if quick else 50_000
    if system.ruby:
        keep("drain_empty_per_s",
             bench.drain(system, system.one, budget, fill=empty_fill, unit="empty")["per_s"])
    if system.name == "difo":
        keep("bulk_per_s", (100_000 if not quick else 20_000) / bench.driver(
            system, "bulk", 100_000 if not quick else 20_000))
        empty = bench.drain(system, system.one, budget, fill=empty_fill, unit="empty")
        keep("drain_empty_per_s", empty["per_s"])
        keep("commands_per_job_empty", empty["commands_per_job"])
        # The same drain with difo's default per-unit info lines (to /dev/null, as the
        # comparison's workers log everywhere): their cost, reported apart.
        info = [[*DIFO[:-1], "INFO", "-w", "10"]]
        keep("drain_info_per_s", bench.drain(system, info, budget, fill=fill)["per_s"])
        keep("rss_early_mib", one["rss_early_mib"])
        keep("rss_after_mib", one["rss_after_mib"])


def scaling(bench: Bench, difo: System, quick: bool) -> list[dict[str, Any]]:
    fill = 20_000 if quick else 60_000
    budget = 4.0 if quick else 8.0
    base = [*DIFO]
    cases: list[tuple[str, list[list[str]], int]] = [
        (f"1 process, {w} threads", [[*base, "-w", str(w)]], 0) for w in (1, 4, 10, 25)
    ]
    cases.append(("2 processes, 10 threads each", [[*base, "-w", "10"]] * 2, 0))
    cases += [(f"1 process, 10 threads, args of {size:,} B", [[*base, "-w", "10"]], size)
              for size in (100, 10_000)]
    rows = []
    for name, commands, pad in cases:
        step(f"difo scaling: {name}")
        rates = [bench.drain(difo, commands, budget, fill=fill, pad=pad)["per_s"]
                 for _ in range(1 if quick else 3)]
        rows.append({"case": name, "drain_per_s": statistics.median(rates)})
    return rows


# -- output --------------------------------------------------------------------------------------


def report(results: dict[str, Any], systems: dict[str, System]) -> None:
    rows = results["systems"]
    base = results["baseline"]
    difo = rows.get("difo", {})
    print(f"\ndifo vs peers: Python {results['python']}, Redis {results['redis_version']}, "
          f"{results['cpus']} CPUs, medians of {results['runs']} run(s)")
    header = ("system", "enqueue/s", "x", "drain 1 proc/s", "x", "drain 2 cores/s", "x",
              "p50 ms", "p99 ms", "cmds/job")
    table = [header]
    for name, row in rows.items():
        def ratio(metric: str, row: dict[str, float] = row, name: str = name) -> str:
            if name == "difo" or not row.get(metric) or not difo.get(metric):
                return ""
            return f"{difo[metric] / row[metric]:.1f}"

        table.append((
            name, f"{row.get('enqueue_per_s', 0):,.0f}", ratio("enqueue_per_s"),
            f"{row.get('drain_one_per_s', 0):,.0f}", ratio("drain_one_per_s"),
            f"{row.get('drain_two_per_s', 0):,.0f}", ratio("drain_two_per_s"),
            f"{row.get('latency_p50_ms', float('nan')):.1f}",
            f"{row.get('latency_p99_ms', float('nan')):.1f}",
            f"{row.get('commands_per_job', 0):.2f}",
        ))
    table.append(("redis-py LPUSH loop", f"{base['lpush_per_s']:,.0f}", "", "", "", "", "",
                  "", "", ""))
    table.append(("redis-py INCR loop", "", "", f"{base['incr_per_s']:,.0f}", "", "", "", "",
                  "", "1.00"))
    table.append(("LPUSH -> BLPOP (20/s)", "", "", "", "", "", "",
                  f"{base['blpop_p50_ms']:.1f}", f"{base['blpop_p99_ms']:.1f}", ""))
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  " + "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                               for i, (cell, w) in enumerate(zip(row, widths, strict=True))))
    print("  x: difo's rate / that system's. cmds/job: worker-side Redis commands per job "
          "(INFO commandstats, inside scripts included, the unit's own INCR included).")
    print("  configurations (1 process | 2 cores):")
    for name, system in systems.items():
        print(f"    {name:<9} {system.label}")
    if difo:
        print(f"  difo, empty unit: drain 1 process {difo.get('drain_empty_per_s', 0):,.0f}/s, "
              f"{difo.get('commands_per_job_empty', 0):.3f} commands/unit; perform_bulk "
              f"{difo.get('bulk_per_s', 0):,.0f} units/s")
        print(f"  difo with per-unit info lines (--log-level INFO): drain 1 process "
              f"{difo.get('drain_info_per_s', 0):,.0f}/s, against "
              f"{difo.get('drain_one_per_s', 0):,.0f}/s at WARNING")
    if rows.get("sidekiq", {}).get("drain_empty_per_s"):
        print(f"  sidekiq, empty unit (sidekiqload's): drain 1 process "
              f"{rows['sidekiq']['drain_empty_per_s']:,.0f}/s")
    if results.get("scaling"):
        print("\ndifo drain scaling (INCR unit):")
        for row in results["scaling"]:
            print(f"  {row['case']:<40} {row['drain_per_s']:>10,.0f} /s")
    if difo:
        targets(results)


def targets(results: dict[str, Any]) -> None:
    rows = results["systems"]
    difo = rows["difo"]
    base = results["baseline"]
    peers = [row.get("drain_one_per_s", 0) for name, row in rows.items()
             if name not in ("difo", "sidekiq")]
    best = max(peers, default=0.0)
    sidekiq_empty = rows.get("sidekiq", {}).get("drain_empty_per_s", 0.0)
    scaling = {row["case"]: row["drain_per_s"] for row in results.get("scaling", [])}
    one = scaling.get("1 process, 10 threads", difo["drain_one_per_s"])
    two = scaling.get("2 processes, 10 threads each", difo["drain_two_per_s"])
    checks = [
        ("drain 1 process >= 3x the best Python peer",
         difo["drain_one_per_s"] >= 3 * best if best else None,
         f"{difo['drain_one_per_s'] / best:.2f}x" if best else "no peer measured"),
        ("empty unit: drain 1 process >= 5x Sidekiq's", (
            difo.get("drain_empty_per_s", 0) >= 5 * sidekiq_empty if sidekiq_empty else None),
         f"{difo.get('drain_empty_per_s', 0) / sidekiq_empty:.2f}x ("
         f"{difo.get('drain_empty_per_s', 0):,.0f} vs {sidekiq_empty:,.0f}/s)"
         if sidekiq_empty else "Sidekiq not measured"),
        ("drain 1 process >= 0.6x the bare INCR loop",
         difo["drain_one_per_s"] >= 0.6 * base["incr_per_s"],
         f"{difo['drain_one_per_s'] / base['incr_per_s']:.2f}x"),
        ("enqueue one by one >= 0.8x the bare LPUSH loop",
         difo["enqueue_per_s"] >= 0.8 * base["lpush_per_s"],
         f"{difo['enqueue_per_s'] / base['lpush_per_s']:.2f}x"),
        ("perform_bulk >= 300,000 units/s", difo.get("bulk_per_s", 0) >= 300_000,
         f"{difo.get('bulk_per_s', 0):,.0f}/s"),
        ("idle latency p50 <= 1 ms", difo.get("latency_idle_p50_ms", 99) <= 1.0,
         f"{difo.get('latency_idle_p50_ms', float('nan')):.2f} ms (bare LPUSH -> BLPOP: "
         f"{base['blpop_p50_ms']:.2f} ms)"),
        ("idle latency p99 <= 2 ms", difo.get("latency_idle_p99_ms", 99) <= 2.0,
         f"{difo.get('latency_idle_p99_ms', float('nan')):.2f} ms (bare LPUSH -> BLPOP: "
         f"{base['blpop_p99_ms']:.2f} ms)"),
        ("<= 1.1 Redis commands per unit, worker side", difo["commands_per_job"] <= 1.1,
         f"{difo['commands_per_job']:.3f} (the unit's INCR included; "
         f"{difo.get('commands_per_job_empty', 0):.3f} for the empty unit)"),
        ("idle server < 40 MB RSS", difo.get("rss_idle_mib", 99) * 1.048576 < 40,
         f"{difo.get('rss_idle_mib', 0) * 1.048576:.1f} MB"),
        ("RSS flat across a drain (+2 MiB at most from 10 % in)",
         difo.get("rss_after_mib", 99) - difo.get("rss_early_mib", 0) <= 2.0,
         f"{difo.get('rss_early_mib', 0):.1f} -> {difo.get('rss_after_mib', 0):.1f} MiB"),
        ("two processes >= 1.45x one", two >= 1.45 * one, f"{two / one:.2f}x"),
    ]
    print("\ntargets:")
    for name, passed, value in checks:
        verdict = "SKIP" if passed is None else ("PASS" if passed else "FAIL")
        print(f"  {verdict}  {name:<50} {value}")


def step(name: str) -> None:
    print(f"... {name}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
