"""Profile a difo server's drain with py-spy: where the server's CPU goes per unit.

    python bench/profile_drain.py [--n 200000] [--out bench/results/profile]

Fills a private Redis with N no-op units, starts `difo server` under `py-spy record`
(raw, collapsed stacks, GIL-holding samples only) and stops it once every unit is acked.
Prints the functions with the most samples, by own time and by inclusive time; writes
OUT.txt (collapsed stacks, for flamegraph.pl or speedscope) beside them.
Needs py-spy on PATH or in the venv (`pip install py-spy`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import difo
from difo.backends.redis import keys

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import bench_units  # noqa: E402
import throughput  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--workers", type=int, default=throughput.WORKERS)
    parser.add_argument("--out", default=str(BENCH / "results" / "profile"))
    parser.add_argument("--top", type=int, default=25)
    options = parser.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    binary = shutil.which("redis-server")
    if binary is None or not Path(spy).exists():
        print("profile: needs redis-server and py-spy", file=sys.stderr)
        return 1
    out = Path(options.out + ".txt")
    out.parent.mkdir(parents=True, exist_ok=True)
    with throughput.private_redis(binary) as (url, r):
        difo.configure(url)
        difo.perform_bulk(bench_units.noop, [[i] for i in range(options.n)])
        difo.client.default().close()
        environment = dict(os.environ, REDIS_URL=url, PYTHONPATH=str(BENCH))
        environment.pop("DIFO_URL", None)
        command = [spy, "record", "--format", "raw", "--gil", "--rate", "250",
                   "--output", str(out), "--", sys.executable, "-m", "difo.cli", "server",
                   "--import", "bench_units", "--log-level", "WARNING",
                   "-w", str(options.workers), "-q", bench_units.QUEUE]
        process = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        started = time.perf_counter()
        queue = keys.queue(bench_units.QUEUE)
        try:
            while r.llen(queue) or not r.scard(keys.PROCESSES) or any(
                r.hlen(keys.in_flight(m.decode())) for m in r.smembers(keys.PROCESSES)
            ):
                if process.poll() is not None:
                    raise RuntimeError("py-spy or the server exited early")
                time.sleep(0.05)
            print(f"drained {options.n:,} units in {time.perf_counter() - started:.1f} s "
                  "(startup included; py-spy slows the server)", file=sys.stderr)
        finally:
            # SIGINT reaches py-spy, which stops the server and writes the profile.
            process.send_signal(2)
            process.wait(60)
    report(out, options.top)
    return 0


def report(path: Path, top: int) -> None:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = [frame.rsplit(" (", 1)[0] + " " + frame.rsplit("/", 1)[-1].split(":")[0]
                  for frame in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    print(f"{total} GIL samples")
    for title, counter in (("own", own), ("inclusive", inclusive)):
        print(f"\nby {title} time:")
        for frame, count in counter.most_common(top):
            print(f"  {count / total:6.1%}  {frame}")


if __name__ == "__main__":
    sys.exit(main())
