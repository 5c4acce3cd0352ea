"""difo enqueues, Ruby reads: Sidekiq 6.4.1's own API (Queue, ScheduledSet, RetrySet,
DeadSet, Stats, History, ProcessSet, Workers) lists what difo wrote, with the right class,
args, jid, queue, times (float seconds, dates near now), error fields and backtraces, and
its numbers equal those of difo's own API (difo.api.Stats, ProcessSet, Workers).
"""

from __future__ import annotations

import socket
import time
from typing import Any

import redis

import difo
from difo.api import ProcessSet, Stats, Workers
from difo.client import Client
from tests.conftest import wait_for
from tests.interop import jobs
from tests.interop.ruby import (
    Sidekiq,
    by_jid,
    identity_of,
    near,
    process_with_pid,
    total,
    wait_runs,
)

EXTRA = ("--import", "tests.interop.jobs")
FAST = {"DIFO_HEARTBEAT": "1", "DIFO_DEAD_AFTER": "3"}


def test_ruby_lists_difo_units_in_queues_and_sets(
    client: Client, sidekiq: Sidekiq, start_server: Any, r: redis.Redis
) -> None:
    args = ["waiting", 1, 2.5, None, [], {"k": {"deep": [True]}}]
    waiting = difo.perform_on("py-waiting", jobs.record, *args)
    default = difo.perform(jobs.record, "default-queue")  # Sidekiq's latency reads "default"
    bulk = difo.perform_bulk(jobs.record, [["bulk", 0], ["bulk", 1]], queue="py-waiting")
    later = difo.perform_in(300, jobs.record, "later", queue="py-waiting")
    retried = jobs.retried.perform_on("py-fail", "retried")
    dead = jobs.dead_at_once.perform_on("py-fail", "dead")
    server = start_server(*EXTRA, "-q", "py-fail")
    wait_runs(r, "retried", 1)
    wait_runs(r, "dead", 1)
    wait_for(lambda: r.zcard("retry") == 1 and r.zcard("dead") == 1)
    assert server.stop() == 0  # a graceful stop flushes the counts
    now = time.time()
    view = sidekiq.view()

    queue = view["queues"]["py-waiting"]
    assert queue["size"] == 3
    assert 0 <= queue["latency"] < 60
    listed = by_jid(queue["jobs"])
    assert sorted(listed) == sorted([waiting, *bulk])
    assert [job["jid"] for job in queue["jobs"]] == [bulk[1], bulk[0], waiting]  # newest first
    assert_unit(listed[waiting], "tests.interop.jobs:record", args, "py-waiting", now)
    for position, jid in enumerate(bulk):
        assert_unit(listed[jid], "tests.interop.jobs:record", ["bulk", position],
                    "py-waiting", now)
    assert listed[bulk[0]]["item"]["created_at"] == listed[bulk[1]]["item"]["created_at"]

    [scheduled] = view["scheduled"]["jobs"]
    assert scheduled["jid"] == later
    assert_unit(scheduled, "tests.interop.jobs:record", ["later"], "py-waiting", now,
                enqueued=False)
    assert abs(scheduled["score"] - (now + 300)) < 60
    assert near(scheduled["at_iso"], now + 300)

    [retry] = view["retries"]["jobs"]
    assert retry["jid"] == retried
    assert_unit(retry, "tests.interop.jobs:retried", ["retried"], "py-fail", now)
    assert_error(retry, "RuntimeError", "retried retried failed", now)
    assert retry["item"]["retry"] == 3
    assert 15 <= retry["score"] - retry["item"]["failed_at"] <= 24.01
    assert retry["backtrace"][0].startswith(jobs.__file__.removesuffix("c"))
    assert "in `retried'" in retry["backtrace"][0]

    [died] = view["dead"]["jobs"]
    assert died["jid"] == dead
    assert_unit(died, "tests.interop.jobs:dead_at_once", ["dead"], "py-fail", now)
    assert_error(died, "KeyError", "'dead'", now)
    assert len(died["backtrace"]) == 2  # backtrace=2 keeps two lines
    assert abs(died["score"] - now) < 60

    assert [job["jid"] for job in view["queues"]["default"]["jobs"]] == [default]

    stats = view["stats"]
    assert stats["processed"] == 2 and stats["failed"] == 2
    assert (stats["enqueued"], stats["scheduled_size"]) == (4, 1)
    assert (stats["retry_size"], stats["dead_size"]) == (1, 1)
    assert stats["queues"] == {"py-waiting": 3, "py-fail": 0, "default": 1}
    assert 0 < stats["default_queue_latency"] < 60
    assert total(view["history"]["processed"]) == 2
    assert total(view["history"]["failed"]) == 2
    # The stopped server left the registry.
    assert view["processes"] == [] and stats["processes_size"] == 0
    assert_same_stats(view, Stats(backend=client.backend))


