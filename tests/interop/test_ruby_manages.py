"""Ruby manages, difo obeys: deleting, retrying and killing difo's units through Sidekiq
6.4.1's own API acts on them, and Sidekiq::Process#quiet! / #stop! quiet and stop a difo
server, and #dump_threads makes it log its threads (its heartbeat pops one signal from
`IDENTITY-signals` per beat).
"""

from __future__ import annotations

import time
from typing import Any

import redis

import difo
from difo.api import DeadSet, Queue, RetrySet, ScheduledSet
from difo.client import Client
from tests.conftest import wait_for
from tests.interop import jobs
from tests.interop.ruby import Sidekiq, identity_of, process_with_pid, runs, wait_runs

EXTRA = ("--import", "tests.interop.jobs")
FAST = {"DIFO_HEARTBEAT": "1", "DIFO_DEAD_AFTER": "3"}


def test_ruby_deletes_difo_units(
    client: Client, sidekiq: Sidekiq, start_server: Any, r: redis.Redis
) -> None:
    kept = difo.perform_on("py-del", jobs.record, "kept")
    deleted = difo.perform_on("py-del", jobs.record, "deleted")
    scheduled = difo.perform_in(300, jobs.record, "scheduled-deleted", queue="py-del")
    retried = jobs.retried.perform_on("py-del-fail", "retry-deleted")
    died = jobs.dead_at_once.perform_on("py-del-fail", "dead-deleted")
    failing = start_server(*EXTRA, "-q", "py-del-fail")
    wait_for(lambda: r.zcard("retry") == 1 and r.zcard("dead") == 1)
    assert failing.stop() == 0

    assert sidekiq.act("queue:py-del", deleted, "delete")
    assert sidekiq.act("schedule", scheduled, "delete")
    assert sidekiq.act("retry", retried, "delete")
    assert sidekiq.act("dead", died, "delete")

    queue = Queue("py-del", backend=client.backend)
    assert [entry.jid for entry in queue] == [kept]
    assert ScheduledSet(backend=client.backend).size == 0
    assert RetrySet(backend=client.backend).size == 0
    assert DeadSet(backend=client.backend).size == 0
    start_server(*EXTRA, "-q", "py-del")
    wait_runs(r, "kept", 1)
    time.sleep(1)
    assert runs(r, "deleted") == [] and runs(r, "scheduled-deleted") == []


def test_ruby_retries_kills_and_enqueues_difo_units(
    client: Client, sidekiq: Sidekiq, start_server: Any, r: redis.Redis
) -> None:
    from_retry = jobs.retried_until_allowed.perform_on("py-manage", "from-retry")
    killed = jobs.retried_until_allowed.perform_on("py-manage", "killed")
    from_dead = jobs.dead_until_allowed.perform_on("py-manage", "from-dead")
    early = difo.perform_in(300, jobs.record, "early", queue="py-manage")
    server = start_server(*EXTRA, "-q", "py-manage", env=FAST)
    wait_for(lambda: r.zcard("retry") == 2 and r.zcard("dead") == 1)
    r.set("allow:from-retry", 1)
    r.set("allow:from-dead", 1)

    assert sidekiq.act("retry", from_retry, "retry")  # "Retry now"
    assert sidekiq.act("retry", killed, "kill")  # "Kill"
    assert sidekiq.act("dead", from_dead, "retry")  # "Retry now" from the morgue
    assert sidekiq.act("schedule", early, "add_to_queue")  # "Add to queue"

    second = wait_runs(r, "from-retry", 2)[1]
    assert second["jid"] == from_retry and second["allowed"] is True
    # Sidekiq lowers retry_count by one before a manual retry; difo runs what it is given.
    assert second["retry_count"] == -1
    assert wait_runs(r, "from-dead", 2)[1]["allowed"] is True
    assert wait_runs(r, "early", 1)[0]["jid"] == early

    dead = DeadSet(backend=client.backend)
    entry = dead.find(killed)
    assert entry is not None
    assert entry.error_class == "RuntimeError" and entry.retry_count == 0
    assert entry.error_message == "killed is not allowed yet"
    assert dead.size == 1 and RetrySet(backend=client.backend).size == 0
    assert len(runs(r, "killed")) == 1

    assert server.stop() == 0
    stats = sidekiq.view()["stats"]
    assert (stats["processed"], stats["failed"]) == (6, 3)


def test_ruby_quiets_and_stops_a_difo_server(
    client: Client, sidekiq: Sidekiq, start_server: Any, r: redis.Redis
) -> None:
    server = start_server(*EXTRA, "-q", "py-signal", env=FAST)
    identity = identity_of(sidekiq, server.process.pid)

    def stopping() -> bool:
        process = process_with_pid(sidekiq.view(), server.process.pid)
        return bool(process and process["stopping?"])

    assert sidekiq.signal(identity, "quiet")
    wait_for(stopping, timeout=10, interval=0.2)
    process = process_with_pid(sidekiq.view(), server.process.pid)
    assert process is not None and process["quiet"] == "true"
    waiting = difo.perform_on("py-signal", jobs.record, "after-quiet")
    time.sleep(2.5)  # more than the 1 s wake-up bound and two beats
    assert runs(r, "after-quiet") == []
    assert [entry.jid for entry in Queue("py-signal", backend=client.backend)] == [waiting]
    assert server.process.poll() is None  # quiet, still running

    # Sidekiq's "dump threads" (TTIN): the server logs every thread's stack.
    assert sidekiq.signal(identity, "dump_threads")
    wait_for(lambda: "in run\n" in server.log() and "heartbeat.py" in server.log(), timeout=10)

    assert sidekiq.signal(identity, "stop")
    assert server.process.wait(15) == 0
    view = sidekiq.view()
    assert process_with_pid(view, server.process.pid) is None
    assert view["stats"]["processes_size"] == 0
    assert [job["jid"] for job in view["queues"]["py-signal"]["jobs"]] == [waiting]  # not lost
    assert r.llen(f"{identity}-signals") == 0  # every signal consumed
