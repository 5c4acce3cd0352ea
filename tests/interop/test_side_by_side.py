"""A Ruby Sidekiq server and a difo server on one Redis, each on its own queues: each runs
only its own units (immediate and scheduled, whichever scheduler promotes them), neither
touches the other's, and Sidekiq's counters add up both.
"""

from __future__ import annotations

import json
import time
from typing import Any, cast

import redis

import difo
from difo.api import ProcessSet, Stats
from difo.client import Client
from tests.conftest import wait_for
from tests.interop import jobs
from tests.interop.ruby import Sidekiq, identity_of, process_with_pid, runs, total, wait_runs

EXTRA = ("--import", "tests.interop.jobs")
FAST = {"DIFO_HEARTBEAT": "1", "DIFO_DEAD_AFTER": "3"}
RUBY = "RubyRecorder"  # tests/interop/worker.rb
RECORD = "tests.interop.jobs:record"


def test_ruby_and_difo_servers_share_a_redis(
    client: Client, sidekiq: Sidekiq, start_server: Any, start_ruby_server: Any,
    r: redis.Redis,
) -> None:
    ruby = start_ruby_server("-q", "rbonly", "-c", "2", "-t", "5")
    python = start_server(*EXTRA, "-q", "pyonly", env=FAST)
    soon = time.time() + 1.5
    pushed = sidekiq.push(
        {"class": RUBY, "queue": "rbonly", "args": [["rb", n] for n in range(5)],
         "bulk": True},
        {"class": RUBY, "queue": "rbonly", "args": ["fail", 0], "retry": False},
        {"class": RUBY, "queue": "rbonly", "args": ["rb-later", 0], "at": soon},
        # Ruby's client enqueueing for difo, beside difo's own client.
        {"class": RECORD, "queue": "pyonly", "args": [["py", n] for n in range(5, 8)],
         "bulk": True},
        {"class": "tests.interop.jobs:fail", "queue": "pyonly", "args": ["py-fail"],
         "retry": False},
    )
    difo_jids = difo.perform_bulk(jobs.record, [["py", n] for n in range(5)], queue="pyonly")
    later = difo.perform_at(soon, jobs.record, "py-later", queue="pyonly")

    python_runs = wait_runs(r, "py", 8)
    assert {run["jid"] for run in python_runs} == {*difo_jids, *pushed.jids[3]}
    assert sorted(run["args"][1] for run in python_runs) == list(range(8))
    assert {run["pid"] for run in python_runs} == {python.process.pid}
    assert wait_runs(r, "py-later", 1)[0]["jid"] == later
    wait_runs(r, "py-fail", 1)
    ruby_runs = ruby_recorded(r, "rb", 5)
    assert {run["jid"] for run in ruby_runs} == set(pushed.jids[0])
    assert {run["pid"] for run in ruby_runs} == {ruby.process.pid}
    assert ruby_recorded(r, "rb-later", 1)[0]["jid"] == pushed.jids[2][0]
    ruby_recorded(r, "fail", 1)

    # Both listed by Sidekiq's ProcessSet, each with its own queues.
    identity_of(sidekiq, ruby.process.pid)
    view = sidekiq.view()
    ruby_process = process_with_pid(view, ruby.process.pid)
    python_process = process_with_pid(view, python.process.pid)
    assert ruby_process is not None and python_process is not None
    assert ruby_process["queues"] == ["rbonly"] and python_process["queues"] == ["pyonly"]
    # difo's own API reads Sidekiq's process record too.
    ruby_record = ProcessSet(backend=client.backend).get(ruby_process["identity"])
    assert ruby_record is not None
    assert (ruby_record.pid, ruby_record.queues, ruby_record.concurrency) == (
        ruby.process.pid, ["rbonly"], 2)
    assert ruby_record.version == "" and ruby_record.weights == {}  # 6.4.1 writes neither

    assert ruby.stop() == 0, ruby.log()
    assert python.stop() == 0
    view = sidekiq.view()
    # Each unit ran once, on its own kind of server; nothing left over or misrouted.
    assert len(runs(r, "py")) == 8 and len(r.lrange("rb:rb", 0, -1)) == 5
    assert (view["stats"]["enqueued"], view["stats"]["scheduled_size"]) == (0, 0)
    assert (view["stats"]["retry_size"], view["stats"]["dead_size"]) == (0, 0)
    # Sidekiq's counters hold both servers' counts: 7 Ruby runs and 10 difo runs, 1 failed each.
    assert (view["stats"]["processed"], view["stats"]["failed"]) == (17, 2)
    assert (total(view["history"]["processed"]), total(view["history"]["failed"])) == (17, 2)
    assert view["processes"] == []
    stats = Stats(backend=client.backend)
    assert (stats.processed, stats.failed, stats.processes_size) == (17, 2, 0)