def test_ruby_sees_difo_servers_and_their_busy_workers(
    client: Client, sidekiq: Sidekiq, start_server: Any, r: redis.Redis
) -> None:
    busy = start_server(*EXTRA, "-q", "py-busy py-other", "-w", "3", "--tag",
                        "interop", env=FAST)
    idle = start_server(*EXTRA, "-q", "py-idle", "-w", "2", env=FAST)
    jid = difo.perform_on("py-busy", jobs.sleep, "busy", 30)
    [run] = wait_runs(r, "busy", 1)
    started = time.time()
    wait_for(lambda: sidekiq.view()["workers"]["size"] == 1, timeout=10, interval=0.2)
    view = sidekiq.view()

    busy_process = process_with_pid(view, busy.process.pid)
    idle_process = process_with_pid(view, idle.process.pid)
    assert busy_process is not None and idle_process is not None
    for process, pid in ((busy_process, busy.process.pid), (idle_process, idle.process.pid)):
        assert process["identity"].startswith(f"{socket.gethostname()}:{pid}:")
        assert process["hostname"] == socket.gethostname()
        assert abs(process["started_at"] - started) < 60
        assert near(process["started_at_iso"], started)
        assert abs(process["beat"] - time.time()) < 5
        assert process["quiet"] == "false" and process["stopping?"] is False
        assert "difo" in process["labels"]
        assert process["rss"] > 0
    assert busy_process["concurrency"] == 3 and idle_process["concurrency"] == 2
    assert busy_process["queues"] == ["py-busy", "py-other"]
    assert idle_process["queues"] == ["py-idle"]
    assert busy_process["tag"] == "interop"
    assert (busy_process["busy"], idle_process["busy"]) == (1, 0)
    assert view["stats"]["processes_size"] == 2
    assert view["stats"]["workers_size"] == 1

    [work] = view["workers"]["list"]
    assert work["process"] == busy_process["identity"]
    assert (work["jid"], work["class"], work["args"]) == (jid, "tests.interop.jobs:sleep",
                                                          ["busy", 30])
    assert work["queue"] == "py-busy"
    assert isinstance(work["run_at"], int)
    assert abs(work["run_at"] - run["ran_at"]) <= 2
    assert near(work["run_at_iso"], run["ran_at"], within=2)

    # difo's own API lists the same servers and work.
    mine = {server.identity: server for server in ProcessSet(backend=client.backend)}
    assert sorted(mine) == sorted(p["identity"] for p in view["processes"])
    for theirs in view["processes"]:
        server = mine[theirs["identity"]]
        assert (server.pid, server.hostname, server.tag) == (
            theirs["pid"], theirs["hostname"], theirs["tag"])
        assert (server.concurrency, server.queues, server.labels) == (
            theirs["concurrency"], theirs["queues"], theirs["labels"])
        assert (server.busy, server.is_quiet) == (theirs["busy"], theirs["stopping?"])
        assert server.started_at == theirs["started_at"]
    [difo_work] = list(Workers(backend=client.backend))
    assert (difo_work.process, difo_work.jid, difo_work.function, difo_work.args) == (
        work["process"], work["jid"], work["class"], work["args"])
    assert (difo_work.queue, difo_work.run_at) == (work["queue"], work["run_at"])
    assert_same_stats(sidekiq.view(), Stats(backend=client.backend), moving=True)


