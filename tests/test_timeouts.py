"""Unit time limits: a unit past its limit is stopped, counted as a failure and retried."""

from __future__ import annotations

import json
import time
from typing import Any

import redis

import difo
from tests import async_functions, timeout_functions
from tests.conftest import wait_for

EXTRA = ("--import", "tests.timeout_functions", "--import", "tests.async_functions")


def test_a_thread_unit_past_its_limit_is_interrupted_and_retried(
        client: Any, r: redis.Redis, start_server: Any) -> None:
    difo.perform_on("to-loop", timeout_functions.python_loop, "loop")
    server = start_server(*EXTRA, "-q", "to-loop", "--poll-interval", "0.1")
    wait_for(lambda: r.zcard("dead") == 1, timeout=20)
    dead = json.loads(r.zrange("dead", 0, -1)[0])
    assert dead["error_class"] == "difo.errors.UnitTimeout"
    assert "0.5 s limit" in dead["error_message"]
    assert r.llen("started:loop") == 2 and r.llen("results:loop") == 0
    # The worker thread survived: it runs the next unit.
    difo.perform_on("to-loop", timeout_functions.quick, "after")
    wait_for(lambda: r.llen("results:after") == 1)
    assert server.stop() == 0
    assert int(r.get("stat:failed") or 0) == 2


def test_unit_timeout_setting_limits_every_unit_and_supervises(
        client: Any, r: redis.Redis, start_server: Any) -> None:
    difo.perform_on("to-env", timeout_functions.unlimited_sleep, "env", 30)
    difo.perform_on("to-env", async_functions.unlimited, "aenv", 30)
    server = start_server(*EXTRA, "-q", "to-env", "--unit-timeout", "0.5",
                          "--poll-interval", "0.1")
    wait_for(lambda: r.zcard("retry") + r.zcard("dead") >= 2
             and r.llen("started:env") >= 1, timeout=20)
    classes = {json.loads(x)["error_class"] for x in r.zrange("retry", 0, -1)}
    assert classes == {"difo.errors.UnitTimeout"}
    # --unit-timeout runs the server under the supervisor: the child is another process.
    pids = {int(x) for x in r.lrange("started:env", 0, -1)}
    assert server.process.pid not in pids
    assert server.stop() == 0


def test_a_thread_that_will_not_stop_fails_its_unit_and_restarts_the_process(
        client: Any, r: redis.Redis, start_server: Any) -> None:
    difo.perform_on("to-stuck", timeout_functions.stubborn, "stuck")
    server = start_server(*EXTRA, "-q", "to-stuck", "--unit-timeout", "30",
                          env={"DIFO_TIMEOUT": "1"})
    wait_for(lambda: r.llen("started:stuck") == 1)
    first_pid = int(r.lindex("started:stuck", 0))
    # The watchdog's grace is 5 s; the unit then goes to dead (retry=0), the child restarts.
    wait_for(lambda: r.zcard("dead") == 1, timeout=20)
    dead = json.loads(r.zrange("dead", 0, -1)[0])
    assert "did not stop" in dead["error_message"]
    difo.perform_on("to-stuck", timeout_functions.quick, "next")
    wait_for(lambda: r.llen("results:next") == 1, timeout=20)
    assert int(r.lindex("results:next", 0)) != first_pid
    assert r.llen("queue:to-stuck") == 0
    started = time.monotonic()
    assert server.stop() == 0
    assert time.monotonic() - started < 15
