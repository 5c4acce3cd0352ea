"""`difo server --processes N`: a supervisor forks servers, restarts, recycles and stops them."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import redis

import difo
from difo.api import ProcessSet
from tests import functions, timeout_functions
from tests.conftest import wait_for

EXTRA = ("--import", "tests.timeout_functions")
FAST = {"DIFO_HEARTBEAT": "1", "DIFO_DEAD_AFTER": "3"}


def server_pids(redis_url: str) -> set[int]:
    return {process.pid for process in ProcessSet(backend=redis_url)}


def test_processes_serve_one_queue_and_stop_together(client: Any, redis_url: str,
                                                     r: redis.Redis, start_server: Any) -> None:
    server = start_server(*EXTRA, "-q", "sv-many", "-p", "2", "-w", "2", env=FAST)
    wait_for(lambda: len(server_pids(redis_url)) == 2)
    assert server.process.pid not in server_pids(redis_url)
    difo.perform_bulk(functions.sleep_then_record, [["many", 0.2, n] for n in range(20)],
                      queue="sv-many")
    wait_for(lambda: r.llen("results:many") == 20, timeout=20)
    assert server.stop() == 0
    assert server_pids(redis_url) == set()
    assert r.keys("difo:inflight:*") == []


def test_a_killed_child_is_restarted_and_its_units_recovered(
        client: Any, redis_url: str, r: redis.Redis, start_server: Any) -> None:
    server = start_server(*EXTRA, "-q", "sv-kill", "-p", "2", env=FAST)
    wait_for(lambda: len(server_pids(redis_url)) == 2)
    difo.perform_on("sv-kill", functions.sleep_then_record, "kill", 2.0, "x")
    wait_for(lambda: r.llen("started:kill") == 1)
    victims = server_pids(redis_url)
    # Kill both children: whichever held the unit, it must run again in a new process.
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: len(server_pids(redis_url) - victims) == 2, timeout=20)
    wait_for(lambda: r.llen("results:kill") >= 1, timeout=25)
    assert server.stop() == 0


def test_a_child_stopped_through_the_backend_is_not_restarted(
        client: Any, redis_url: str, r: redis.Redis, start_server: Any) -> None:
    server = start_server(*EXTRA, "-q", "sv-stop", "-p", "2", env=FAST)
    wait_for(lambda: len(list(ProcessSet(backend=redis_url))) == 2)
    first, second = ProcessSet(backend=redis_url)
    first.stop()  # Sidekiq's Process#stop!
    wait_for(lambda: server_pids(redis_url) == {second.pid}, timeout=15)
    time.sleep(2.5)  # a restart would have come by now
    assert server_pids(redis_url) == {second.pid}
    second.stop()
    assert server.process.wait(15) == 0  # no child left: the supervisor leaves too


def test_children_are_recycled_after_max_units_without_losing_any(
        client: Any, redis_url: str, r: redis.Redis, start_server: Any) -> None:
    difo.perform_bulk(timeout_functions.pid_after, [["recycle", 0.1] for _ in range(30)],
                      queue="sv-recycle")
    server = start_server(*EXTRA, "-q", "sv-recycle", "-w", "1", "--prefetch", "0",
                          "--max-units-per-child", "10", env=FAST)
    wait_for(lambda: r.llen("results:recycle") >= 30, timeout=30)
    pids = {int(x) for x in r.lrange("results:recycle", 0, -1)}
    assert len(pids) >= 2  # recycled at least once
    assert server.stop() == 0
    assert r.llen("results:recycle") >= 30 and r.llen("queue:sv-recycle") == 0
    assert r.keys("difo:inflight:*") == []
    assert int(r.get("stat:processed") or 0) >= 30
