"""The process registry and busy workers: `ProcessSet`, `Workers`, `difo processes|workers`.

Servers run as real subprocesses; a killed one must leave the list within the bound (its
units recovered by a live server, or its Sidekiq record expired)."""

from __future__ import annotations

import json
import signal
import socket
import time
from typing import Any

import redis
from click.testing import CliRunner

import difo
from difo import unit
from difo.api import ProcessSet, Stats, Workers
from difo.cli import main
from tests import stats_functions
from tests.conftest import wait_for

EXTRA = ("--import", "tests.stats_functions")
FAST = {"DIFO_HEARTBEAT": "1", "DIFO_DEAD_AFTER": "3"}


def live(redis_url: str) -> dict[str, Any]:
    return {process.identity: process for process in ProcessSet(backend=redis_url)}


def identity_of(r: redis.Redis, pid: int) -> str:
    """The identity a server subprocess registered under."""
    found: list[str] = []

    def registered() -> bool:
        found[:] = [m.decode() for m in r.smembers("processes")
                    if m.decode().split(":")[1] == str(pid)]
        return bool(found)

    wait_for(registered)
    return found[0]


def test_a_live_server_is_listed_with_sidekiqs_fields(redis_url: str, r: redis.Redis,
                                                      start_server: Any) -> None:
    server = start_server(*EXTRA, "-w", "3", "-q", "critical:3 default:1", "--tag", "blue",
                          env=FAST)
    identity = identity_of(r, server.process.pid)
    process = live(redis_url)[identity]
    assert process.hostname == socket.gethostname()
    assert process.pid == server.process.pid
    assert process.tag == "blue"
    assert process.queues == ["critical", "default"]
    assert process.weights == {"critical": 3, "default": 1}
    assert process.concurrency == 3
    assert process.version == difo.__version__
    assert process.busy == 0
    assert not process.is_quiet and not process.is_stopping
    assert process.rss > 1000  # KB: a Python process is at least a few MB
    assert time.time() - 5 < process.beat <= time.time() + 1
    assert process.started_at is not None and process.started_at <= process.beat
    first_beat = process.beat
    wait_for(lambda: live(redis_url)[identity].beat > first_beat, timeout=5)  # beats again
    assert 0 < r.ttl(identity) <= 60  # Sidekiq's 60 s record
    result = CliRunner().invoke(main, ["processes", "--json", "--url", redis_url])
    assert result.exit_code == 0, result.output
    [listed] = json.loads(result.stdout)
    assert listed["identity"] == identity and listed["tag"] == "blue"
    assert listed["weights"] == {"critical": 3, "default": 1} and listed["quiet"] is False
    table = CliRunner().invoke(main, ["processes", "--url", redis_url])
    assert identity in table.stdout and "0/3" in table.stdout and "running" in table.stdout
    assert server.stop() == 0
    assert identity not in live(redis_url)  # a clean stop leaves the registry at once
    assert not r.sismember("processes", identity)


def test_workers_show_what_runs_now(client: Any, redis_url: str, r: redis.Redis,
                                    start_server: Any) -> None:
    server = start_server(*EXTRA, "-w", "2", env=FAST)
    identity = identity_of(r, server.process.pid)
    before = time.time()
    jid = difo.perform(stats_functions.hold, "busy", 4)
    wait_for(lambda: r.llen("started:busy") == 1)
    wait_for(lambda: len(Workers(backend=redis_url)) == 1, timeout=5)
    workers = Workers(backend=redis_url)
    [work] = list(workers)
    assert workers.size == 1
    assert work.process == identity
    assert work.jid == jid
    assert work.function == "tests.stats_functions:hold"
    assert work.queue == "default"
    assert work.args == ["busy", 4]
    assert work.run_at is not None and int(before) <= work.run_at <= time.time()
    assert work.thread  # Sidekiq's base-36 thread id
    assert Stats(backend=redis_url).workers_size == 1
    assert live(redis_url)[identity].busy == 1
    result = CliRunner().invoke(main, ["workers", "--json", "--url", redis_url])
    [listed] = json.loads(result.stdout)
    assert listed["jid"] == jid and listed["process"] == identity
    table = CliRunner().invoke(main, ["workers", "--url", redis_url])
    assert jid in table.stdout and "tests.stats_functions:hold" in table.stdout
    wait_for(lambda: r.llen("results:busy") == 1, timeout=10)
    wait_for(lambda: len(Workers(backend=redis_url)) == 0, timeout=5)
    assert server.stop() == 0


def test_a_killed_server_leaves_the_list_once_a_live_server_recovers_it(
        redis_url: str, r: redis.Redis, start_server: Any) -> None:
    doomed = start_server(*EXTRA, env=FAST)
    survivor = start_server(*EXTRA, env=FAST)
    doomed_id = identity_of(r, doomed.process.pid)
    survivor_id = identity_of(r, survivor.process.pid)
    assert set(live(redis_url)) == {doomed_id, survivor_id}
    doomed.kill()
    killed_at = time.monotonic()
    # dead after 3 s without a beat, noticed on a steady beat of the survivor (every 1 s)
    wait_for(lambda: set(live(redis_url)) == {survivor_id}, timeout=10)
    assert time.monotonic() - killed_at < 8
    assert not r.sismember("processes", doomed_id)
    assert not r.exists(doomed_id)
    assert Stats(backend=redis_url).processes_size == 1
    assert survivor.stop() == 0