def test_each_scheduler_promotes_the_others_units(
    client: Client, sidekiq: Sidekiq, start_server: Any, start_ruby_server: Any,
    r: redis.Redis,
) -> None:
    """Sidekiq's poller pushes difo's due units (scheduled and retries) onto difo's queue
    intact, and difo's scheduler pushes Ruby's onto Ruby's: either may do it for the other."""
    failing = jobs.retried.perform_on("pyonly", "retry-promoted-by-ruby")
    python = start_server(*EXTRA, "-q", "pyonly", env=FAST)
    wait_for(lambda: r.zcard("retry") == 1)
    assert python.stop() == 0
    [raw] = cast(list[bytes], r.zrange("retry", 0, -1))
    r.zadd("retry", {raw: time.time()}, xx=True)  # due now
    later = difo.perform_in(0.5, jobs.record, "promoted-by-ruby", {"k": []}, queue="pyonly")

    # Only a Ruby server runs: its poller moves both onto queue:pyonly, which it does not serve.
    ruby = start_ruby_server("-q", "rbonly", "-c", "2", "-t", "5")
    wait_for(lambda: r.llen("queue:pyonly") == 2, timeout=20, interval=0.1)
    queued = {job["jid"]: job for job in sidekiq.view()["queues"]["pyonly"]["jobs"]}
    assert queued[later]["args"] == ["promoted-by-ruby", {"k": []}]
    assert queued[failing]["item"]["retry_count"] == 0
    assert queued[failing]["item"]["error_class"] == "RuntimeError"
    for job in queued.values():
        assert isinstance(job["item"]["enqueued_at"], float)
        assert abs(job["item"]["enqueued_at"] - time.time()) < 30
    assert ruby.stop() == 0, ruby.log()

    # Only difo runs: it promotes a Ruby unit onto queue:rbonly, and runs its own two.
    pushed = sidekiq.push({"class": RUBY, "queue": "rbonly", "args": ["promoted-by-difo", 1],
                           "at": time.time() + 0.5, "custom": {"kept": [1]}})
    [[ruby_jid]] = pushed.jids
    python = start_server(*EXTRA, "-q", "pyonly", env=FAST)
    assert wait_runs(r, "promoted-by-ruby", 1)[0]["jid"] == later
    assert wait_runs(r, "retry-promoted-by-ruby", 2)[1]["retry_count"] == 0
    wait_for(lambda: r.llen("queue:rbonly") == 1)
    [promoted] = sidekiq.view()["queues"]["rbonly"]["jobs"]
    assert promoted["jid"] == ruby_jid and promoted["item"]["custom"] == {"kept": [1]}
    assert python.stop() == 0

    # And the Ruby server runs the unit difo promoted for it.
    ruby = start_ruby_server("-q", "rbonly", "-c", "2", "-t", "5")
    assert ruby_recorded(r, "promoted-by-difo", 1)[0]["jid"] == ruby_jid


def ruby_recorded(r: redis.Redis, tag: str, count: int) -> list[dict[str, Any]]:
    """What worker.rb recorded for `tag` once it ran `count` times."""
    wait_for(lambda: r.llen(f"rb:{tag}") >= count, timeout=20)
    return [json.loads(raw) for raw in cast(list[bytes], r.lrange(f"rb:{tag}", 0, -1))]
