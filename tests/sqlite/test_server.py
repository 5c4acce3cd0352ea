"""Real `difo server` processes on one SQLite file: every unit run exactly once by two
servers, a SIGKILLed server's units recovered at once through its lock file, a long unit
never run twice while its server lives, graceful shutdown, junk to dead, idle latency.

Units report by appending lines to a file (tests/sqlite_functions.py). Time bounds are loose:
they catch a hang or a lost unit, not a slow machine.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import difo
from difo import client as client_module
from difo import unit
from difo.api import DeadSet
from difo.backends.sqlite import SQLiteBackend
from difo.client import Client
from tests import sqlite_functions as functions
from tests.conftest import ServerProcess, wait_for
from tests.sqlite import open_sqlite, server_env, url_for

Start = Callable[..., ServerProcess]
FAST = {"DIFO_HEARTBEAT": "1", "DIFO_DEAD_AFTER": "30", "DIFO_POLL_INTERVAL": "0.1"}


@pytest.fixture
def url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh database; the default client (difo.perform) writes to it."""
    database = url_for(tmp_path)
    client = Client(database)
    monkeypatch.setattr(client_module, "_default", client)
    yield database
    client.close()


@pytest.fixture
def backend(url: str) -> SQLiteBackend:
    return open_sqlite(url)


@pytest.fixture
def out(tmp_path: Path) -> str:
    return str(tmp_path / "events.jsonl")


def serve(start_server: Start, url: str, *args: str, **env: str) -> ServerProcess:
    return start_server("--import", "tests.sqlite_functions", *args,
                        env=server_env(url, **{**FAST, **env}))


def live(backend: SQLiteBackend, count: int, timeout: float = 15) -> list[str]:
    """Wait until `count` servers have beaten; return their identities."""
    wait_for(lambda: len(backend.processes()) >= count, timeout=timeout)
    return [record.identity for record in backend.processes()]


def in_flight_anywhere(backend: SQLiteBackend) -> int:
    rows = backend._read("SELECT COUNT(*) FROM units WHERE place IN ('inflight', 'staging')")
    return int(rows[0][0])


# -- exactly once, at least once -----------------------------------------------------------------


def test_two_servers_on_one_file_run_every_unit_exactly_once(
    url: str, backend: SQLiteBackend, out: str, start_server: Start
) -> None:
    servers = [serve(start_server, url, "-w", "4") for _ in range(2)]
    live(backend, 2)
    total = 400
    difo.perform_bulk(functions.sleep_then_record, [[out, 0.005, i] for i in range(total)])
    wait_for(lambda: len(functions.markers(out)) >= total, timeout=30)
    time.sleep(0.3)  # a duplicate would show up now
    ran = functions.events(out, "ran")
    assert sorted(item["marker"] for item in ran) == list(range(total))
    assert len({item["pid"] for item in ran}) == 2  # both servers took part
    for server in servers:
        assert server.stop() == 0
    assert in_flight_anywhere(backend) == 0
    assert backend.processes() == []  # both left the registry
    assert list(backend.lock_dir.iterdir()) == []  # and removed their lock files
    assert backend.stats().processed == total


def test_a_killed_server_units_are_recovered_at_once_by_a_live_one(
    url: str, backend: SQLiteBackend, out: str, start_server: Start
) -> None:
    total = 8
    difo.perform_bulk(functions.sleep_then_record, [[out, 1.0, i] for i in range(total)])
    first = serve(start_server, url, "-w", "4")
    wait_for(lambda: len(functions.events(out, "started")) >= 4, timeout=15)
    [victim] = live(backend, 1)
    second = serve(start_server, url, "-w", "4")
    live(backend, 2)
    assert len(backend.in_flight(victim)) == total  # 4 running, 4 prefetched
    first.kill()  # SIGKILL: no shutdown code runs
    killed_at = time.time()
    wait_for(lambda: set(functions.markers(out)) == set(range(total)), timeout=20)
    rerun = [item for item in functions.events(out, "started")
             if item["pid"] == second.process.pid]
    assert rerun
    # DIFO_DEAD_AFTER is 30 s: the free lock file told the live server within a beat or two.
    assert min(item["at"] for item in rerun) - killed_at < 10
    assert backend.in_flight(victim) == []
    assert not (backend.lock_dir / f"{victim}.lock").exists()
    assert victim not in [record.identity for record in backend.processes()]
    assert DeadSet(backend=backend).size == 0  # orphaned once: back on its queue
    assert second.stop() == 0


def test_a_long_unit_is_never_run_twice_while_its_server_lives(
    url: str, backend: SQLiteBackend, out: str, start_server: Start
) -> None:
    env = {"DIFO_DEAD_AFTER": "2"}
    runner = serve(start_server, url, "-w", "1", **env)
    live(backend, 1)
    difo.perform(functions.sleep_then_record, out, 5, "long")
    wait_for(lambda: functions.events(out, "started"), timeout=10)
    serve(start_server, url, "-w", "1", **env)
    live(backend, 2)
    # Freeze the runner longer than DIFO_DEAD_AFTER: no beat, yet its lock is held.
    runner.signal(signal.SIGSTOP)
    time.sleep(3)
    assert functions.events(out, "started")[1:] == []  # the other server left it alone
    runner.signal(signal.SIGCONT)
    wait_for(lambda: functions.markers(out), timeout=15)
    time.sleep(0.5)
    assert [item["marker"] for item in functions.events(out, "started")] == ["long"]
    assert functions.markers(out) == ["long"]
    assert runner.stop() == 0


