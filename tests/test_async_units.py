"""async def units run on the server's event loop, with every guarantee of thread units."""

from __future__ import annotations

import json
import signal
import time
from typing import Any

import redis

import difo
from tests import async_functions, functions
from tests.conftest import wait_for

EXTRA = ("--import", "tests.async_functions")


def test_async_units_run_with_their_context(client: Any, r: redis.Redis,
                                            start_server: Any) -> None:
    jid = difo.perform_on("aio-ctx", async_functions.record_context, "ctx")
    difo.perform_on("aio-ctx", async_functions.record, "plain", 1, [2])
    server = start_server(*EXTRA, "-q", "aio-ctx")
    wait_for(lambda: r.llen("results:ctx") == 1 and r.llen("results:plain") == 1)
    assert json.loads(r.lindex("results:ctx", 0)) == {"jid": jid, "queue": "aio-ctx"}
    assert json.loads(r.lindex("results:plain", 0)) == [1, [2]]
    assert server.stop() == 0
    assert int(r.get("stat:processed") or 0) == 2
    assert r.keys("difo:inflight:*") == []


def test_many_async_units_share_one_worker_thread(client: Any, r: redis.Redis,
                                                  start_server: Any) -> None:
    difo.perform_bulk(async_functions.sleep_then_record,
                      [["many", 1.0, n] for n in range(60)], queue="aio-many")
    started = time.monotonic()
    server = start_server(*EXTRA, "-q", "aio-many", "-w", "1", "--async-workers", "50")
    wait_for(lambda: r.llen("results:many") == 60, timeout=20)
    # 60 one-second units on one thread: concurrent on the loop, so two rounds, not 60 s.
    assert time.monotonic() - started < 12
    assert sorted(json.loads(x) for x in r.lrange("results:many", 0, -1)) == list(range(60))
    assert server.stop() == 0


def test_async_slots_bound_concurrency_and_prefetch(client: Any, r: redis.Redis,
                                                    start_server: Any) -> None:
    difo.perform_bulk(async_functions.sleep_then_record,
                      [["bound", 1.0, n] for n in range(12)], queue="aio-bound")
    server = start_server(*EXTRA, "-q", "aio-bound", "-w", "1", "--async-workers", "4",
                          "--prefetch", "1")
    wait_for(lambda: r.llen("started:bound") >= 4)
    time.sleep(0.3)
    assert r.llen("started:bound") == 4  # four slots: the rest wait
    inflight = r.keys("difo:inflight:*")
    assert len(inflight) == 1
    # 4 running, at most 1 on the worker thread waiting for a slot, 1 prefetched.
    assert r.hlen(inflight[0]) <= 6
    wait_for(lambda: r.llen("results:bound") == 12, timeout=20)
    assert server.stop() == 0


def test_a_failing_async_unit_is_retried_then_dead(client: Any, r: redis.Redis,
                                                    start_server: Any) -> None:
    difo.perform_on("aio-fail", async_functions.fail, "f")
    server = start_server(*EXTRA, "-q", "aio-fail", "--poll-interval", "0.1")
    wait_for(lambda: r.zcard("dead") == 1, timeout=20)
    assert r.llen("results:f") == 2
    dead = json.loads(r.zrange("dead", 0, -1)[0])
    assert dead["error_class"] == "ValueError" and dead["retry_count"] == 1
    assert server.stop() == 0
    assert int(r.get("stat:failed") or 0) == 2


def test_an_async_unit_past_its_timeout_is_cancelled_and_failed(client: Any, r: redis.Redis,
                                                                start_server: Any) -> None:
    difo.perform_on("aio-slow", async_functions.too_slow, "slow")
    server = start_server(*EXTRA, "-q", "aio-slow", "--poll-interval", "0.1")
    wait_for(lambda: r.zcard("dead") == 1, timeout=20)
    dead = json.loads(r.zrange("dead", 0, -1)[0])
    assert dead["error_class"] == "difo.errors.UnitTimeout", dead
    assert "0.5 s" in dead["error_message"]
    assert r.llen("started:slow") == 2 and r.llen("results:slow") == 0
    assert server.stop() == 0


def test_graceful_stop_lets_async_units_finish(client: Any, r: redis.Redis,
                                               start_server: Any) -> None:
    difo.perform_bulk(async_functions.sleep_then_record, [["grace", 1.5, n] for n in range(5)],
                      queue="aio-grace")
    server = start_server(*EXTRA, "-q", "aio-grace", "-w", "2")
    wait_for(lambda: r.llen("started:grace") == 5)
    server.signal(signal.SIGTERM)
    assert server.process.wait(20) == 0
    assert r.llen("results:grace") == 5
    assert r.llen("queue:aio-grace") == 0 and r.keys("difo:inflight:*") == []


def test_async_units_past_the_grace_period_are_cancelled_and_put_back(
        client: Any, r: redis.Redis, start_server: Any) -> None:
    difo.perform_bulk(async_functions.sleep_then_record, [["cut", 60, n] for n in range(3)],
                      queue="aio-cut")
    server = start_server(*EXTRA, "-q", "aio-cut", "-t", "1")
    wait_for(lambda: r.llen("started:cut") == 3)
    stopped = time.monotonic()
    server.signal(signal.SIGTERM)
    assert server.process.wait(20) == 0
    assert time.monotonic() - stopped < 10
    assert r.llen("results:cut") == 0
    assert r.llen("queue:aio-cut") == 3  # back, not failed
    assert r.zcard("retry") == 0 and r.zcard("dead") == 0
    assert r.keys("difo:inflight:*") == []
    assert int(r.get("stat:failed") or 0) == 0


def test_sync_and_async_units_side_by_side(client: Any, r: redis.Redis,
                                           start_server: Any) -> None:
    for n in range(20):
        difo.perform_on("aio-mix", async_functions.record, "mix", n)
        difo.perform_on("aio-mix", functions.record, "mix", n)
    server = start_server(*EXTRA, "-q", "aio-mix", "-w", "2")
    wait_for(lambda: r.llen("results:mix") == 40)
    assert server.stop() == 0
    assert int(r.get("stat:processed") or 0) == 40