def test_a_killed_difo_server_leaves_rubys_process_set(
    client: Client, sidekiq: Sidekiq, start_server: Any, r: redis.Redis
) -> None:
    """Sidekiq forgets a dead process only when its record expires (60 s); difo's recovery
    removes a dead difo server from the registry as soon as its units are put back."""
    doomed = start_server(*EXTRA, "-q", "py-kill", env=FAST)
    jid = difo.perform_on("py-kill", jobs.sleep, "orphan", 30)
    wait_runs(r, "orphan", 1)
    identity = identity_of(sidekiq, doomed.process.pid)
    wait_for(lambda: sidekiq.view()["workers"]["size"] == 1, interval=0.2)
    doomed.kill()
    survivor = start_server(*EXTRA, "-q", "py-kill", env=FAST)

    again = wait_runs(r, "orphan", 2, timeout=30)[1]
    assert again["jid"] == jid and again["pid"] == survivor.process.pid

    survivor_identity = identity_of(sidekiq, survivor.process.pid)

    def only_survivor() -> bool:
        view = sidekiq.view()
        return ([p["identity"] for p in view["processes"]] == [survivor_identity]
                and [w["process"] for w in view["workers"]["list"]] == [survivor_identity])

    wait_for(only_survivor, timeout=10, interval=0.2)
    [work] = sidekiq.view()["workers"]["list"]
    assert work["jid"] == jid and identity != survivor_identity


def test_ruby_stats_equal_difo_counts_after_heartbeats(
    client: Client, sidekiq: Sidekiq, start_server: Any, r: redis.Redis
) -> None:
    """With no stop, the counts reach Sidekiq's Stats and History with the next beat."""
    start_server(*EXTRA, "-q", "py-count", env=FAST)
    difo.perform_bulk(jobs.record, [["counted", n] for n in range(7)], queue="py-count")
    for n in range(3):
        difo.perform_on("py-count", jobs.fail, "failed", n)  # retry: true -> the retry set
    wait_runs(r, "counted", 7)
    wait_runs(r, "failed", 3)

    def counted() -> bool:
        stats = sidekiq.view()["stats"]
        return (stats["processed"], stats["failed"]) == (10, 3)

    wait_for(counted, timeout=10, interval=0.3)
    view = sidekiq.view()
    assert (total(view["history"]["processed"]), total(view["history"]["failed"])) == (10, 3)
    assert view["stats"]["retry_size"] == 3
    assert_same_stats(view, Stats(backend=client.backend), moving=True)


def assert_same_stats(view: dict[str, Any], stats: Stats, *, moving: bool = False) -> None:
    """Sidekiq's Stats and History (`view`) equal difo's. `moving`: servers still run, so
    the busy count may differ by a beat between the two reads."""
    theirs = view["stats"]
    assert (stats.processed, stats.failed) == (theirs["processed"], theirs["failed"])
    assert (stats.enqueued, stats.queues) == (theirs["enqueued"], theirs["queues"])
    assert (stats.scheduled_size, stats.retry_size, stats.dead_size) == (
        theirs["scheduled_size"], theirs["retry_size"], theirs["dead_size"])
    assert stats.processes_size == theirs["processes_size"]
    if not moving:
        assert stats.workers_size == theirs["workers_size"]
    assert abs(stats.default_queue_latency - theirs["default_queue_latency"]) < 2
    days = {day.date: day for day in stats.history(3)}
    assert {date: day.processed for date, day in days.items()} == view["history"]["processed"]
    assert {date: day.failed for date, day in days.items()} == view["history"]["failed"]


def assert_unit(job: dict[str, Any], function: str, args: list[Any], queue: str, now: float,
                *, enqueued: bool = True) -> None:
    item = job["item"]
    assert (job["class"], job["display_class"]) == (function, function)
    assert job["args"] == args and job["display_args"] == args
    assert job["queue"] == queue and item["queue"] == queue
    assert len(job["jid"]) == 24 and int(job["jid"], 16) >= 0
    assert isinstance(item["created_at"], float)
    assert abs(item["created_at"] - now) < 60
    assert near(job["created_at_iso"], item["created_at"], within=0.001)
    assert near(job["created_at_iso"], now)
    if enqueued:
        assert isinstance(item["enqueued_at"], float)
        assert item["created_at"] <= item["enqueued_at"] <= now
        assert near(job["enqueued_at_iso"], now)
        assert 0 <= job["latency"] < 60
    else:
        assert "enqueued_at" not in item and job["enqueued_at_iso"] is None
    assert job["tags"] == []


def assert_error(job: dict[str, Any], error_class: str, message: str, now: float) -> None:
    item = job["item"]
    assert (item["error_class"], item["error_message"]) == (error_class, message)
    assert isinstance(item["failed_at"], float) and abs(item["failed_at"] - now) < 60
    assert item["retry_count"] == 0 and "retried_at" not in item
    assert job["error?"] is True
    assert isinstance(job["backtrace"], list) and job["backtrace"]
