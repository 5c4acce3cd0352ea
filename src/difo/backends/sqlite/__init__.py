"""The SQLite backend: difo on one machine with zero setup, in one file, several processes.

Each unit is a row whose `place` column says where it is (schema.sql), so the invariant of
the Backend protocol is a row update inside one short `BEGIN IMMEDIATE` transaction. A claim
belongs to a live process, not to a deadline: each server holds an exclusive lock on a file
of its own beside the database, so a crashed server is noticed as soon as its lock is free,
and its in-flight rows are recovered. Idle servers poll `PRAGMA data_version` (it changes
when another connection commits) with a backoff capped at 50 ms. No RETURNING (older SQLite
builds lack it): rows are selected, then updated by id.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from importlib import resources
from pathlib import Path
from typing import Any

from difo.backends import (
    BeatReply,
    Claimed,
    FunctionTimes,
    Placement,
    ProcessBeat,
    ProcessRecord,
    Staged,
    StatsSnapshot,
)
from difo.config import BackendURL
from difo.errors import BackendError, BackendUnavailable

SCHEMA_VERSION = 2
# Forward migrations: version -> statements bringing the schema from version - 1 to it.
MIGRATIONS: dict[int, list[str]] = {
    2: ["ALTER TABLE processes ADD COLUMN stopping TEXT NOT NULL DEFAULT 'false'"],
}
METRICS_TTL = 3 * 24 * 3600

DEAD_MAX = 10_000
DEAD_TIMEOUT = 180 * 24 * 3600
STAT_DAY_TTL = 5 * 365 * 24 * 3600
PROCESS_TTL = 60
MAX_POLL = 0.05
SORTED_SETS = ("schedule", "retry", "dead")
# Per-thread connections a forked child inherited: kept so that they are never closed there.
_INHERITED: list[threading.local] = []
_OPEN: weakref.WeakSet[SQLiteBackend] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for backend in list(_OPEN):
        backend._after_fork_check()


os.register_at_fork(after_in_child=_after_fork_in_child)


class SQLiteBackend:
    """The Backend protocol over one SQLite file (WAL mode)."""

    def __init__(self, url: BackendURL) -> None:
        self.path = Path(url.path).expanduser().resolve()
        self.url = f"sqlite:///{self.path}"
        self.lock_dir = Path(f"{self.path}.locks")
        self._local = threading.local()
        self._pid = os.getpid()
        self._held: dict[str, int] = {}  # identity -> open fd of its lock file
        self._counter = 0
        self._counter_lock = threading.Lock()
        _OPEN.add(self)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.lock_dir.mkdir(exist_ok=True)
        except OSError as exc:
            raise BackendUnavailable(f"cannot create {self.path}: {exc}") from exc
        self._migrate()

    # -- connections -------------------------------------------------------------------------

    def _after_fork_check(self) -> None:
        """In a forked child: new connections, and none of the parent's lock files held.

        The parent's connections are kept, never used nor closed (SQLite forbids using a
        connection across fork, and closing one may checkpoint the parent's WAL). The lock
        fds are closed: a flock belongs to the open file, so a child still holding it (a
        unit's multiprocessing worker) would keep a SIGKILLed server looking alive.
        """
        if os.getpid() == self._pid:
            return
        self._pid = os.getpid()
        _INHERITED.append(self._local)
        self._local = threading.local()
        for fd in self._held.values():
            with suppress(OSError):
                os.close(fd)
        self._held = {}

    @property
    def db(self) -> sqlite3.Connection:
        """This thread's connection (new ones after a fork: connections are never shared)."""
        self._after_fork_check()
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            try:
                connection = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                             check_same_thread=False)
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.Error as exc:
                raise BackendUnavailable(f"cannot open {self.url}: {exc}") from exc
            self._local.connection = connection
        return connection

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction, taken at once (BEGIN IMMEDIATE)."""
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise BackendError(f"{self.url}: {exc}") from exc
        try:
            yield db
            db.execute("COMMIT")
        except BaseException as exc:
            if db.in_transaction:  # a failed COMMIT may already have rolled back
                with suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise BackendError(f"{self.url}: {exc}") from exc
            raise

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        try:
            return self.db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise BackendError(f"{self.url}: {exc}") from exc

    def _migrate(self) -> None:
        """Bring the file to SCHEMA_VERSION in one transaction: the forward migrations not
        yet applied (an old file), then the schema (new tables; a new file), then the version.

        Migrations run before the schema so that schema.sql always describes the latest
        tables: an index on a column a migration adds would fail on an old file otherwise.
        """
        schema = resources.files("difo.backends.sqlite").joinpath("schema.sql").read_text()
        try:
            with self._write() as db:
                known = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                                   "name = 'difo_meta'").fetchone()
                found = known and db.execute(
                    "SELECT value FROM difo_meta WHERE key = 'schema_version'").fetchone()
                version = int(found[0]) if found else SCHEMA_VERSION
                if version > SCHEMA_VERSION:
                    raise BackendUnavailable(
                        f"{self.url} has schema version {version}, written by a newer difo "
                        f"(this one knows {SCHEMA_VERSION}); upgrade difo to open it")
                for step in range(version + 1, SCHEMA_VERSION + 1):
                    for statement in MIGRATIONS[step]:
                        db.execute(statement)
                for statement in _statements(schema):
                    db.execute(statement)
                db.execute("INSERT OR REPLACE INTO difo_meta VALUES ('schema_version', ?)",
                           (str(SCHEMA_VERSION),))
                db.execute("INSERT OR IGNORE INTO difo_meta VALUES ('position', '0')")
        except BackendError as exc:
            if isinstance(exc, BackendUnavailable):
                raise
            raise BackendUnavailable(f"cannot open {self.url}: {exc}") from exc

    def ping(self) -> None:
        self._read("SELECT 1")

    def warnings(self) -> list[str]:
        return []

    def info(self) -> dict[str, str]:
        self.ping()
        size = sum(path.stat().st_size for path in
                   (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm"))
                   if path.exists())
        return {"backend": "sqlite", "url": self.url, "path": str(self.path),
                "size_bytes": str(size), "sqlite_version": sqlite3.sqlite_version}

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None

    # -- helpers -----------------------------------------------------------------------------

    @staticmethod
    def _positions(db: sqlite3.Connection, count: int) -> int:
        """Reserve `count` queue positions at the head; return the first."""
        first = int(db.execute("SELECT value FROM difo_meta WHERE key = 'position'")
                    .fetchone()[0]) + 1
        db.execute("UPDATE difo_meta SET value = ? WHERE key = 'position'",
                   (str(first + count - 1),))
        return first

    @staticmethod
    def _front(db: sqlite3.Connection, queue: str) -> int:
        """A position popped before every unit now in `queue`."""
        row = db.execute("SELECT MIN(position) FROM units WHERE place = 'queue' AND queue = ?",
                         (queue,)).fetchone()
        return (int(row[0]) if row[0] is not None else 0) - 1

    @staticmethod
    def _trim_dead(db: sqlite3.Connection, now: float) -> None:
        db.execute("DELETE FROM units WHERE place = 'dead' AND score < ?", (now - DEAD_TIMEOUT,))
        db.execute(
            "DELETE FROM units WHERE place = 'dead' AND id NOT IN (SELECT id FROM units WHERE "
            "place = 'dead' ORDER BY score DESC, id DESC LIMIT ?)", (DEAD_MAX - 1,))

    def _push(self, db: sqlite3.Connection, queue: str, payloads: Sequence[bytes]) -> None:
        db.execute("INSERT OR IGNORE INTO queues (name) VALUES (?)", (queue,))
        first = self._positions(db, len(payloads))
        db.executemany(
            "INSERT INTO units (place, queue, position, payload) VALUES ('queue', ?, ?, ?)",
            [(queue, first + i, raw) for i, raw in enumerate(payloads)])

    # -- client side -------------------------------------------------------------------------

    def push(self, queue: str, payloads: Sequence[bytes]) -> None:
        if payloads:
            with self._write() as db:
                self._push(db, queue, payloads)

    def schedule(self, entries: Sequence[tuple[float, bytes]]) -> None:
        if entries:
            with self._write() as db:
                db.executemany("INSERT INTO units (place, score, payload) VALUES "
                               "('schedule', ?, ?)", [(at, raw) for at, raw in entries])

    # -- fetch -------------------------------------------------------------------------------

    def claim(
        self, identity: str, queues: Sequence[str], count: int, acks: Sequence[str],
        careful_acks: Sequence[str], first_seq: int,
    ) -> list[Claimed]:
        claimed: list[Claimed] = []
        with self._write() as db:
            self._delete_refs(db, identity, acks)
            seq = first_seq
            paused = {row[0] for row in db.execute("SELECT name FROM paused")}
            for queue in queues:
                if queue in paused:
                    continue
                if count <= 0:
                    break
                rows = db.execute(
                    "SELECT id, payload FROM units WHERE place = 'queue' AND queue = ? "
                    "ORDER BY position LIMIT ?", (queue, count)).fetchall()
                updates = []
                for row_id, raw in rows:
                    ref = f"{seq}:{queue}"
                    updates.append((identity, ref, row_id))
                    claimed.append(Claimed(ref, queue, bytes(raw)))
                    seq += 1
                db.executemany("UPDATE units SET place = 'inflight', owner = ?, ref = ?, "
                               "position = NULL WHERE id = ?", updates)
                count -= len(rows)
        return claimed

    def wait(self, queues: Sequence[str], timeout: float) -> bool:
        # Any commit by another connection wakes: a push, but also a beat or an ack. A
        # spurious wake-up costs one empty claim; a missed one would cost a unit's latency.
        deadline = time.monotonic() + timeout
        version = self._data_version()
        pause = 0.001
        while time.monotonic() < deadline:
            time.sleep(min(pause, max(deadline - time.monotonic(), 0)))
            if self._data_version() != version:
                return True
            pause = min(pause * 2, MAX_POLL)
        return False

    def wait_claim(
        self, identity: str, queues: Sequence[str], timeout: float, count: int,
        acks: Sequence[str], careful_acks: Sequence[str], first_seq: int,
    ) -> list[Claimed]:
        if acks:
            self.claim(identity, queues, 0, acks, careful_acks, first_seq)
        self.wait(queues, timeout)
        return self.claim(identity, queues, count, [], [], first_seq)

    def _data_version(self) -> int:
        return int(self._read("PRAGMA data_version")[0][0])

    def mark_started(self, identity: str, refs: Sequence[str]) -> None:
        if refs:
            with self._write() as db:
                db.executemany("UPDATE units SET started = 1 WHERE place = 'inflight' AND "
                               "owner = ? AND ref = ?", [(identity, ref) for ref in refs])

    def in_flight(self, identity: str) -> list[str]:
        rows = self._read("SELECT ref FROM units WHERE place = 'inflight' AND owner = ?",
                          (identity,))
        return [str(row[0]) for row in rows]

    def requeue(self, identity: str, units: Sequence[tuple[str, str]]) -> int:
        moved = 0
        with self._write() as db:
            for ref, queue in units:
                db.execute("INSERT OR IGNORE INTO queues (name) VALUES (?)", (queue,))
                cursor = db.execute(
                    "UPDATE units SET place = 'queue', queue = ?, position = ?, owner = NULL, "
                    "ref = NULL, started = 0 WHERE place = 'inflight' AND owner = ? AND ref = ?",
                    (queue, self._front(db, queue), identity, ref))
                moved += cursor.rowcount
        return moved

    def retry_later(self, identity: str, ref: str, raw: bytes, at: float) -> None:
        with self._write() as db:
            db.execute("UPDATE units SET place = 'retry', score = ?, payload = ?, owner = NULL, "
                       "ref = NULL, started = 0 WHERE place = 'inflight' AND owner = ? AND "
                       "ref = ?", (at, raw, identity, ref))

    def kill(self, identity: str, ref: str, raw: bytes, *, staged: bool = False) -> None:
        now = time.time()
        with self._write() as db:
            cursor = db.execute(
                "UPDATE units SET place = 'dead', score = ?, payload = ?, owner = NULL, "
                "ref = NULL, started = 0 WHERE place = ? AND owner = ? AND ref = ?",
                (now, raw, "staging" if staged else "inflight", identity, ref))
            if cursor.rowcount:
                self._trim_dead(db, now)

    def discard(self, identity: str, ref: str) -> None:
        with self._write() as db:
            self._delete_refs(db, identity, [ref])

    @staticmethod
    def _delete_refs(db: sqlite3.Connection, identity: str, refs: Sequence[str]) -> None:
        if refs:
            db.executemany("DELETE FROM units WHERE place = 'inflight' AND owner = ? AND "
                           "ref = ?", [(identity, ref) for ref in refs])

    # -- moving units between places ---------------------------------------------------------

    def stage_due(self, identity: str, limit: int) -> list[Staged]:
        now = time.time()
        with self._counter_lock:
            self._counter += 1
            prefix = f"p|{identity}|{self._counter}."
        staged: list[Staged] = []
        with self._write() as db:
            rows = []
            for place in ("retry", "schedule"):  # at most `limit` from each set, as Redis
                rows += db.execute(
                    "SELECT id, payload FROM units WHERE place = ? AND score <= ? "
                    "ORDER BY score, id LIMIT ?", (place, now, limit)).fetchall()
            updates = []
            for row_id, raw in rows:
                ref = f"{prefix}{row_id}:"
                updates.append((identity, ref, row_id))
                staged.append(Staged(ref, "", bytes(raw), identity, started=False,
                                     counted=False))
            db.executemany("UPDATE units SET place = 'staging', owner = ?, ref = ?, "
                           "score = NULL WHERE id = ?", updates)
        return staged

    def take_orphans(self, identity: str, dead_after: float) -> list[Staged]:
        now = time.time()
        owners = [row[0] for row in self._read(
            "SELECT DISTINCT owner FROM units WHERE place IN ('inflight', 'staging') AND "
            "owner IS NOT NULL AND owner != ?", (identity,))]
        owners += [row[0] for row in self._read(
            "SELECT identity FROM beats WHERE identity != ? AND beat < ?",
            (identity, now - dead_after)) if row[0] not in owners]
        staged: list[Staged] = []
        for owner in owners:
            if not self._is_dead(owner, now, dead_after):
                continue
            with self._write() as db:
                rows = db.execute(
                    "SELECT id, place, ref, started, queue, payload FROM units WHERE owner = ? "
                    "AND place IN ('inflight', 'staging')", (owner,)).fetchall()
                updates = []
                for row_id, place, ref, started, _queue, raw in rows:
                    if place == "inflight":
                        ref = f"{'s' if started else 'n'}|{owner}|{ref}"
                    updates.append((identity, ref, row_id))
                    flag, _, inner = ref.split("|", 2)
                    staged.append(Staged(ref, inner.partition(":")[2], bytes(raw), owner,
                                         started=flag == "s", counted=flag != "p"))
                db.executemany("UPDATE units SET place = 'staging', owner = ?, ref = ?, "
                               "started = 0 WHERE id = ?", updates)
                db.execute("DELETE FROM beats WHERE identity = ?", (owner,))
                db.execute("UPDATE processes SET expires_at = 0 WHERE identity = ?", (owner,))
            self._remove_lock(owner)
        return staged

    def release(self, identity: str, placements: Sequence[Placement]) -> None:
        now = time.time()
        killed = False
        with self._write() as db:
            for placement in placements:
                if placement.dead:
                    cursor = db.execute(
                        "UPDATE units SET place = 'dead', score = ?, payload = ?, owner = NULL, "
                        "ref = NULL WHERE place = 'staging' AND owner = ? AND ref = ?",
                        (now, placement.raw, identity, placement.ref))
                    killed = killed or cursor.rowcount > 0
                    continue
                queue = placement.queue or "default"
                db.execute("INSERT OR IGNORE INTO queues (name) VALUES (?)", (queue,))
                position = (self._front(db, queue) if placement.front
                            else self._positions(db, 1))
                db.execute(
                    "UPDATE units SET place = 'queue', queue = ?, position = ?, payload = ?, "
                    "owner = NULL, ref = NULL, score = NULL WHERE place = 'staging' AND "
                    "owner = ? AND ref = ?", (queue, position, placement.raw, identity,
                                              placement.ref))
            if killed:
                self._trim_dead(db, now)

    # -- processes -----------------------------------------------------------------------------

    def beat(self, beat: ProcessBeat) -> BeatReply:
        self._hold_lock(beat.identity)
        now = time.time()
        day = time.strftime("%Y-%m-%d", time.gmtime(now))
        work = json.dumps({tid: raw.decode() for tid, raw in beat.work.items()})
        with self._write() as db:
            for kind, count in (("processed", beat.processed), ("failed", beat.failed)):
                if count:
                    for key, expires in ((f"stat:{kind}", None),
                                         (f"stat:{kind}:{day}", now + STAT_DAY_TTL)):
                        db.execute(
                            "INSERT INTO stats (key, value, expires_at) VALUES (?, ?, ?) "
                            "ON CONFLICT (key) DO UPDATE SET value = value + excluded.value, "
                            "expires_at = excluded.expires_at", (key, count, expires))
            db.execute(
                "INSERT OR REPLACE INTO processes (identity, info, busy, beat, quiet, rss, "
                "rtt_us, concurrency, work, expires_at, stopping) VALUES "
                "(?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?)",
                (beat.identity, beat.info, beat.busy, now, "true" if beat.quiet else "false",
                 beat.rss_kb, beat.concurrency, work, now + PROCESS_TTL,
                 "true" if beat.stopping else "false"))
            if beat.functions:
                db.execute("DELETE FROM metrics WHERE expires_at < ?", (now,))
                for minute, expires in ((beat.minute, now + METRICS_TTL), ("", None)):
                    db.executemany(
                        "INSERT INTO metrics (minute, field, value, expires_at) VALUES "
                        "(?, ?, ?, ?) ON CONFLICT (minute, field) DO UPDATE SET "
                        "value = value + excluded.value, expires_at = excluded.expires_at",
                        [(minute, name, value, expires)
                         for name, value in _function_fields(beat.functions)])
            db.execute("INSERT OR REPLACE INTO beats (identity, beat) VALUES (?, ?)",
                       (beat.identity, now))
            row = db.execute("SELECT id, signal FROM signals WHERE identity = ? AND "
                             "expires_at > ? ORDER BY id LIMIT 1",
                             (beat.identity, now)).fetchone()
            if row:
                db.execute("DELETE FROM signals WHERE id = ?", (row[0],))
        return BeatReply(now, str(row[1]) if row else None)

    def forget_process(self, identity: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM beats WHERE identity = ?", (identity,))
            db.execute("UPDATE processes SET expires_at = 0 WHERE identity = ?", (identity,))
        fd = self._held.pop(identity, None)
        if fd is not None:
            os.close(fd)
        self._remove_lock(identity)

    def _lock_path(self, identity: str) -> Path:
        return self.lock_dir / f"{identity.replace('/', '_')}.lock"

    def _held_here(self, identity: str) -> bool:
        self._after_fork_check()
        return identity in self._held

    def _hold_lock(self, identity: str) -> None:
        if self._held_here(identity):
            return
        try:
            fd = os.open(self._lock_path(identity), os.O_RDWR | os.O_CREAT, 0o644)
            # Blocking: a live server's probe of this file holds it for an instant at most.
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            raise BackendError(f"{self.url}: cannot lock {self._lock_path(identity)}: "
                               f"{exc}") from exc
        self._held[identity] = fd

    def _is_dead(self, identity: str, now: float, dead_after: float) -> bool:
        """Dead when its lock file is free. Without a lock file to probe, its beat decides,
        as on Redis: so too for a lock this very process holds (one process beating for
        several identities, as tests do), which a probe from here cannot tell apart."""
        if not self._held_here(identity):
            free = self._lock_is_free(identity)
            if free is not None:
                return free
        rows = self._read("SELECT beat FROM beats WHERE identity = ?", (identity,))
        return not rows or float(rows[0][0]) < now - dead_after

    def _lock_is_free(self, identity: str) -> bool | None:
        """Whether nobody holds `identity`'s lock file; None when there is none to probe."""
        try:
            fd = os.open(self._lock_path(identity), os.O_RDWR)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError:
            return None
        finally:
            os.close(fd)
        return True

    def _remove_lock(self, identity: str) -> None:
        self._lock_path(identity).unlink(missing_ok=True)

    # -- periodic units ------------------------------------------------------------------------

    def fire_periodic(self, name: str, tick: float, queue: str, raw: bytes) -> bool:
        with self._write() as db:
            row = db.execute("SELECT tick FROM periodic WHERE name = ?", (name,)).fetchone()
            if row and float(row[0]) >= tick:
                return False
            db.execute("INSERT OR REPLACE INTO periodic (name, tick) VALUES (?, ?)",
                       (name, tick))
            self._push(db, queue, [raw])
        return True

    def periodic_ticks(self) -> dict[str, float]:
        return {str(name): float(tick) for name, tick in
                self._read("SELECT name, tick FROM periodic")}

    # -- the read and manage side (difo.api) -----------------------------------------------------

    def queue_names(self) -> list[str]:
        return [str(row[0]) for row in self._read("SELECT name FROM queues ORDER BY name")]

    def queue_sizes(self, names: Sequence[str]) -> dict[str, int]:
        sizes = dict.fromkeys(names, 0)
        for queue, size in self._read("SELECT queue, COUNT(*) FROM units WHERE place = 'queue' "
                                      "GROUP BY queue"):
            if queue in sizes:
                sizes[queue] = int(size)
        return sizes

    def queue_range(self, name: str, start: int, stop: int) -> list[bytes]:
        if start < 0 or stop < 0:
            size = self.queue_sizes([name])[name]
            start = max(size + start, 0) if start < 0 else start
            stop = size + stop if stop < 0 else stop
        if stop < start:
            return []
        rows = self._read("SELECT payload FROM units WHERE place = 'queue' AND queue = ? "
                          "ORDER BY position DESC LIMIT ? OFFSET ?",
                          (name, stop - start + 1, start))
        return [bytes(row[0]) for row in rows]

    def queue_remove(self, name: str, raw: bytes) -> bool:
        with self._write() as db:
            cursor = db.execute(
                "DELETE FROM units WHERE id = (SELECT id FROM units WHERE place = 'queue' AND "
                "queue = ? AND payload = ? LIMIT 1)", (name, raw))
            return cursor.rowcount > 0

    def queue_clear(self, name: str) -> int:
        with self._write() as db:
            cursor = db.execute("DELETE FROM units WHERE place = 'queue' AND queue = ?", (name,))
            db.execute("DELETE FROM queues WHERE name = ?", (name,))
            return int(cursor.rowcount)

    def set_size(self, name: str) -> int:
        return int(self._read("SELECT COUNT(*) FROM units WHERE place = ?",
                              (_sorted_set(name),))[0][0])

    def set_range(
        self, name: str, start: int, stop: int, newest_first: bool
    ) -> list[tuple[bytes, float]]:
        if start < 0 or stop < 0:
            size = self.set_size(name)
            start = max(size + start, 0) if start < 0 else start
            stop = size + stop if stop < 0 else stop
        if stop < start:
            return []
        order = "DESC" if newest_first else "ASC"
        rows = self._read(f"SELECT payload, score FROM units WHERE place = ? "
                          f"ORDER BY score {order}, id {order} LIMIT ? OFFSET ?",
                          (_sorted_set(name), stop - start + 1, start))
        return [(bytes(raw), float(score)) for raw, score in rows]

    def set_at_score(self, name: str, score: float) -> list[tuple[bytes, float]]:
        rows = self._read("SELECT payload, score FROM units WHERE place = ? AND score = ?",
                          (_sorted_set(name), score))
        return [(bytes(raw), float(s)) for raw, s in rows]

    def set_scan(self, name: str, match: str) -> list[tuple[bytes, float]]:
        rows = self._read("SELECT payload, score FROM units WHERE place = ? AND "
                          "CAST(payload AS TEXT) GLOB ?", (_sorted_set(name), _redis_glob(match)))
        return [(bytes(raw), float(score)) for raw, score in rows]

    def set_remove(self, name: str, raw: bytes) -> bool:
        with self._write() as db:
            cursor = db.execute(
                "DELETE FROM units WHERE id = (SELECT id FROM units WHERE place = ? AND "
                "payload = ? LIMIT 1)", (_sorted_set(name), raw))
            return cursor.rowcount > 0

    def set_clear(self, name: str) -> int:
        with self._write() as db:
            cursor = db.execute("DELETE FROM units WHERE place = ?", (_sorted_set(name),))
            return int(cursor.rowcount)

    def set_to_queue(self, name: str, raw: bytes, queue: str, new_raw: bytes) -> bool:
        with self._write() as db:
            row = db.execute("SELECT id FROM units WHERE place = ? AND payload = ? LIMIT 1",
                             (_sorted_set(name), raw)).fetchone()
            if row is None:
                return False
            db.execute("INSERT OR IGNORE INTO queues (name) VALUES (?)", (queue,))
            db.execute("UPDATE units SET place = 'queue', queue = ?, position = ?, score = NULL, "
                       "payload = ? WHERE id = ?",
                       (queue, self._positions(db, 1), new_raw, row[0]))
        return True

    def set_to_dead(self, name: str, raw: bytes, new_raw: bytes) -> bool:
        now = time.time()
        with self._write() as db:
            cursor = db.execute(
                "UPDATE units SET place = 'dead', score = ?, payload = ? WHERE id = (SELECT id "
                "FROM units WHERE place = ? AND payload = ? LIMIT 1)",
                (now, new_raw, _sorted_set(name), raw))
            if cursor.rowcount == 0:
                return False
            self._trim_dead(db, now)
        return True

    def set_add(self, name: str, score: float, raw: bytes) -> None:
        with self._write() as db:
            db.execute("INSERT INTO units (place, score, payload) VALUES (?, ?, ?)",
                       (_sorted_set(name), score, raw))


    # -- statistics, processes and control ------------------------------------------------------

    def stats(self) -> StatsSnapshot:
        now = time.time()
        counts = dict(self._read("SELECT key, value FROM stats WHERE key IN "
                                 "('stat:processed', 'stat:failed')"))
        places = dict(self._read("SELECT place, COUNT(*) FROM units WHERE place IN "
                                 "('schedule', 'retry', 'dead') GROUP BY place"))
        names = self.queue_names()
        sizes = self.queue_sizes(names)
        oldest: dict[str, bytes] = {}
        for name in names:
            found = self.queue_range(name, -1, -1) if sizes[name] else []
            if found:  # the queue may have emptied since it was counted
                oldest[name] = found[0]
        processes = self._read("SELECT COUNT(*), COALESCE(SUM(busy), 0) FROM processes "
                               "WHERE expires_at > ?", (now,))[0]
        return StatsSnapshot(
            processed=int(counts.get("stat:processed", 0)),
            failed=int(counts.get("stat:failed", 0)), queues=sizes, oldest=oldest,
            scheduled=int(places.get("schedule", 0)), retry=int(places.get("retry", 0)),
            dead=int(places.get("dead", 0)), processes=int(processes[0]),
            busy=int(processes[1]), paused=frozenset(self.paused()),
        )

    def day_counts(self, days: Sequence[str]) -> list[tuple[int, int]]:
        now = time.time()
        found = dict(self._read(
            "SELECT key, value FROM stats WHERE key LIKE 'stat:%:%' AND "
            "(expires_at IS NULL OR expires_at > ?)", (now,)))
        return [(int(found.get(f"stat:processed:{day}", 0)),
                 int(found.get(f"stat:failed:{day}", 0))) for day in days]

    def processes(self) -> list[ProcessRecord]:
        now = time.time()
        with self._write() as db:
            # Sidekiq's ProcessSet cleanup: an expired record has died.
            db.execute("DELETE FROM processes WHERE expires_at <= ?", (now,))
            rows = db.execute(
                "SELECT identity, info, busy, beat, quiet, stopping, rss, rtt_us, concurrency "
                "FROM processes ORDER BY identity").fetchall()
        return [ProcessRecord(str(identity), bytes(info), int(busy), float(beat),
                              quiet == "true", stopping == "true", int(rss), int(rtt),
                              int(concurrency))
                for identity, info, busy, beat, quiet, stopping, rss, rtt, concurrency in rows]

    def work(self, identities: Sequence[str]) -> dict[str, dict[str, bytes]]:
        now = time.time()
        out: dict[str, dict[str, bytes]] = {identity: {} for identity in identities}
        for identity, work in self._read("SELECT identity, work FROM processes WHERE "
                                         "expires_at > ?", (now,)):
            if identity in out:
                out[identity] = {tid: value.encode() for tid, value in json.loads(work).items()}
        return out

    def signal(self, identity: str, name: str) -> None:
        with self._write() as db:
            db.execute("INSERT INTO signals (identity, signal, expires_at) VALUES (?, ?, ?)",
                       (identity, name, time.time() + PROCESS_TTL))

    def pause(self, queue: str) -> None:
        with self._write() as db:
            db.execute("INSERT OR IGNORE INTO paused (name) VALUES (?)", (queue,))

    def unpause(self, queue: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM paused WHERE name = ?", (queue,))

    def paused(self) -> set[str]:
        return {str(row[0]) for row in self._read("SELECT name FROM paused")}

    def function_metrics(self, minutes: Sequence[str]) -> list[dict[str, FunctionTimes]]:
        if not minutes:
            return []
        marks = ", ".join("?" for _ in minutes)
        rows = self._read(f"SELECT minute, field, value FROM metrics WHERE minute IN ({marks}) "
                          "AND (expires_at IS NULL OR expires_at > ?)",
                          (*minutes, time.time()))
        by_minute: dict[str, list[tuple[str, float]]] = {minute: [] for minute in minutes}
        for minute, name, value in rows:
            by_minute[minute].append((name, float(value)))
        return [_read_functions(by_minute[minute]) for minute in minutes]

    def function_totals(self) -> dict[str, FunctionTimes]:
        rows = self._read("SELECT field, value FROM metrics WHERE minute = ''")
        return _read_functions([(str(name), float(value)) for name, value in rows])


def _function_fields(functions: dict[str, FunctionTimes]) -> list[tuple[str, float]]:
    """The Redis hash fields of difo:metrics:MINUTE, as rows."""
    fields: list[tuple[str, float]] = []
    for name, times in functions.items():
        fields += [(f"{name}|count", times.count), (f"{name}|failures", times.failures),
                   (f"{name}|ms", times.seconds * 1000)]
        fields += [(f"{name}|h{bucket}", count) for bucket, count in times.buckets.items()]
    return fields


def _read_functions(fields: Sequence[tuple[str, float]]) -> dict[str, FunctionTimes]:
    out: dict[str, FunctionTimes] = {}
    for field_name, value in fields:
        name, _, kind = field_name.rpartition("|")
        times = out.setdefault(name, FunctionTimes())
        if kind == "count":
            times.count = int(value)
        elif kind == "failures":
            times.failures = int(value)
        elif kind == "ms":
            times.seconds = value / 1000
        elif kind.startswith("h") and kind[1:].isdigit():
            times.buckets[int(kind[1:])] = int(value)
    return out


def _statements(script: str) -> list[str]:
    """The SQL statements of a script, one by one (executescript would commit first)."""
    statements, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    return statements


def _redis_glob(pattern: str) -> str:
    """A Redis MATCH pattern as an SQLite GLOB: Redis escapes with a backslash, GLOB with a
    one-character class."""
    out, chars = [], iter(pattern)
    for char in chars:
        if char == "\\":
            escaped = next(chars, "\\")
            out.append(f"[{escaped}]" if escaped in "*?[" else escaped)
        else:
            out.append(char)
    return "".join(out)


def _sorted_set(name: str) -> str:
    if name not in SORTED_SETS:
        raise ValueError(f"{name!r} is not one of {SORTED_SETS}")
    return name