def test_graceful_shutdown_puts_unfinished_units_back_unchanged(
    url: str, backend: SQLiteBackend, out: str, start_server: Start
) -> None:
    difo.perform_bulk(functions.sleep_then_record, [[out, 30, f"long-{i}"] for i in range(2)])
    difo.perform_bulk(functions.record, [[out, f"waiting-{i}"] for i in range(3)])
    pushed = list(reversed(backend.queue_range("default", 0, -1)))  # in claim order
    server = serve(start_server, url, "-w", "2", "--prefetch", "2", "-t", "0.5")
    wait_for(lambda: len(functions.events(out, "started")) == 2, timeout=15)
    [identity] = live(backend, 1)
    started = time.monotonic()
    assert server.stop() == 0
    assert time.monotonic() - started < 10
    assert functions.markers(out) == []  # nothing finished, nothing lost
    # Back at the end popped next, byte for byte, in their old order.
    assert list(reversed(backend.queue_range("default", 0, -1))) == pushed
    assert backend.in_flight(identity) == []
    assert in_flight_anywhere(backend) == 0
    assert backend.processes() == []


# -- retries, schedule, dead, periodic --------------------------------------------------------


def test_retries_scheduled_and_dead_units(
    url: str, backend: SQLiteBackend, out: str, start_server: Start
) -> None:
    flaky = functions.flaky.perform(out, "flaky")
    functions.fail_once.perform(out, "once")
    scheduled = difo.perform_in(1.0, functions.record, out, "later")
    difo.perform(functions.enqueue_more, out, 2)  # a unit enqueueing through DIFO_URL
    assert backend.set_size("schedule") == 1
    enqueued_at = time.time()
    server = serve(start_server, url, "-w", "2")
    wait_for(lambda: DeadSet(backend=backend).size == 1, timeout=20)
    wait_for(lambda: {"later", "once", "child-0", "child-1"} <= set(functions.markers(out)),
             timeout=20)
    ran_at = {item["marker"]: item["at"] for item in functions.events(out, "ran")}
    assert ran_at["later"] - enqueued_at >= 0.9  # not before its time
    tries = Counter(item["marker"] for item in functions.events(out, "try"))
    assert tries == {"flaky": 3, "once": 2}  # flaky: the run and 2 retries
    [dead] = DeadSet(backend=backend)
    assert (dead.jid, dead.error_class, dead.retry_count) == (flaky, "RuntimeError", 2)
    assert backend.set_size("retry") == 0
    assert backend.set_size("schedule") == 0
    assert difo.api.find(scheduled, backend=backend) is None  # ran: in no place any more
    assert server.stop() == 0
    stats = backend.stats()
    assert stats.processed == 9  # 3 flaky, 2 once, later, the parent and its 2 children
    assert stats.failed == 4  # 3 flaky, 1 once


def test_periodic_units_fire_once_per_tick_across_servers(
    url: str, backend: SQLiteBackend, out: str, start_server: Start
) -> None:
    servers = [serve(start_server, url, "-w", "1", DIFO_TEST_PERIODIC_OUT=out)
               for _ in range(2)]
    live(backend, 2)
    wait_for(lambda: len(functions.markers(out)) >= 3, timeout=15)
    for server in servers:
        server.stop()
    ticks = [round(item["at"]) for item in functions.events(out, "ran")]
    fired = backend.periodic_ticks()
    assert list(fired) == ["sqlite-every-second"]
    # Two servers, one unit per second: about as many units as seconds, never two a tick.
    span = max(ticks) - min(ticks) + 1
    assert len(ticks) <= span + 1


def test_a_non_json_row_in_a_queue_goes_to_dead(
    url: str, backend: SQLiteBackend, out: str, start_server: Start
) -> None:
    backend.push("default", [b"{}"])  # registers the queue; JSON without class or args
    raw = sqlite3.connect(backend.path, isolation_level=None, timeout=10)
    raw.execute("INSERT INTO units (place, queue, position, payload) VALUES "
                "('queue', 'default', -5, ?)", (b"\xffnot json at all",))
    raw.close()
    difo.perform(functions.record, out, "after")
    server = serve(start_server, url, "-w", "1")
    wait_for(lambda: functions.markers(out) == ["after"], timeout=15)
    wait_for(lambda: DeadSet(backend=backend).size == 2, timeout=10)
    texts = sorted(json.loads(entry.raw)["difo_raw"] for entry in DeadSet(backend=backend))
    assert texts == ["\\xffnot json at all", "{}"]
    for entry in DeadSet(backend=backend):
        assert entry.error_class == "difo.errors.PayloadError"
        assert entry.error_message and "default" in entry.error_message
        unit.decode(entry.raw)  # the wrapper is a valid unit itself
    assert server.stop() == 0


# -- latency -----------------------------------------------------------------------------------


def test_a_unit_pushed_to_an_idle_server_starts_quickly(
    url: str, backend: SQLiteBackend, out: str, start_server: Start
) -> None:
    server = serve(start_server, url, "-w", "2")
    live(backend, 1)
    latencies = []
    for i in range(8):
        time.sleep(0.4)  # idle long enough for the poll to back off to its 50 ms cap
        pushed = time.time()
        difo.perform(functions.record, out, i)
        wait_for(lambda i=i: len(functions.markers(out)) > i, timeout=5, interval=0.002)
        latencies.append(functions.events(out, "ran")[i]["at"] - pushed)
    # The design's target is ~50 ms; the bound is loose.
    assert statistics.median(latencies) < 1.0, latencies
    assert server.stop() == 0
