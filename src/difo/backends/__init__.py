"""The one seam: the Backend protocol, and `open_backend(url)` to pick an implementation.

Core modules talk to storage only through this protocol; they never import redis or sqlite3.
Each method's docstring states its guarantee. The invariant every write keeps: at every
instant a unit is in exactly one visible place: a queue, the schedule, the retry set, the
dead set, or the in-flight record of the server process working on it (its claimed units,
and its staging record for units it is moving between places).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from difo.config import parse_url
from difo.errors import ConfigError


@dataclass(slots=True, unsafe_hash=True)
class Claimed:
    """A unit claimed into a process's in-flight record. `ref` names the record entry.
    Treat it as frozen: not declared so, as a frozen dataclass's __init__ costs three times
    as much, once per unit of every drain (docs/performance.md)."""

    ref: str
    queue: str
    raw: bytes


@dataclass(frozen=True)
class Staged:
    """A unit in a process's staging record, on its way from a set or a dead process.

    `started` is True when its last owner is known to have started running it, `counted`
    False when it never could have (a promotion from the schedule): the poison-pill rule
    reads both.
    """

    ref: str
    queue: str
    raw: bytes
    owner: str
    started: bool
    counted: bool


@dataclass(frozen=True)
class Placement:
    """Where a staged unit goes: `queue` (pushed to the head, run last) or, with `front`,
    to the end popped next; `dead` sends it to the dead set instead."""

    ref: str
    raw: bytes
    queue: str = ""
    front: bool = False
    dead: bool = False


@dataclass
class ProcessBeat:
    """What a heartbeat writes: Sidekiq's process record plus counts since the last beat."""

    identity: str
    info: bytes
    busy: int
    quiet: bool
    rss_kb: int
    concurrency: int
    work: dict[str, bytes] = field(default_factory=dict)
    processed: int = 0
    failed: int = 0
    stopping: bool = False
    functions: dict[str, FunctionTimes] = field(default_factory=dict)
    """Runs per function since the last beat, added to `minute` (`YYYYMMDD|HH:MM`, UTC)."""
    minute: str = ""


@dataclass
class FunctionTimes:
    """Runs of one function: how many, how many failed, their total run time, and how many
    fell in each run-time bucket (index into difo.stats.BOUNDS; the last is +Inf)."""

    count: int = 0
    failures: int = 0
    seconds: float = 0.0
    buckets: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class StatsSnapshot:
    """What Sidekiq's Stats reads, in one pass: totals, queue sizes, the oldest unit of each
    non-empty queue (for latency), set sizes, the process registry and paused queues."""

    processed: int
    failed: int
    queues: dict[str, int]
    oldest: dict[str, bytes]
    scheduled: int
    retry: int
    dead: int
    processes: int
    busy: int
    paused: frozenset[str]


@dataclass(frozen=True)
class ProcessRecord:
    """One server's record as its last beat wrote it (Sidekiq's process hash)."""

    identity: str
    info: bytes
    busy: int
    beat: float
    quiet: bool
    stopping: bool
    rss_kb: int
    rtt_us: int
    concurrency: int | None


@dataclass(frozen=True)
class BeatReply:
    """The backend's clock at the beat, and a signal sent to the process (TSTP, TERM) if any."""

    time: float
    signal: str | None


