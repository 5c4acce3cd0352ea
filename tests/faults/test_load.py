"""Load without crashes: a graceful stop with long units running, and a big backlog drained
by one server in bounded memory."""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Iterator
from typing import cast

import pytest
import redis

import difo
from difo import unit
from difo.backends.redis import keys
from difo.client import Client
from tests import fault_functions
from tests.conftest import wait_for
from tests.faults.support import (
    FAST,
    FAULTS,
    Report,
    Start,
    completed,
    in_flight_records,
    registered,
    rss_mb,
    runs,
    sized,
)

pytestmark = pytest.mark.slow


def test_sigterm_under_load_finishes_or_puts_back_every_unit(
    client: Client, r: redis.Redis, start_server: Start
) -> None:
    """6 workers on two queues: 2 long units (4 s) and 2 medium ones (1 s) run beside a
    stream of short ones when SIGTERM comes with --timeout 2; a new server finishes the rest."""
    tag, shorts = "stop", sized(600, 6_000)
    rng = random.Random()
    long_ms, medium_ms = 4_000, 1_000
    difo.perform_bulk(fault_functions.long_work, [[tag, 0, long_ms], [tag, 1, long_ms],
                                                  [tag, 2, medium_ms], [tag, 3, medium_ms]],
                      queue="fault-a")
    difo.perform_bulk(fault_functions.work,
                      ([tag, 4 + i, rng.randint(0, 20)] for i in range(shorts // 2)),
                      queue="fault-a")
    difo.perform_bulk(fault_functions.work,
                      ([tag, 4 + i, rng.randint(0, 20)] for i in range(shorts // 2, shorts)),
                      queue="fault-b")
    total = 4 + shorts
    report = Report("graceful-stop", enqueued=total)
    args = ("-w", "6", "--timeout", "2", "-q", "fault-a fault-b", *FAULTS)
    server = start_server(*args, env=FAST)
    registered(r, 1)
    started = fault_functions.started_key(tag)
    wait_for(lambda: r.scard(started) == 4, timeout=15)
    time.sleep(0.3)
    signalled = time.monotonic()
    server.signal(signal.SIGTERM)
    assert server.process.wait(15) == 0
    stop_s = time.monotonic() - signalled
    assert stop_s < 2 + 3  # the grace period and a little
    done_at_stop = completed(r, tag)
    assert r.getbit(fault_functions.done_key(tag), 2) and r.getbit(
        fault_functions.done_key(tag), 3), "the 1 s units finish within --timeout 2"
    assert not r.getbit(fault_functions.done_key(tag), 0)
    assert in_flight_records(r) == []
    # The long units are back where the next pop takes them, the rest behind them.
    popped_next = [unit_marker(raw) for raw in
                   reversed(cast(list[bytes], r.lrange(keys.queue("fault-a"), -2, -1)))]
    assert sorted(popped_next) == [0, 1]
    waiting = sum(int(r.llen(keys.queue(name))) for name in ("fault-a", "fault-b"))
    assert done_at_stop + waiting == total  # nothing lost across the stop

    restarted = time.monotonic()
    again = start_server(*args, env=FAST)
    wait_for(lambda: completed(r, tag) == total, timeout=60)
    report.recover_s = time.monotonic() - restarted
    wait_for(lambda: in_flight_records(r) == [], timeout=10)
    assert again.stop() == 0
    report.completed = completed(r, tag)
    report.duplicates = runs(r, tag) - completed(r, tag)
    report.extra.update(done_at_stop=done_at_stop, put_back=waiting, stop=f"{stop_s:.1f}s")
    report.show()
    assert report.lost == 0
    assert report.duplicates == 0
    assert in_flight_records(r) == []


def unit_marker(raw: bytes) -> int:
    return int(unit.decode(raw).args[1])  # type: ignore[arg-type]


def test_a_big_backlog_drains_in_bounded_memory(
    client: Client, r: redis.Redis, start_server: Start
) -> None:
    """N units pushed from a generator, drained by one server; its RSS stays bounded."""
    tag, total = "backlog", sized(100_000, 1_000_000)
    report = Report("backlog", enqueued=total)
    memory_before = int(r.info("memory")["used_memory"])

    def units() -> Iterator[list[object]]:
        for marker in range(total):
            yield [tag, marker]

    pushed = time.monotonic()
    difo.perform_bulk(fault_functions.tally, units())
    push_s = time.monotonic() - pushed
    memory_full = int(r.info("memory")["used_memory"])
    drained = time.monotonic()
    server = start_server("-w", "10", *FAULTS, env=FAST)
    registered(r, 1)
    pid = server.process.pid
    time.sleep(1.0)  # imports done, first claims made
    rss = [rss_mb(pid)]
    wait_for(lambda: completed(r, tag) >= total // 2, timeout=30 + total / 500)
    rss.append(rss_mb(pid))
    wait_for(lambda: completed(r, tag) == total, timeout=30 + total / 500)
    drain_s = time.monotonic() - drained
    wait_for(lambda: in_flight_records(r) == [], timeout=10)
    rss.append(rss_mb(pid))
    assert server.stop() == 0
    memory_after = int(r.info("memory")["used_memory"])

    report.completed = completed(r, tag)
    report.duplicates = int(r.get(fault_functions.runs_key(tag)) or 0) - report.completed
    report.extra.update(
        push=f"{total / push_s:.0f}/s", drain=f"{total / drain_s:.0f}/s",
        redis_mb=f"{memory_before / 2**20:.1f}->{memory_full / 2**20:.1f}->"
                 f"{memory_after / 2**20:.1f}",
        rss_mb="/".join(f"{value:.1f}" for value in rss))
    report.show()
    assert report.lost == 0
    assert report.duplicates == 0
    assert rss[-1] <= rss[0] + 30, f"server RSS grew from {rss[0]:.1f} to {rss[-1]:.1f} MB"
    assert r.llen(keys.queue("default")) == 0
