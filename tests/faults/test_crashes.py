"""Servers that crash under load: SIGKILLed at random, or killed by a poison pill.

Every unit completes; a unit runs twice only if it was in a killed server's in-flight record
(running, or finished with its ack not yet sent); orphans come back within twice the time a
server needs to be declared dead.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any, cast

import pytest
import redis

import difo
from difo.backends.redis import keys
from difo.client import Client
from tests import fault_functions, functions
from tests.conftest import ServerProcess, wait_for
from tests.faults.support import (
    DEAD_AFTER,
    FAST,
    FAULTS,
    HEARTBEAT,
    RECOVERY_BOUND,
    Report,
    Start,
    completed,
    held,
    identity_of,
    in_flight_records,
    registered,
    runs,
    sized,
)

pytestmark = pytest.mark.slow

FLOW_SECONDS = 5  # the least time units flow in the poison-pill scenario


class Orphans:
    """Kills and when their orphans came back (the dead server's records emptied)."""

    def __init__(self, r: redis.Redis) -> None:
        self.r = r
        self.kills = 0
        self.in_flight = 0  # units held by the killed servers, summed over the kills
        self.pending: dict[str, float] = {}
        self.recoveries: list[float] = []

    def killed(self, server: ServerProcess, at: float) -> None:
        """Count a server that died (by our SIGKILL or its own unit) at monotonic `at`."""
        identity = identity_of(self.r, server.process.pid)
        holding = held(self.r, identity)
        self.kills += 1
        self.in_flight += holding
        if identity is not None and holding:
            self.pending[identity] = at

    def poll(self) -> None:
        now = time.monotonic()
        for identity, at in list(self.pending.items()):
            if not held(self.r, identity):
                self.recoveries.append(now - at)
                del self.pending[identity]

    @property
    def slowest(self) -> float:
        return max(self.recoveries, default=0.0)


def test_servers_killed_at_random_lose_no_unit(
    client: Client, r: redis.Redis, start_server: Start
) -> None:
    """3 servers over N units of 0-50 ms; every few seconds one is SIGKILLed and replaced."""
    tag, total = "crash", sized(3_000, 20_000)
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    report = Report("crashing-servers", enqueued=total, extra={"seed": seed})
    difo.perform_bulk(fault_functions.work, ([tag, i, rng.randint(0, 50)] for i in range(total)))

    def start() -> ServerProcess:
        return start_server("-w", "2", *FAULTS, env=FAST)

    servers = [start() for _ in range(3)]
    registered(r, 3)
    orphans = Orphans(r)
    budget = 60 + total / 50  # seconds: about four times the expected run
    deadline = time.monotonic() + budget
    next_kill = time.monotonic() + rng.uniform(2, 4)
    while completed(r, tag) < total or orphans.pending:
        now = time.monotonic()
        assert now < deadline, f"{completed(r, tag)}/{total} done after {budget:.0f} s"
        orphans.poll()
        if now >= next_kill and completed(r, tag) < total:
            victim = rng.randrange(len(servers))
            servers[victim].kill()
            orphans.killed(servers[victim], now)
            servers[victim] = start()
            next_kill = now + rng.uniform(2, 4)
        time.sleep(0.05)
    wait_for(lambda: in_flight_records(r) == [], timeout=10)  # the last acks go out
    for server in servers:
        assert server.stop() == 0

    report.completed = completed(r, tag)
    report.duplicates = runs(r, tag) - report.completed
    report.recover_s = orphans.slowest
    report.extra.update(kills=orphans.kills, in_flight_at_kills=orphans.in_flight,
                        recoveries=len(orphans.recoveries))
    report.show()
    assert report.lost == 0
    assert orphans.kills >= 2
    assert report.duplicates <= orphans.in_flight
    assert report.recover_s <= RECOVERY_BOUND, (
        f"orphans came back after {report.recover_s:.1f} s; DIFO_DEAD_AFTER={DEAD_AFTER}, "
        f"DIFO_HEARTBEAT={HEARTBEAT}")
    assert r.zcard(keys.DEAD) == 0 and r.zcard(keys.RETRY) == 0
    assert r.llen(keys.queue("default")) == 0


def test_a_poison_pill_dies_after_3_tries_while_units_keep_flowing(
    client: Client, r: redis.Redis, start_server: Start
) -> None:
    """A unit that ends its process, among a steady flow of units over 3 servers that a
    supervisor-like loop restarts whenever one dies."""
    tag = "pill-flow"
    rng = random.Random()

    def start() -> ServerProcess:
        return start_server("-w", "3", *FAULTS, env=FAST)

    servers = [start() for _ in range(3)]
    registered(r, 3)
    orphans = Orphans(r)
    pushed, batch = 0, sized(20, 50)  # per 0.1 s: below what 9 workers run, so beats stay steady

    def push() -> None:
        nonlocal pushed
        difo.perform_bulk(fault_functions.work,
                          [[tag, pushed + i, rng.randint(0, 20)] for i in range(batch)])
        pushed += batch

    push()
    pill = difo.perform(functions.exit_process, "pill")
    report = Report("poison-pill")
    deadline = time.monotonic() + 90
    while (r.zcard(keys.DEAD) == 0 or orphans.pending
           or time.monotonic() - report.started < FLOW_SECONDS):
        assert time.monotonic() < deadline, f"the pill ran {r.llen('results:pill')} times"
        push()
        orphans.poll()
        for index, server in enumerate(servers):
            if server.process.poll() is not None:
                orphans.killed(server, time.monotonic())
                servers[index] = start()
        time.sleep(0.1)
    dead = [json.loads(raw) for raw in cast(list[bytes], r.zrange(keys.DEAD, 0, -1))]
    # A unit blamed beside the pill (see docs/reliability.md) is in the dead set, not lost;
    # it counts once, whether or not it had completed before.
    blamed = {entry["args"][1] for entry in dead if entry["jid"] != pill}

    def unfinished_blamed() -> int:
        return sum(1 for marker in blamed
                   if not r.getbit(fault_functions.done_key(tag), marker))

    try:
        wait_for(lambda: completed(r, tag) + unfinished_blamed() >= pushed,
                 timeout=RECOVERY_BOUND + 20)
    except AssertionError:
        raise AssertionError(
            f"{completed(r, tag)}/{pushed} done; queue {r.llen(keys.queue('default'))}, "
            f"held {in_flight_records(r)}, {_describe(dead)}") from None
    wait_for(lambda: in_flight_records(r) == [], timeout=10)
    for server in servers:
        assert server.stop(timeout=15) == 0

    report.enqueued = pushed
    report.completed = completed(r, tag) + unfinished_blamed()
    report.duplicates = runs(r, tag) - completed(r, tag)
    report.recover_s = orphans.slowest
    report.extra.update(pill_runs=r.llen("results:pill"), restarts=orphans.kills,
                        in_flight_at_kills=orphans.in_flight, blamed_neighbours=len(blamed))
    report.show()
    [entry] = [entry for entry in dead if entry["jid"] == pill]
    assert entry["error_class"] == "difo.PoisonPill"
    assert "orphaned 3 times" in entry["error_message"]
    for other in dead:
        assert other["difo_orphaned"] == 3 and other["error_class"] == "difo.PoisonPill"
    assert r.llen("results:pill") == 3
    assert orphans.kills == 3
    assert report.lost == 0
    assert report.duplicates <= orphans.in_flight
    assert report.recover_s <= RECOVERY_BOUND


def test_units_running_beside_a_poison_pill_are_not_sent_to_dead(
    client: Client, r: redis.Redis, start_server: Start
) -> None:
    pill = difo.perform(functions.exit_process, "pill")
    difo.perform_bulk(fault_functions.work, [["beside", i, 300] for i in range(2)])
    servers = [start_server("-w", "3", *FAULTS, env=FAST) for _ in range(2)]
    deadline = time.monotonic() + 60
    while r.llen("results:pill") < 3 or r.zcard(keys.DEAD) == 0:
        assert time.monotonic() < deadline
        for index, server in enumerate(servers):
            if server.process.poll() is not None:
                servers[index] = start_server("-w", "3", *FAULTS, env=FAST)
        time.sleep(0.1)
    wait_for(lambda: in_flight_records(r) == [] and r.llen(keys.queue("default")) == 0,
             timeout=RECOVERY_BOUND + 10)
    dead = [json.loads(raw) for raw in cast(list[bytes], r.zrange(keys.DEAD, 0, -1))]
    assert [entry["jid"] for entry in dead] == [pill], _describe(dead)
    assert completed(r, "beside") == 2


def _describe(dead: list[dict[str, Any]]) -> str:
    return "dead set: " + "; ".join(f"{e.get('class')} {e.get('args')} {e.get('error_message')}"
                                    for e in dead)