class Backend(Protocol):
    """Storage for units. Every method may raise BackendError (BackendUnavailable when the
    store cannot be reached); no method leaves a unit in two places or in none."""

    url: str
    """The URL, password masked: safe to log."""

    def ping(self) -> None:
        """Round trip to the store; raise BackendUnavailable naming the URL when it fails."""

    def warnings(self) -> list[str]:
        """Problems a server should log at start (e.g. an evicting Redis)."""

    def info(self) -> dict[str, str]:
        """What the store is, for people (the dashboard): for Redis its version, memory,
        clients and uptime; for SQLite the file's path and size. One read; values are text."""

    def push(self, queue: str, payloads: Sequence[bytes]) -> None:
        """Append units to `queue` atomically (all or none), registering the queue name and
        waking an idle server. Units pushed in one call are run in the order given."""

    def schedule(self, entries: Sequence[tuple[float, bytes]]) -> None:
        """Add units to the schedule, each due at its epoch-seconds time. Atomic."""

    def claim(
        self, identity: str, queues: Sequence[str], count: int, acks: Sequence[str],
        careful_acks: Sequence[str], first_seq: int,
    ) -> list[Claimed]:
        """Remove `acks` from the in-flight record, then move up to `count` units, oldest
        first, from the queues in the given order into it; one atomic step. Entries are
        numbered from `first_seq`, which the caller never reuses. Does not block."""

    def wait_claim(
        self, identity: str, queues: Sequence[str], timeout: float, count: int,
        acks: Sequence[str], careful_acks: Sequence[str], first_seq: int,
    ) -> list[Claimed]:
        """Send the acks, block up to `timeout` seconds for a wake-up pushed beside a new
        unit on `queues`, then `claim` as soon as woken or timed out: what an idle server
        does. A unit pushed by a foreign client wakes nobody (hence the timeout). Redis runs
        all three in one round trip, so a unit pushed to an idle server is handed to a
        worker as soon as the wake-up's reply arrives."""

    def mark_started(self, identity: str, refs: Sequence[str]) -> None:
        """Record that these claimed units started running (used for units that were already
        orphaned once, so that a poison pill is told apart from units merely fetched)."""

    def in_flight(self, identity: str) -> list[str]:
        """The refs in this process's in-flight record (to reconcile after a lost reply)."""

    def requeue(self, identity: str, units: Sequence[tuple[str, str]]) -> int:
        """Put in-flight units (ref, queue) back at the end of their queues popped next, the
        last given popped first; atomic. Returns how many were still in the record."""

    def retry_later(self, identity: str, ref: str, raw: bytes, at: float) -> None:
        """Move an in-flight unit to the retry set, due at `at`, as `raw`. Atomic."""

    def kill(self, identity: str, ref: str, raw: bytes, *, staged: bool = False) -> None:
        """Move an in-flight (or, with `staged`, a staging) unit to the dead set as `raw`,
        trimming it to Sidekiq's limits (10,000 entries, 180 days). Atomic."""

    def discard(self, identity: str, ref: str) -> None:
        """Drop an in-flight unit that is neither to be retried nor kept (retry=False)."""

    def stage_due(self, identity: str, limit: int) -> list[Staged]:
        """Move up to `limit` units whose time has come (backend clock) from the schedule
        and the retry set into this process's staging record. Atomic per set."""

    def take_orphans(self, identity: str, dead_after: float) -> list[Staged]:
        """Move the in-flight and staging records of every process that has not beaten for
        `dead_after` seconds into this process's staging record, one process at a time,
        under a lock so that one recovery runs at a time. A process that beats again before
        its turn is left alone."""

    def release(self, identity: str, placements: Sequence[Placement]) -> None:
        """Move staged units to their queue (or the dead set), atomically."""

    def beat(self, beat: ProcessBeat) -> BeatReply:
        """Write the process record (Sidekiq's format), the busy workers, the counts (added
        to the totals and today's), and the liveness beat; pop one pending signal."""

    def forget_process(self, identity: str) -> None:
        """A clean stop: remove the process from the registry and its liveness beat. Call
        only when its in-flight and staging records are empty."""

    # -- periodic units ----------------------------------------------------------------------

    def fire_periodic(self, name: str, tick: float, queue: str, raw: bytes) -> bool:
        """Push `raw` onto `queue` unless periodic `name` already fired for `tick` or a later
        tick; atomic, so however many servers try, one unit is pushed per tick."""

    def periodic_ticks(self) -> dict[str, float]:
        """The last tick fired per periodic name."""

    # -- the read and manage side (difo.api); every move is atomic --------------------------

    def queue_names(self) -> list[str]:
        """Known queue names (Sidekiq's `queues` set), sorted."""

    def queue_sizes(self, names: Sequence[str]) -> dict[str, int]:
        """Units waiting in each queue."""

    def queue_range(self, name: str, start: int, stop: int) -> list[bytes]:
        """Payloads by position, 0 the newest (the head); -1 is the oldest, popped next."""

    def queue_remove(self, name: str, raw: bytes) -> bool:
        """Delete one waiting unit, matched by its exact stored bytes."""

    def queue_clear(self, name: str) -> int:
        """Delete a queue and forget its name; return how many units it held."""

    def set_size(self, name: str) -> int:
        """Entries in a sorted set: `schedule`, `retry` or `dead`."""

    def set_range(
        self, name: str, start: int, stop: int, newest_first: bool
    ) -> list[tuple[bytes, float]]:
        """(payload, score) by rank, lowest score first unless `newest_first`."""

    def set_at_score(self, name: str, score: float) -> list[tuple[bytes, float]]:
        """Entries with exactly this score (how Sidekiq's Web finds an entry)."""

    def set_scan(self, name: str, match: str) -> list[tuple[bytes, float]]:
        """Entries whose payload matches a glob pattern (a jid search)."""

    def set_remove(self, name: str, raw: bytes) -> bool:
        """Delete one entry by its exact stored bytes."""

    def set_clear(self, name: str) -> int:
        """Delete every entry; return how many there were."""

    def set_to_queue(self, name: str, raw: bytes, queue: str, new_raw: bytes) -> bool:
        """Move an entry onto the head of `queue` as `new_raw`; False if it was gone."""

    def set_to_dead(self, name: str, raw: bytes, new_raw: bytes) -> bool:
        """Move an entry to the dead set as `new_raw` (trimmed); False if it was gone."""

    def set_add(self, name: str, score: float, raw: bytes) -> None:
        """Add an entry to a sorted set (tests and tools; units normally arrive by moves)."""

    # -- statistics, processes and control (difo.api Stats, ProcessSet, Workers, Metrics) ----

    def stats(self) -> StatsSnapshot:
        """Totals, sizes, busy count and paused queues, as Sidekiq's Stats computes them
        (`processes` unpruned, busy summed over it). Read-only; not one atomic snapshot."""

    def day_counts(self, days: Sequence[str]) -> list[tuple[int, int]]:
        """(processed, failed) for each UTC day `YYYY-MM-DD`; 0 for a day with no count."""

    def processes(self) -> list[ProcessRecord]:
        """Live server records, by identity. Removes from the registry every member whose
        record expired (Sidekiq's ProcessSet cleanup), so a crashed server leaves within the
        record's 60 s lifetime, and as soon as its in-flight units are recovered."""

    def work(self, identities: Sequence[str]) -> dict[str, dict[str, bytes]]:
        """The busy workers of each process: thread id -> Sidekiq's work JSON
        (`queue`, `payload`, `run_at`), as of its last beat."""

    def signal(self, identity: str, name: str) -> None:
        """Send `name` (TSTP quiet, TERM stop, TTIN dump threads) to a server: it acts on it
        at its next beat, one signal per beat. Unread signals expire after 60 s."""

    def pause(self, queue: str) -> None:
        """Stop every server taking units from `queue` (within a second): claims skip it.
        Units stay and can still be pushed. Idempotent."""

    def unpause(self, queue: str) -> None:
        """Let servers take units from `queue` again, waking idle ones. Idempotent."""

    def paused(self) -> set[str]:
        """The names of paused queues."""

    def function_metrics(self, minutes: Sequence[str]) -> list[dict[str, FunctionTimes]]:
        """Per-function runs for each minute `YYYYMMDD|HH:MM` (UTC), as the beats flushed
        them; kept a few days (METRICS_TTL), empty for a minute with no runs."""

    def function_totals(self) -> dict[str, FunctionTimes]:
        """Per-function runs since the store began (monotonic: Prometheus counters)."""

    def close(self) -> None:
        """Release connections."""


def open_backend(url: str) -> Backend:
    """The backend for `url` (redis://, rediss://, unix://, sqlite:///)."""
    parsed = parse_url(url)
    if parsed.is_redis:
        from difo.backends.redis import RedisBackend

        return RedisBackend(parsed)
    if parsed.scheme == "sqlite":
        from difo.backends.sqlite import SQLiteBackend

        return SQLiteBackend(parsed)
    raise ConfigError(f"{parsed.masked}: no backend for this URL")