def test_process_set_prunes_members_whose_record_expired(redis_url: str, r: redis.Redis,
                                                         start_server: Any) -> None:
    server = start_server(*EXTRA, env=FAST)
    identity = identity_of(r, server.process.pid)
    server.kill()  # no live server to recover it: only its record's TTL removes it
    r.pexpire(identity, 200)  # instead of Sidekiq's 60 s
    assert identity in live(redis_url)
    wait_for(lambda: not r.exists(identity), timeout=5)
    assert Stats(backend=redis_url).processes_size == 1  # Sidekiq's SCARD does not prune
    assert identity not in live(redis_url)
    assert not r.sismember("processes", identity)  # pruned, as Sidekiq's ProcessSet does
    assert Stats(backend=redis_url).processes_size == 0


def test_a_sidekiq_process_record_reads(redis_url: str, r: redis.Redis) -> None:
    # What a Ruby Sidekiq 6.4.1 process writes (SIDEKIQ_LAYOUT.md §4): no weights, no
    # version, no top-level concurrency, its work under :workers.
    identity = "vm:8306:cfa72eb8880b"
    info = {"hostname": "vm", "started_at": 1795838558.4012969, "pid": 8306,
            "tag": "probe-tag", "concurrency": 2, "queues": ["rb", "pyonly"], "labels": [],
            "identity": identity}
    r.sadd("processes", identity)
    r.hset(identity, mapping={"info": json.dumps(info), "busy": "1", "beat": repr(unit.now()),
                              "quiet": "true", "rss": "30452", "rtt_us": "161"})
    payload = json.dumps({"retry": True, "queue": "rb", "args": [14], "class": "SlowWorker",
                          "jid": "6732d6f2aeb338718b795c22", "created_at": 1795838553.07,
                          "enqueued_at": 1795838553.08})
    r.hset(f"{identity}:workers", "7da", json.dumps({"queue": "rb", "payload": payload,
                                                     "run_at": 1795838558}))
    [process] = list(ProcessSet(backend=redis_url))
    assert process.concurrency == 2 and process.weights == {} and process.version == ""
    assert process.is_quiet and not process.is_stopping
    assert (process.rss, process.rtt_us, process.busy) == (30452, 161, 1)
    assert process.queues == ["rb", "pyonly"] and process.tag == "probe-tag"
    [work] = list(Workers(backend=redis_url))
    assert (work.process, work.thread, work.queue) == (identity, "7da", "rb")
    assert (work.jid, work.function, work.args) == ("6732d6f2aeb338718b795c22", "SlowWorker",
                                                    [14])
    assert work.run_at == 1795838558


def test_a_stopping_server_says_so_until_it_is_gone(client: Any, redis_url: str,
                                                   r: redis.Redis, start_server: Any) -> None:
    server = start_server(*EXTRA, env=FAST)
    identity = identity_of(r, server.process.pid)
    difo.perform(stats_functions.hold, "long", 3)
    wait_for(lambda: r.llen("started:long") == 1)
    server.signal(signal.SIGTERM)
    wait_for(lambda: live(redis_url)[identity].is_stopping, timeout=5)
    process = live(redis_url)[identity]
    assert process.is_quiet and process.busy == 1
    assert r.hget(identity, "quiet") == b"true"  # what Sidekiq's stopping? reads
    assert server.process.wait(15) == 0
    assert r.llen("results:long") == 1
    assert identity not in live(redis_url)


def test_processes_and_workers_agree_with_sidekiqs_own_api(client: Any, redis_url: str,
                                                          r: redis.Redis,
                                                          start_server: Any) -> None:
    from tests.interop.ruby import Sidekiq

    sidekiq = Sidekiq(redis_url)  # skips (fails under CI) without Ruby's sidekiq gem
    server = start_server(*EXTRA, "-w", "2", "--tag", "green", env=FAST)
    identity = identity_of(r, server.process.pid)
    jid = difo.perform(stats_functions.hold, "agree", 30)
    wait_for(lambda: len(Workers(backend=redis_url)) == 1, timeout=5)
    view = sidekiq.view()
    [theirs] = view["processes"]
    ours = live(redis_url)[identity]
    assert theirs["identity"] == ours.identity and theirs["pid"] == ours.pid
    assert (theirs["tag"], theirs["concurrency"], theirs["queues"]) == \
        (ours.tag, ours.concurrency, ours.queues)
    assert theirs["busy"] == ours.busy == 1 and theirs["quiet"] == "false"
    assert view["workers"]["size"] == Workers(backend=redis_url).size == 1
    [work] = view["workers"]["list"]
    [mine] = list(Workers(backend=redis_url))
    assert (work["process"], work["thread"], work["jid"], work["args"], work["run_at"]) == \
        (mine.process, mine.thread, jid, mine.args, mine.run_at)
    server.kill()
