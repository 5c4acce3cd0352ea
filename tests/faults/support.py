"""What every fault scenario shares: sizes, the tally of units, the one-line report."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import redis

from difo.backends.redis import keys
from tests import fault_functions
from tests.conftest import ServerProcess, wait_for

# DIFO_FAULTS_SCALE=10 (what `make faults` sets) runs the big sizes; 1 is CI-friendly.
SCALE = max(int(os.environ.get("DIFO_FAULTS_SCALE", "1")), 1)
HEARTBEAT, DEAD_AFTER = 1, 3
FAST = {"DIFO_HEARTBEAT": str(HEARTBEAT), "DIFO_DEAD_AFTER": str(DEAD_AFTER)}
# Orphans come back within twice the time a server needs to be declared dead.
RECOVERY_BOUND = 2 * (DEAD_AFTER + HEARTBEAT)
FAULTS = ("--import", "tests.fault_functions")
Start = Callable[..., ServerProcess]


def sized(ci: int, big: int) -> int:
    """`ci` at scale 1, else `ci * SCALE` capped at `big`."""
    return ci if SCALE == 1 else min(ci * SCALE, big)


def completed(r: redis.Redis, tag: str) -> int:
    """Units of `tag` that completed at least once."""
    return int(r.bitcount(fault_functions.done_key(tag)))


def runs(r: redis.Redis, tag: str) -> int:
    """Runs of `tag` that completed (a unit run twice counts twice)."""
    return int(r.scard(fault_functions.runs_key(tag)))


def identity_of(r: redis.Redis, pid: int) -> str | None:
    """The registered identity (`host:pid:nonce`) of the server process `pid`, if any."""
    for name in cast(set[bytes], r.smembers(keys.PROCESSES)):
        identity = name.decode()
        if identity.split(":")[-2] == str(pid):
            return identity
    return None


def held(r: redis.Redis, identity: str | None) -> int:
    """Units in a server's in-flight and staging records."""
    if identity is None:
        return 0
    return int(r.hlen(keys.in_flight(identity))) + int(r.hlen(keys.staging(identity)))


def in_flight_records(r: redis.Redis) -> list[str]:
    names = cast(list[bytes], r.keys("difo:inflight:*") + r.keys("difo:staging:*"))
    return [name.decode() for name in names if r.hlen(name)]


def registered(r: redis.Redis, count: int, timeout: float = 20) -> set[str]:
    def enough() -> bool:
        return len(cast(set[bytes], r.smembers(keys.PROCESSES))) >= count

    wait_for(enough, timeout=timeout)
    return {name.decode() for name in cast(set[bytes], r.smembers(keys.PROCESSES))}


def rss_mb(pid: int) -> float:
    """Resident memory of process `pid` in MB, from /proc."""
    with open(f"/proc/{pid}/status", "rb") as status:
        for line in status:
            if line.startswith(b"VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


@dataclass
class Report:
    """The numbers a scenario measures; `line()` is its one-line summary (see with -s)."""

    scenario: str
    enqueued: int = 0
    completed: int = 0
    duplicates: int = 0
    recover_s: float = 0.0
    started: float = field(default_factory=time.monotonic)
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def lost(self) -> int:
        return self.enqueued - self.completed

    def line(self) -> str:
        took = time.monotonic() - self.started
        parts = [f"enqueued={self.enqueued}", f"completed={self.completed}",
                 f"lost={self.lost}", f"duplicates={self.duplicates}",
                 f"recover={self.recover_s:.2f}s"]
        parts += [f"{name}={value}" for name, value in self.extra.items()]
        return f"faults[{self.scenario}] scale={SCALE} " + " ".join(parts) + f" took={took:.1f}s"

    def show(self) -> None:
        print("\n" + self.line(), flush=True)
