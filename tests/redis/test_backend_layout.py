"""What the Redis backend writes, key by key: Sidekiq's process hash and counters from a beat,
the dead set's trims, and difo's own records left clean (no stale wake-ups, no leaked
`started` marks, no records of recovered processes)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any, cast

import pytest
import redis

from difo import unit
from difo.backends import Backend, ProcessBeat, open_backend
from difo.backends.redis import keys
from difo.config import QueueSpec, Settings
from difo.heartbeat import Heartbeat
from difo.worker import WorkerState

DAY = time.strftime("%Y-%m-%d", time.gmtime())


@pytest.fixture
def backend(redis_url: str) -> Iterator[Backend]:
    opened = open_backend(redis_url)
    yield opened
    opened.close()


def payload(marker: Any, queue: str = "default") -> bytes:
    return unit.encode(unit.build("tests.functions:record", ["layout", marker], queue))


def simple_beat(identity: str) -> ProcessBeat:
    return ProcessBeat(identity=identity, info=b"{}", busy=0, quiet=False, rss_kb=1,
                       concurrency=1)


def heartbeat_for(backend: Backend, identity: str, states: list[WorkerState]) -> Heartbeat:
    settings = Settings(queues=(QueueSpec("critical", 3), QueueSpec("default", 1)),
                        weighted=True, workers=len(states), tag="layout")
    return Heartbeat(backend, identity, settings, states, lambda signal: None, lambda: True)


def test_a_beat_writes_sidekiqs_process_hash(backend: Backend, r: redis.Redis) -> None:
    identity = "host-a:4242:0123456789ab"
    states = [WorkerState(0), WorkerState(1), WorkerState(2)]
    running = payload("running")
    states[1].tid, states[1].current, states[1].started_at = "abc", ("default", running), 1e9
    before = time.time()
    assert heartbeat_for(backend, identity, states).step()
    assert r.sismember("processes", identity)
    stored = cast(dict[bytes, bytes], r.hgetall(identity))
    fields = {k.decode(): v.decode() for k, v in stored.items()}
    assert {"info", "busy", "beat", "quiet", "rss", "rtt_us"} <= set(fields)
    info = json.loads(fields["info"])
    assert info["identity"] == identity
    assert info["queues"] == ["critical", "default"]
    assert info["weights"] == [{"critical": 3, "default": 1}]
    assert before - 1 < info["started_at"] <= time.time()
    assert (info["concurrency"], info["tag"], info["hostname"]) == (3, "layout", info["hostname"])
    assert isinstance(info["pid"], int)
    assert fields["busy"] == "1"
    assert before - 1 < float(fields["beat"]) < time.time() + 1
    assert fields["quiet"] == "true"
    assert int(fields["rss"]) > 0
    assert int(fields["rtt_us"]) >= 0
    assert 0 < r.ttl(identity) <= keys.PROCESS_TTL
    # The busy workers, under both names Sidekiq versions read.
    for work_key in (f"{identity}:workers", f"{identity}:work"):
        work = r.hgetall(work_key)
        assert list(work) == [b"abc"]
        entry = json.loads(work[b"abc"])
        assert entry == {"queue": "default", "payload": running.decode(), "run_at": 1000000000}
        assert 0 < r.ttl(work_key) <= keys.PROCESS_TTL
    # The liveness beat, at Redis's clock.
    score = r.zscore("difo:beats", identity)
    assert score is not None
    seconds, micros = r.time()
    assert seconds + micros / 1e6 - 5 < score <= seconds + micros / 1e6


def test_a_beat_with_no_busy_worker_clears_the_work_hashes(
    backend: Backend, r: redis.Redis
) -> None:
    identity = "host-b:1:000000000000"
    state = WorkerState(0)
    state.current = ("default", payload(0))
    heartbeat = heartbeat_for(backend, identity, [state])
    heartbeat.step()
    assert r.exists(f"{identity}:work", f"{identity}:workers") == 2
    state.current = None
    heartbeat.step()
    assert r.exists(f"{identity}:work", f"{identity}:workers") == 0
    assert r.hget(identity, "busy") == b"0"


def test_beats_add_counts_to_the_totals_and_the_day(backend: Backend, r: redis.Redis) -> None:
    r.set("stat:processed", 100)  # counts written by other servers (or Sidekiq) are kept
    state = WorkerState(0)
    heartbeat = heartbeat_for(backend, "host-c:1:000000000000", [state])
    state.processed, state.failed = 7, 2
    heartbeat.step()
    state.processed, state.failed = 10, 2  # three more, none failed
    heartbeat.step()
    heartbeat.step()  # nothing new: nothing added twice
    assert r.mget("stat:processed", "stat:failed") == [b"110", b"2"]
    assert r.mget(f"stat:processed:{DAY}", f"stat:failed:{DAY}") == [b"10", b"2"]
    ttl = r.ttl(f"stat:processed:{DAY}")
    assert keys.STAT_DAY_TTL - 60 < ttl <= keys.STAT_DAY_TTL


def test_forget_process_removes_the_registry_entries(backend: Backend, r: redis.Redis) -> None:
    identity = "host-d:1:000000000000"
    state = WorkerState(0)
    state.current = ("default", payload(0))
    heartbeat_for(backend, identity, [state]).step()
    backend.forget_process(identity)
    assert not r.sismember("processes", identity)
    assert r.zscore("difo:beats", identity) is None
    assert r.exists(f"{identity}:work", f"{identity}:workers") == 0


def test_kill_keeps_at_most_9999_dead_entries(backend: Backend, r: redis.Redis) -> None:
    """Sidekiq trims with ZREMRANGEBYRANK 0 -max: the newest max-1 entries stay."""
    now = time.time()
    r.zadd("dead", {f"old-{i}": now - 1000 + i / 100 for i in range(keys.DEAD_MAX + 5)})
    backend.push("default", [payload("last")])
    [claimed] = backend.claim("p", ["default"], 1, [], [], 1)
    backend.kill("p", claimed.ref, claimed.raw)
    assert r.zcard("dead") == keys.DEAD_MAX - 1
    assert r.zscore("dead", claimed.raw) is not None
    assert r.zscore("dead", "old-5") is None  # the oldest went first
    assert r.zscore("dead", f"old-{keys.DEAD_MAX + 4}") is not None


def test_a_claim_that_finds_nothing_clears_stale_wake_ups(backend: Backend) -> None:
    """Otherwise an idle server would wake and claim once per stale token."""
    backend.push("quiet", [payload(i, "quiet") for i in range(3)])
    backend.claim("p", ["quiet"], 3, [], [], 1)
    backend.claim("p", ["quiet"], 3, [], [], 4)  # empty: the wake-ups left are stale
    started = time.monotonic()
    assert backend.wait_claim("p", ["quiet"], 0.2, 3, [], [], 7) == []
    assert time.monotonic() - started >= 0.15


def test_the_wake_list_stays_capped(backend: Backend, r: redis.Redis) -> None:
    for i in range(40):
        backend.push("busy", [payload(i, "busy")])
    assert 1 <= r.llen(keys.wake("busy")) <= 16


def test_started_marks_leave_with_their_units(backend: Backend, r: redis.Redis) -> None:
    backend.push("default", [payload(i) for i in range(4)])
    claimed = backend.claim("p", ["default"], 4, [], [], 1)
    refs = [u.ref for u in claimed]
    backend.mark_started("p", refs)
    backend.claim("p", ["default"], 0, [refs[0]], [refs[0]], 5)  # careful ack
    backend.kill("p", refs[1], claimed[1].raw)
    backend.retry_later("p", refs[2], claimed[2].raw, time.time() + 60)
    backend.requeue("p", [(refs[3], "default")])
    assert r.exists(keys.in_flight("p"), keys.started("p")) == 0


def test_recovery_leaves_no_record_of_the_dead_process(backend: Backend, r: redis.Redis) -> None:
    backend.push("default", [payload(i) for i in range(3)])
    backend.beat(simple_beat("gone:1:0"))
    claimed = backend.claim("gone:1:0", ["default"], 2, [], [], 1)
    backend.mark_started("gone:1:0", [claimed[0].ref])
    backend.schedule([(time.time() - 1, payload("due"))])
    backend.stage_due("gone:1:0", 10)
    time.sleep(0.3)
    backend.beat(simple_beat("rescuer"))
    assert len(backend.take_orphans("rescuer", 0.2)) == 3
    dead_keys = [keys.in_flight("gone:1:0"), keys.started("gone:1:0"), keys.staging("gone:1:0")]
    assert r.exists(*dead_keys) == 0
    assert r.zscore(keys.BEATS, "gone:1:0") is None
    assert r.hlen(keys.staging("rescuer")) == 3
    assert r.get(keys.RECOVERY_LOCK) is None  # released for the next recovery


def test_take_orphans_waits_for_a_recovery_in_progress(backend: Backend, r: redis.Redis) -> None:
    backend.push("default", [payload(0)])
    backend.beat(simple_beat("gone:1:0"))
    backend.claim("gone:1:0", ["default"], 1, [], [], 1)
    time.sleep(0.3)
    r.set(keys.RECOVERY_LOCK, "someone-else", px=60_000)
    assert backend.take_orphans("rescuer", 0.2) == []  # another server is recovering
    assert backend.in_flight("gone:1:0") != []
    r.delete(keys.RECOVERY_LOCK)
    assert len(backend.take_orphans("rescuer", 0.2)) == 1
