"""difo.api and the CLI on an SQLite file, unchanged: queues, sets, find, stats, the process
registry, busy workers, signals, pause, metrics; `difo ... --url sqlite:///...`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import difo
from difo import api, unit
from difo import client as client_module
from difo.api import DeadSet, Metrics, ProcessSet, Queue, RetrySet, ScheduledSet, Stats, Workers
from difo.backends.sqlite import SQLiteBackend
from difo.cli import main
from difo.client import Client
from tests import sqlite_functions as functions
from tests.conftest import ROOT, ServerProcess, wait_for
from tests.sqlite import open_sqlite, server_env, url_for

Start = Callable[..., ServerProcess]


@pytest.fixture
def url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    database = url_for(tmp_path)
    client = Client(database)
    monkeypatch.setattr(client_module, "_default", client)
    yield database
    client.close()


@pytest.fixture
def backend(url: str) -> SQLiteBackend:
    return open_sqlite(url)


def run(url: str, *args: str, input: str | None = None) -> Result:
    result = CliRunner().invoke(main, [*args, "--url", url], input=input)
    return result


def failed_payload(marker: Any, **fields: Any) -> bytes:
    built = unit.build("tests.sqlite_functions:record", ["-", marker], "default")
    built.update({"error_class": "ValueError", "error_message": f"bad {marker}",
                  "failed_at": unit.now(), "retry_count": 0, **fields})
    return unit.encode(built)


# -- queues ------------------------------------------------------------------------------------


def test_queue_reads_and_manages_units(url: str, backend: SQLiteBackend) -> None:
    jids = [difo.perform_on("api-q", functions.record, "-", i) for i in range(5)]
    difo.perform_on("other", functions.record, "-", "x")
    time.sleep(0.05)
    queue = Queue("api-q", backend=url)
    assert queue.size == len(queue) == 5
    assert queue.latency() >= 0.05
    assert [q.name for q in Queue.all(backend=url)] == ["api-q", "other"]
    assert [entry.jid for entry in queue] == jids[::-1]  # newest first, as Sidekiq lists
    assert [entry.jid for entry in queue.page(2, 2)] == [jids[2], jids[1]]
    found = queue.find(jids[3])
    assert found is not None and found.args == ["-", 3] and found.queue == "api-q"
    assert queue.delete(jids[3]) and not queue.delete(jids[3])
    assert queue.size == 4
    queue.pause()
    assert queue.paused and Stats(backend=url).paused_queues == {"api-q"}
    queue.unpause()
    assert not queue.paused
    assert queue.clear() == 4
    assert [q.name for q in Queue.all(backend=url)] == ["other"]


def test_sorted_sets_move_units_between_places(url: str, backend: SQLiteBackend) -> None:
    later = difo.perform_in(3600, functions.record, "-", "later")
    scheduled = ScheduledSet(backend=url)
    assert scheduled.size == 1
    entry = scheduled.find(later)
    assert entry is not None and entry.at is not None and entry.at > time.time() + 3000
    assert api.find(later, backend=url) is not None
    assert scheduled.retry(later)  # "run now": onto its queue
    assert scheduled.size == 0 and Queue("default", backend=url).size == 1
    found = api.find(later, backend=url)
    assert found is not None and found.queue == "default"

    backend.set_add("retry", time.time() + 60, failed_payload("r1"))
    backend.set_add("retry", time.time() + 90, failed_payload("r2"))
    retries = RetrySet(backend=url)
    first, second = list(retries)
    assert (first.error_class, second.error_message) == ("ValueError", "bad r2")
    assert retries.kill(first.jid)  # to the dead set
    dead = DeadSet(backend=url)
    assert [e.jid for e in dead] == [first.jid]
    assert retries.retry_all() == 1 and retries.size == 0
    assert Queue("default", backend=url).size == 2
    assert dead.delete(first.jid) and dead.size == 0
    backend.set_add("dead", time.time(), failed_payload("d"))
    assert dead.clear() == 1
    assert api.find("f" * 24, backend=url) is None


def test_stats_count_sizes_on_sqlite(url: str, backend: SQLiteBackend) -> None:
    difo.perform_bulk(functions.record, [["-", i] for i in range(3)])
    difo.perform_in(600, functions.record, "-", "s")
    backend.set_add("retry", time.time() + 60, failed_payload("r"))
    backend.set_add("dead", time.time(), failed_payload("d"))
    stats = Stats(backend=url)
    assert (stats.enqueued, stats.scheduled_size, stats.retry_size, stats.dead_size) == \
        (3, 1, 1, 1)
    assert stats.queues == {"default": 3}
    assert stats.processes_size == 0


# -- the CLI -----------------------------------------------------------------------------------


def test_cli_lists_and_manages_queues_and_sets(url: str, backend: SQLiteBackend) -> None:
    jid = difo.perform_on("cli-q", functions.record, "-", 1)
    backend.set_add("dead", time.time(), failed_payload("dead-one"))
    [dead_jid] = [e.jid for e in DeadSet(backend=url)]
    # As a user runs it: a real process, the URL as a flag.
    listed = subprocess.run(
        [sys.executable, "-m", "difo.cli", "queues", "--url", url, "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=30, check=True)
    assert [q["queue"] for q in json.loads(listed.stdout)] == ["cli-q"]
    dead = subprocess.run([sys.executable, "-m", "difo.cli", "dead", "--url", url],
                          cwd=ROOT, capture_output=True, text=True, timeout=30, check=True)
    assert dead_jid in dead.stdout and "ValueError: bad dead-one" in dead.stdout

    units = json.loads(run(url, "queues", "cli-q", "--json").stdout)
    assert [item["jid"] for item in units] == [jid]
    assert run(url, "dead", "retry", dead_jid).exit_code == 0
    assert Queue("default", backend=url).size == 1
    assert run(url, "queues", "cli-q", "--delete", jid).exit_code == 0
    assert Queue("cli-q", backend=url).size == 0
    enqueued = run(url, "enqueue", "tests.sqlite_functions:record", '["-", 2]', "-q", "cli-q")
    assert enqueued.exit_code == 0, enqueued.output
    found = api.find(enqueued.stdout.strip(), backend=url)
    assert found is not None and found.args == ["-", 2]
    scheduled = run(url, "enqueue", "tests.sqlite_functions:record", "[]", "--in", "60")
    assert scheduled.exit_code == 0 and ScheduledSet(backend=url).size == 1
    stats = json.loads(run(url, "stats", "--json").stdout)
    assert (stats["enqueued"], stats["scheduled_size"]) == (2, 1)


def test_a_url_without_a_file_is_refused() -> None:
    result = run("sqlite:///", "queues")
    assert result.exit_code == 2
    assert "names no file" in result.output


# -- processes, workers, signals, metrics --------------------------------------------------------


def test_processes_workers_and_signals_on_sqlite(
    url: str, backend: SQLiteBackend, tmp_path: Path, start_server: Start
) -> None:
    out = str(tmp_path / "events.jsonl")
    server = start_server("--import", "tests.sqlite_functions", "-w", "2", "--tag", "lite",
                          env=server_env(url, DIFO_HEARTBEAT="0.5", DIFO_DEAD_AFTER="30"))
    wait_for(lambda: ProcessSet(backend=url).size == 1, timeout=15)
    [process] = list(ProcessSet(backend=url))
    assert (process.pid, process.tag, process.concurrency) == (server.process.pid, "lite", 2)
    listed = json.loads(run(url, "processes", "--json").stdout)
    assert [item["identity"] for item in listed] == [process.identity]

    jid = difo.perform(functions.sleep_then_record, out, 3, "long")
    difo.perform_bulk(functions.record, [[out, i] for i in range(5)])
    wait_for(lambda: len(Workers(backend=url)) == 1, timeout=10)
    [work] = list(Workers(backend=url))
    assert work.jid == jid and work.queue == "default"
    busy = json.loads(run(url, "workers", "--json").stdout)
    assert [item["jid"] for item in busy] == [jid]

    assert run(url, "quiet", "--all").exit_code == 0
    wait_for(lambda: ProcessSet(backend=url).get(process.identity).is_quiet,  # type: ignore[union-attr]
             timeout=10)
    assert run(url, "stop", process.identity).exit_code == 0
    assert server.process.wait(20) == 0  # stopped gracefully once the long unit finished
    assert functions.markers(out)[-1] == "long"
    assert ProcessSet(backend=url).size == 0
    stats = Stats(backend=url)
    assert stats.processed == 6 and stats.failed == 0
    [today] = stats.history(1)
    assert today.processed == 6
    totals = {item.function: item for item in Metrics(backend=url).totals()}
    assert totals["tests.sqlite_functions:record"].count == 5
    assert totals["tests.sqlite_functions:sleep_then_record"].count == 1
    recent = {item.function for item in Metrics(backend=url).functions(5)}
    assert "tests.sqlite_functions:record" in recent


def test_a_paused_queue_is_left_alone_until_unpaused(
    url: str, backend: SQLiteBackend, tmp_path: Path, start_server: Start
) -> None:
    out = str(tmp_path / "events.jsonl")
    assert run(url, "pause", "held").exit_code == 0
    difo.perform_on("held", functions.record, out, "held")
    difo.perform(functions.record, out, "free")
    server = start_server("--import", "tests.sqlite_functions", "-w", "1", "-q", "held default",
                          env=server_env(url))
    wait_for(lambda: functions.markers(out) == ["free"], timeout=15)
    time.sleep(0.3)
    assert Queue("held", backend=url).size == 1
    assert run(url, "unpause", "held").exit_code == 0
    wait_for(lambda: functions.markers(out) == ["free", "held"], timeout=5)
    assert server.stop() == 0
