"""Every Redis key difo reads or writes, beside the Sidekiq structure it mirrors.

Sidekiq's own keys (SIDEKIQ_LAYOUT.md §1) keep Sidekiq's names so Ruby clients, Sidekiq's
API and its Web UI share them. difo's own records (liveness, in-flight, staging, wake-ups)
live under `difo:`. Keys are built here only, so a hash tag for Redis Cluster stays a
one-file change.
"""

from __future__ import annotations

# Sidekiq's keys.
QUEUES = "queues"  # set of queue names
SCHEDULE = "schedule"  # zset: score = when due
RETRY = "retry"  # zset: score = next attempt
DEAD = "dead"  # zset: score = time of death
PROCESSES = "processes"  # set of process identities
STAT_PROCESSED = "stat:processed"
STAT_FAILED = "stat:failed"

# Sidekiq's limits for the dead set (dead_max_jobs, dead_timeout_in_seconds).
DEAD_MAX = 10_000
DEAD_TIMEOUT = 180 * 24 * 3600
# Sidekiq keeps the daily counters five years.
STAT_DAY_TTL = 5 * 365 * 24 * 3600
# Sidekiq's process record lives 60 s and is renewed by every beat.
PROCESS_TTL = 60

# difo's own records.
BEATS = "difo:beats"  # zset: identity -> Redis TIME of its last beat
RECOVERY_LOCK = "difo:recovery-lock"
PERIODIC = "difo:periodic"  # hash: periodic unit name -> last tick fired (epoch seconds)
PAUSED = "difo:paused"  # set of paused queue names (Sidekiq Pro's pause!): claims skip them
METRICS_TOTAL = "difo:metrics-total"  # hash: per-function fields since the store began
# Per-minute metrics hashes live a few days (Sidekiq 7 keeps its per-minute ones hours).
METRICS_TTL = 3 * 24 * 3600
SORTED_SETS = (SCHEDULE, RETRY, DEAD)


def queue(name: str) -> str:
    """Sidekiq's list for queue `name`: LPUSH at the head, popped from the tail."""
    return f"queue:{name}"


def wake(name: str) -> str:
    """A short list difo's client pushes a token into beside every unit, for BLPOP."""
    return f"difo:wake:{name}"


def stat_day(kind: str, day: str) -> str:
    """`stat:processed:YYYY-MM-DD` (kind = processed | failed), a UTC day."""
    return f"stat:{kind}:{day}"


def process(identity: str) -> str:
    """Sidekiq's process hash: info, busy, beat, quiet, rss, rtt_us."""
    return identity


def work(identity: str) -> tuple[str, str]:
    """The busy-worker hash under both names: 6.4.1 reads `:workers`, 6.4.2+ `:work`."""
    return f"{identity}:workers", f"{identity}:work"


def signals(identity: str) -> str:
    """Sidekiq's signal list for a process (`TSTP` quiet, `TERM` stop)."""
    return f"{identity}-signals"


def in_flight(identity: str) -> str:
    """Hash of the units a process has claimed: `<seq>:<queue>` -> payload."""
    return f"difo:inflight:{identity}"


def started(identity: str) -> str:
    """Set of in-flight refs known to have started (recorded for once-orphaned units)."""
    return f"difo:started:{identity}"


def staging(identity: str) -> str:
    """Hash of units a process is moving between places: `<flag>|<owner>|<ref>` -> payload."""
    return f"difo:staging:{identity}"


def metrics(minute: str) -> str:
    """Per-function runs in one UTC minute `YYYYMMDD|HH:MM`: fields `FN|count`,
    `FN|failures`, `FN|ms` and `FN|h<bucket>` (run-time histogram; see difo.stats)."""
    return f"difo:metrics:{minute}"
