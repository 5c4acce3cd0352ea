"""A release that fails after its units were staged: the units stay in this server's staging
record, and the next pass (or the stop) releases them, since no other server would while
this one lives. The failure is real: a Redis ACL user that may not write the queue."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from difo import unit
from difo.backends import Backend, ProcessBeat, open_backend
from difo.backends.redis import keys
from difo.config import Settings
from difo.errors import BackendError
from difo.heartbeat import Heartbeat
from difo.scheduler import Scheduler
from tests.conftest import RedisServer

USER = "difo-no-queues"


@pytest.fixture
def limited(redis_server: RedisServer, redis_url: str, r: redis.Redis) -> Iterator[Backend]:
    """A backend whose Redis user can touch every key but the queues."""
    r.acl_setuser(USER, enabled=True, passwords=["+secret"], commands=["+@all"],
                  keys=["difo:*", "schedule", "retry", "dead", "queues", "processes", "gone:*"])
    backend = open_backend(f"redis://{USER}:secret@127.0.0.1:{redis_server.port}/0")
    yield backend
    backend.close()
    r.acl_deluser(USER)


def allow_queues(r: redis.Redis) -> None:
    r.acl_setuser(USER, enabled=True, keys=["queue:*"])


def test_a_failed_promotion_is_released_by_the_next_pass(
    limited: Backend, r: redis.Redis
) -> None:
    raw = unit.encode(unit.build("tests.functions:record", ["x", 1], "default", enqueued=False))
    r.zadd("schedule", {raw: time.time() - 1})
    scheduler = Scheduler(limited, "me", 1.0)
    with pytest.raises(BackendError):
        scheduler.step()
    assert r.hlen(keys.staging("me")) == 1  # staged, not lost, not pushed
    assert r.llen(keys.queue("default")) == 0
    allow_queues(r)
    scheduler.step()
    assert r.hlen(keys.staging("me")) == 0
    [landed] = r.lrange(keys.queue("default"), 0, -1)
    assert unit.decode(landed).args == ["x", 1]


def test_failed_orphan_releases_are_retried_by_the_next_recovery(
    limited: Backend, redis_url: str, r: redis.Redis
) -> None:
    full = open_backend(redis_url)
    raws = [unit.encode(unit.build("tests.functions:record", ["y", i], "default"))
            for i in range(3)]
    full.push("default", raws)
    full.beat(ProcessBeat(identity="gone:1:0", info=b"{}", busy=0, quiet=False, rss_kb=1,
                          concurrency=1))
    full.claim("gone:1:0", ["default"], 3, [], [], 1)
    full.close()
    time.sleep(0.3)
    settings = Settings(dead_after=0.2, heartbeat=0.1)
    heartbeat = Heartbeat(limited, "rescuer", settings, [], lambda name: None, lambda: False)
    assert heartbeat.recover() == 0  # taken, but the release failed
    assert r.hlen(keys.staging("rescuer")) == 3
    allow_queues(r)
    heartbeat.recover()
    assert r.hlen(keys.staging("rescuer")) == 0
    queued = [unit.decode(raw).args for raw in reversed(r.lrange(keys.queue("default"), 0, -1))]
    assert queued == [["y", 0], ["y", 1], ["y", 2]]
