"""The SQLite backend on its own: URLs, the file and its schema, claim order, claims from
several processes, the wake-up, lock-file liveness and connections after a fork.

The Backend contract itself is the conformance suite's; these check what only SQLite has.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from difo import unit
from difo.backends import ProcessBeat, open_backend
from difo.backends import sqlite as sqlite_backend
from difo.backends.sqlite import SQLiteBackend
from difo.config import QueueSpec
from difo.errors import BackendUnavailable
from difo.fetch import Fetcher
from tests.sqlite import open_sqlite, url_for


def payload(marker: Any, queue: str = "default") -> bytes:
    return unit.encode(unit.build("tests.sqlite_functions:record", ["-", marker], queue))


def marker_of(raw: bytes) -> Any:
    return unit.decode(raw).args[1]


def beat(backend: SQLiteBackend, identity: str) -> None:
    backend.beat(ProcessBeat(identity=identity, info=b"{}", busy=0, quiet=False, rss_kb=1,
                             concurrency=1))


@pytest.fixture
def backend(tmp_path: Path) -> SQLiteBackend:
    return open_sqlite(url_for(tmp_path))


# -- the file --------------------------------------------------------------------------------


def test_relative_url_is_relative_to_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    opened = open_backend("sqlite:///rel/difo.db")
    assert isinstance(opened, SQLiteBackend)
    assert opened.path == tmp_path / "rel" / "difo.db"
    assert opened.url == f"sqlite:///{tmp_path}/rel/difo.db"  # logged: the absolute path
    assert (tmp_path / "rel" / "difo.db").is_file()
    assert (tmp_path / "rel" / "difo.db.locks").is_dir()  # lock files beside the database


def test_absolute_url_has_four_slashes(tmp_path: Path) -> None:
    opened = open_backend(f"sqlite:///{tmp_path}/abs.db")  # sqlite://// + /tmp/...
    assert isinstance(opened, SQLiteBackend)
    assert opened.path == tmp_path / "abs.db"
    assert opened.url.startswith("sqlite:////")


def test_the_file_is_in_wal_mode_with_its_schema_version(backend: SQLiteBackend) -> None:
    raw = sqlite3.connect(backend.path)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    version = raw.execute("SELECT value FROM difo_meta WHERE key = 'schema_version'").fetchone()
    assert int(version[0]) == sqlite_backend.SCHEMA_VERSION
    raw.close()


def test_a_forward_migration_runs_once_on_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = url_for(tmp_path)
    open_sqlite(url).close()
    current = sqlite_backend.SCHEMA_VERSION
    monkeypatch.setattr(sqlite_backend, "SCHEMA_VERSION", current + 1)
    # No IF NOT EXISTS: running it twice would fail the second open.
    monkeypatch.setitem(sqlite_backend.MIGRATIONS, current + 1, [
        "CREATE TABLE migrated (note TEXT)",
        "INSERT INTO migrated VALUES ('applied')",
    ])
    migrated = open_sqlite(url)
    assert migrated._read("SELECT note FROM migrated") == [("applied",)]
    assert migrated._read("SELECT value FROM difo_meta WHERE key = 'schema_version'") == [
        (str(current + 1),)]
    open_sqlite(url)  # already at the new version: nothing runs again
    assert migrated._read("SELECT COUNT(*) FROM migrated") == [(1,)]


def test_a_version_one_file_gains_the_stopping_column(tmp_path: Path) -> None:
    """The real migration 2, on a file shaped as version 1 wrote it."""
    url = url_for(tmp_path)
    open_sqlite(url).close()
    raw = sqlite3.connect(tmp_path / "difo.db", isolation_level=None)
    raw.execute("ALTER TABLE processes DROP COLUMN stopping")
    raw.execute("UPDATE difo_meta SET value = '1' WHERE key = 'schema_version'")
    raw.close()
    backend = open_sqlite(url)
    columns = [row[1] for row in backend._read("PRAGMA table_info(processes)")]
    assert "stopping" in columns
    assert backend._read("SELECT value FROM difo_meta WHERE key = 'schema_version'") == [
        (str(sqlite_backend.SCHEMA_VERSION),)]


def test_a_failed_migration_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = url_for(tmp_path)
    open_sqlite(url).close()
    current = sqlite_backend.SCHEMA_VERSION
    monkeypatch.setattr(sqlite_backend, "SCHEMA_VERSION", current + 1)
    monkeypatch.setitem(sqlite_backend.MIGRATIONS, current + 1, [
        "CREATE TABLE half_done (x)", "THIS IS NOT SQL"])
    with pytest.raises(BackendUnavailable, match="cannot open sqlite:///"):
        open_sqlite(url)
    raw = sqlite3.connect(tmp_path / "difo.db")
    assert raw.execute("SELECT value FROM difo_meta WHERE key = 'schema_version'").fetchone() \
        == (str(current),)
    assert raw.execute("SELECT name FROM sqlite_master WHERE name = 'half_done'").fetchall() == []
    raw.close()


def test_a_file_from_a_newer_difo_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = url_for(tmp_path)
    open_sqlite(url).close()
    monkeypatch.setattr(sqlite_backend, "SCHEMA_VERSION", sqlite_backend.SCHEMA_VERSION - 1)
    with pytest.raises(BackendUnavailable, match="newer difo"):
        open_sqlite(url)


def test_an_unopenable_path_names_the_url(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(BackendUnavailable, match=r"file/sub/difo\.db"):
        open_backend(f"sqlite:///{tmp_path}/file/sub/difo.db")


# -- claim order -------------------------------------------------------------------------------


def test_push_and_claim_are_fifo_across_pushes(backend: SQLiteBackend) -> None:
    backend.push("fifo", [payload(i, "fifo") for i in range(5)])
    backend.push("fifo", [payload(i, "fifo") for i in range(5, 10)])
    first = backend.claim("p1", ["fifo"], 3, [], [], 1)
    rest = backend.claim("p1", ["fifo"], 100, [], [], 4)
    assert [marker_of(c.raw) for c in first + rest] == list(range(10))
    assert [c.ref for c in first] == ["1:fifo", "2:fifo", "3:fifo"]
    assert backend.queue_sizes(["fifo"]) == {"fifo": 0}
    assert sorted(backend.in_flight("p1")) == sorted(c.ref for c in first + rest)


def test_strict_order_empties_the_first_queue_first(backend: SQLiteBackend) -> None:
    backend.push("low", [payload(f"low-{i}", "low") for i in range(3)])
    backend.push("high", [payload(f"high-{i}", "high") for i in range(2)])
    claimed = backend.claim("p1", ["high", "low"], 3, [], [], 1)
    assert [marker_of(c.raw) for c in claimed] == ["high-0", "high-1", "low-0"]
    assert [c.queue for c in claimed] == ["high", "high", "low"]


def test_weighted_order_takes_queues_in_proportion(backend: SQLiteBackend) -> None:
    backend.push("critical", [payload(i, "critical") for i in range(300)])
    backend.push("default", [payload(i, "default") for i in range(300)])
    fetcher = Fetcher(backend, "p1", [QueueSpec("critical", 3), QueueSpec("default", 1)],
                      weighted=True, workers=1, prefetch=0)
    taken: Counter[str] = Counter()
    for seq in range(1, 201):
        [claimed] = backend.claim("p1", fetcher.order(), 1, [], [], seq)
        taken[claimed.queue] += 1
    # 3:1 gives 150 of 200 from critical on average (sd ~6); both queues are served.
    assert 115 <= taken["critical"] <= 185
    assert taken["default"] >= 15


def test_acks_remove_units_and_a_paused_queue_is_skipped(backend: SQLiteBackend) -> None:
    backend.push("a", [payload(1, "a")])
    backend.push("b", [payload(2, "b")])
    backend.pause("a")
    [claimed] = backend.claim("p1", ["a", "b"], 5, [], [], 1)
    assert claimed.queue == "b"
    assert backend.claim("p1", ["a", "b"], 5, [claimed.ref], [], 2) == []
    assert backend.in_flight("p1") == []
    backend.unpause("a")
    assert [c.queue for c in backend.claim("p1", ["a", "b"], 5, [], [], 3)] == ["a"]


def _claim_until_empty(url: str, identity: str, out: str) -> None:
    backend = open_sqlite(url)
    seq, got = 1, []
    while True:
        claimed = backend.claim(identity, ["race"], 7, [], [], seq)
        if not claimed:
            break
        seq += len(claimed)
        got += [marker_of(c.raw) for c in claimed]
    Path(out).write_text(json.dumps(got))


def test_processes_claiming_at_once_take_each_unit_exactly_once(tmp_path: Path) -> None:
    url = url_for(tmp_path)
    open_sqlite(url).push("race", [payload(i, "race") for i in range(2000)])
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_claim_until_empty,
                               args=(url, f"p{n}", str(tmp_path / f"got-{n}.json")))
               for n in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    taken = [json.loads((tmp_path / f"got-{n}.json").read_text()) for n in range(4)]
    everything = [marker for got in taken for marker in got]
    assert sorted(everything) == list(range(2000))  # none lost, none twice
    for got in taken:
        assert got == sorted(got)  # each claimer saw the queue's order


# -- the wake-up -------------------------------------------------------------------------------


def test_wait_returns_soon_after_another_connection_commits(tmp_path: Path) -> None:
    url = url_for(tmp_path)
    waiter, pusher = open_sqlite(url), open_sqlite(url)
    assert waiter.wait(["default"], 0.2) is False  # nothing happened: waits its timeout
    woken: list[float] = []

    def wait() -> None:
        waiter.wait(["default"], 5)
        woken.append(time.monotonic())

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.3)  # long enough for the poll to back off to its cap
    pushed = time.monotonic()
    pusher.push("default", [payload(1)])
    thread.join(5)
    assert woken and woken[0] - pushed < 0.5  # the cap is 50 ms; the bound is loose


# -- liveness: lock files ----------------------------------------------------------------------


def _hold_units_then_sleep(url: str, identity: str, seconds: float) -> None:
    backend = open_sqlite(url)
    beat(backend, identity)
    backend.claim(identity, ["default"], 10, [], [], 1)
    time.sleep(seconds)


def test_a_live_process_keeps_its_units_however_old_its_beat(tmp_path: Path) -> None:
    url = url_for(tmp_path)
    backend = open_sqlite(url)
    backend.push("default", [payload(i) for i in range(3)])
    owner = multiprocessing.get_context("fork").Process(
        target=_hold_units_then_sleep, args=(url, "owner", 60))
    owner.start()
    try:
        deadline = time.monotonic() + 10
        while len(backend.in_flight("owner")) < 3:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.3)
        # Its beat is older than dead_after, but its lock is held: it lives.
        assert backend.take_orphans("rescuer", 0.1) == []
        assert len(backend.in_flight("owner")) == 3
        os.kill(owner.pid or 0, signal.SIGKILL)
        owner.join(10)
        # The lock is free at once: no need to wait for dead_after (a minute here).
        staged = backend.take_orphans("rescuer", 60)
        assert sorted(marker_of(s.raw) for s in staged) == [0, 1, 2]
        assert {s.owner for s in staged} == {"owner"}
        assert not (backend.lock_dir / "owner.lock").exists()
    finally:
        if owner.is_alive():
            owner.kill()


def _fork_a_child_then_die(url: str, identity: str, child_pid_file: str) -> None:
    backend = open_sqlite(url)
    beat(backend, identity)
    backend.claim(identity, ["default"], 10, [], [], 1)
    pid = os.fork()
    if pid == 0:  # a unit's helper process (multiprocessing, say), outliving the server
        time.sleep(30)
        os._exit(0)
    Path(child_pid_file).write_text(str(pid))
    os._exit(0)  # the server dies at once, no cleanup (as SIGKILL)


def test_a_forked_child_does_not_keep_a_dead_server_looking_alive(tmp_path: Path) -> None:
    url = url_for(tmp_path)
    backend = open_sqlite(url)
    backend.push("default", [payload(i) for i in range(2)])
    pid_file = tmp_path / "child.pid"
    owner = os.fork()
    if owner == 0:
        try:
            _fork_a_child_then_die(url, "owner", str(pid_file))
        finally:
            os._exit(1)
    os.waitpid(owner, 0)
    child = int(pid_file.read_text())
    try:
        os.kill(child, 0)  # the child still runs
        staged = backend.take_orphans("rescuer", 60)
        assert sorted(marker_of(s.raw) for s in staged) == [0, 1]
    finally:
        os.kill(child, signal.SIGKILL)


# -- fork ----------------------------------------------------------------------------------------


def test_a_forked_child_opens_its_own_connection(backend: SQLiteBackend) -> None:
    parent_connection = backend.db
    backend.push("forked", [payload("parent", "forked")])
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            if backend.db is not parent_connection:
                backend.push("forked", [payload("child", "forked")])
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert backend.db is parent_connection  # the parent's own stays in use
    claimed = backend.claim("p1", ["forked"], 10, [], [], 1)
    assert [marker_of(c.raw) for c in claimed] == ["parent", "child"]


# -- junk ------------------------------------------------------------------------------------


def test_sets_find_entries_by_jid_glob(backend: SQLiteBackend) -> None:
    raw = payload("x")
    jid = unit.decode(raw).jid
    backend.set_add("dead", time.time(), raw)
    assert [r for r, _ in backend.set_scan("dead", f"*{jid}*")] == [raw]
    assert backend.set_scan("dead", "*no-such-jid*") == []
    # A Redis-escaped glob character matches itself only.
    odd = unit.encode({**unit.decode(raw).payload, "jid": "a*b?c[d"})
    backend.set_add("dead", time.time(), odd)
    assert [r for r, _ in backend.set_scan("dead", "*a\\*b\\?c\\[d*")] == [odd]
    assert backend.set_scan("dead", "*a\\*bXc*") == []
