"""Totals and per-day counts (flushed by the heartbeat, never lost in a clean stop), the
`Stats` API computed as Sidekiq computes it, and `difo stats` (table, JSON, watch view)."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from rich.console import Console

import difo
from difo import stats, unit
from difo.api import Day, Queue, Stats
from difo.backends import Backend, FunctionTimes, ProcessBeat, open_backend
from difo.backends.redis import keys
from difo.cli import main
from difo.cli.stats import render_stats
from tests import stats_functions
from tests.conftest import ROOT, wait_for

EXTRA = ("--import", "tests.stats_functions")
SLOW_BEAT = {"DIFO_HEARTBEAT": "60", "DIFO_DEAD_AFTER": "120"}


def today() -> str:
    return time.strftime("%Y-%m-%d", time.gmtime())


def count(r: redis.Redis, key: str) -> int:
    value = r.get(key)
    return int(value) if value else 0


def raw_unit(queue: str, n: int, enqueued_ago: float = 0.0) -> bytes:
    payload = unit.build("tests.functions:record", ["stats", n], queue)
    payload["enqueued_at"] = unit.now() - enqueued_ago
    return unit.encode(payload)


# -- counting -----------------------------------------------------------------------------------


def test_counts_are_exact_and_survive_a_graceful_stop(client: Any, r: redis.Redis,
                                                      start_server: Any) -> None:
    # A beat every 60 s: after the first (at start), only the final flush can count.
    server = start_server(*EXTRA, env=SLOW_BEAT)
    wait_for(lambda: r.scard("processes") == 1)
    for _ in range(20):
        difo.perform(stats_functions.quick, "ok")
    for _ in range(7):
        difo.perform(stats_functions.boom, "bad")
    wait_for(lambda: r.llen("results:ok") == 20 and r.llen("results:bad") == 7)
    time.sleep(0.3)  # the last failure's settle
    assert count(r, "stat:processed") == 0  # still in memory
    assert server.stop() == 0
    assert count(r, "stat:processed") == 27  # processed counts failures too
    assert count(r, "stat:failed") == 7
    assert count(r, f"stat:processed:{today()}") == 27
    assert count(r, f"stat:failed:{today()}") == 7
    ttl = r.ttl(f"stat:processed:{today()}")
    assert 5 * 365 * 86400 - 60 < ttl <= 5 * 365 * 86400  # Sidekiq keeps days five years
    assert r.ttl("stat:processed") == -1
    stats = Stats(backend=client.backend)
    assert (stats.processed, stats.failed) == (27, 7)
    assert stats.history(2)[0].date == today()
    assert (stats.history(2)[0].processed, stats.history(2)[0].failed) == (27, 7)
    # A second server adds to the same totals.
    second = start_server(*EXTRA, env=SLOW_BEAT)
    wait_for(lambda: r.scard("processes") == 1)
    difo.perform(stats_functions.quick, "ok")
    wait_for(lambda: r.llen("results:ok") == 21)
    assert second.stop() == 0
    assert count(r, "stat:processed") == 28


def test_counts_are_flushed_by_the_heartbeat(client: Any, r: redis.Redis,
                                             start_server: Any) -> None:
    start_server(*EXTRA, env={"DIFO_HEARTBEAT": "0.5"})
    for _ in range(5):
        difo.perform(stats_functions.quick, "hb")
    difo.perform(stats_functions.boom, "hb-bad")
    wait_for(lambda: count(r, "stat:processed") == 6 and count(r, "stat:failed") == 1,
             timeout=10)
    time.sleep(1.2)  # more beats add nothing
    assert count(r, "stat:processed") == 6
    assert count(r, "stat:failed") == 1


# -- the Stats API ------------------------------------------------------------------------------


def test_stats_reads_what_sidekiq_reads(redis_url: str, r: redis.Redis) -> None:
    backend = open_backend(redis_url)
    backend.push("default", [raw_unit("default", 1, enqueued_ago=30)])
    backend.push("default", [raw_unit("default", 2, enqueued_ago=5)])
    backend.push("mail", [raw_unit("mail", n, enqueued_ago=2) for n in range(3)])
    backend.push("empty", [raw_unit("empty", 0)])
    r.delete("queue:empty")  # known but empty: size 0, latency 0
    for n in range(2):
        backend.set_add("schedule", unit.now() + 60 + n, raw_unit("default", n))
    backend.set_add("retry", unit.now() + 60, raw_unit("default", 9))
    for n in range(4):
        backend.set_add("dead", unit.now() - n, raw_unit("default", n))
    r.set("stat:processed", 41)
    r.set("stat:failed", 3)
    # Two processes as Sidekiq's heartbeat leaves them; one record already gone.
    for identity, busy in (("host:1:aaaaaaaaaaaa", 2), ("host:2:bbbbbbbbbbbb", 3)):
        r.sadd("processes", identity)
        r.hset(identity, mapping={"info": "{}", "busy": busy, "beat": unit.now()})
    r.sadd("processes", "host:3:cccccccccccc")
    backend.pause("mail")

    stats = Stats(backend=backend)
    assert (stats.processed, stats.failed) == (41, 3)
    assert stats.enqueued == 5
    assert stats.queues == {"mail": 3, "default": 2, "empty": 0}
    assert list(stats.queues) == ["mail", "default", "empty"]  # largest first
    assert 29.5 < stats.default_queue_latency < 35  # the oldest unit, popped next
    assert 1.5 < stats.latencies["mail"] < 10
    assert stats.latencies["empty"] == 0.0
    assert (stats.scheduled_size, stats.retry_size, stats.dead_size) == (2, 1, 4)
    assert stats.processes_size == 3  # SCARD, unpruned, as Sidekiq's
    assert stats.workers_size == 5  # sum of busy
    assert stats.paused_queues == {"mail"}
    assert Queue("mail", backend=backend).paused
    assert not Queue("default", backend=backend).paused
    data = stats.to_dict()
    assert data["queues"][0] == {"queue": "mail", "size": 3,
                                 "latency": round(stats.latencies["mail"], 3), "paused": True}
    assert data["paused_queues"] == ["mail"]


def test_history_reads_the_per_day_keys(redis_url: str, r: redis.Redis) -> None:
    now = time.time()
    days = [time.strftime("%Y-%m-%d", time.gmtime(now - 86400 * back)) for back in range(3)]
    r.set(f"stat:processed:{days[0]}", 10)
    r.set(f"stat:failed:{days[0]}", 1)
    r.set(f"stat:processed:{days[2]}", 7)
    history = Stats(backend=redis_url).history(4)
    assert [day.date for day in history][:3] == days
    assert [(day.processed, day.failed) for day in history] == [(10, 1), (0, 0), (7, 0),
                                                                 (0, 0)]


# -- difo stats ---------------------------------------------------------------------------------


def test_the_stats_view_renders_a_real_snapshot(redis_url: str, r: redis.Redis) -> None:
    backend = open_backend(redis_url)
    backend.push("critical", [raw_unit("critical", n, enqueued_ago=12) for n in range(4)])
    backend.pause("critical")
    r.set("stat:processed", 1234)
    r.set("stat:failed", 56)
    r.set(f"stat:processed:{today()}", 99)
    stats = Stats(backend=backend)
    output = io.StringIO()
    Console(file=output, width=150, color_system=None).print(
        render_stats(stats, stats.history(2)))
    text = output.getvalue()
    assert "1234" in text and "56" in text and "99" in text
    row = next(line for line in text.splitlines() if "critical" in line)
    assert "4" in row and "paused" in row and "12." in row  # size, state, latency (s)
    assert today() in text
    assert "\x1b" not in text


def test_stats_command_as_table_and_json(redis_url: str, r: redis.Redis) -> None:
    open_backend(redis_url).push("default", [raw_unit("default", 1, enqueued_ago=3)])
    r.set("stat:processed", 8)
    result = CliRunner().invoke(main, ["stats", "--json", "--days", "2", "--url", redis_url])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["processed"] == 8 and data["enqueued"] == 1
    assert data["queues"][0]["queue"] == "default" and data["queues"][0]["latency"] >= 3
    assert data["history"][0]["date"] == today()
    table = CliRunner().invoke(main, ["stats", "--url", redis_url])
    assert table.exit_code == 0, table.output
    assert "processed" in table.stdout and "default" in table.stdout
    assert "\x1b[" not in table.stdout  # piped: no colour codes


def test_stats_watch_redraws_until_interrupted(redis_url: str, r: redis.Redis) -> None:
    watcher = subprocess.Popen(
        [sys.executable, "-m", "difo.cli", "stats", "--watch", "--interval", "0.3",
         "--url", redis_url], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(1.5)
    r.set("stat:processed", 777)  # a later view shows the new total
    time.sleep(1.5)
    watcher.send_signal(signal.SIGINT)
    out, err = watcher.communicate(timeout=10)
    assert watcher.returncode == 0, err
    text = out.decode()
    assert text.count("queues") >= 3
    assert "777" in text.split("queues")[-1] or "777" in text
    assert "\x1b[" not in text
    assert keys.STAT_PROCESSED == "stat:processed"


# -- the same answers from every backend ----------------------------------------------------


@pytest.fixture(params=["redis", "sqlite"])
def any_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    url = (str(request.getfixturevalue("redis_url")) if request.param == "redis"
           else f"sqlite:///{tmp_path / 'difo.db'}")
    opened = open_backend(url)
    yield opened
    opened.close()


def test_every_backend_keeps_stats_processes_pauses_and_metrics(any_backend: Backend) -> None:
    backend = any_backend
    backend.push("a", [raw_unit("a", n, enqueued_ago=10 - n) for n in range(3)])
    backend.push("b", [raw_unit("b", 9)])
    backend.set_add("dead", unit.now(), raw_unit("a", 7))
    backend.pause("a")
    assert backend.paused() == {"a"}
    claimed = backend.claim("host:1:000000000001", ["a", "b"], 10, [], [], 1)
    assert [c.queue for c in claimed] == ["b"]  # the paused queue is skipped
    work = {"7da": b'{"queue":"b","payload":"{}","run_at":1}'}
    times = FunctionTimes(count=3, failures=1, seconds=0.006, buckets={4: 2, 5: 1})
    reply = backend.beat(ProcessBeat(
        identity="host:1:000000000001", info=b'{"hostname":"host","queues":["a","b"]}',
        busy=1, quiet=False, rss_kb=2048, concurrency=4, work=work, processed=5, failed=2,
        stopping=True, functions={"app:f": times}, minute=stats.minute()))
    assert reply.signal is None
    snapshot = Stats(backend=backend)
    assert (snapshot.processed, snapshot.failed) == (5, 2)
    assert snapshot.queues == {"a": 3, "b": 0}
    assert 9 < snapshot.latencies["a"] < 15  # the oldest of a, popped next
    assert (snapshot.dead_size, snapshot.processes_size, snapshot.workers_size) == (1, 1, 1)
    assert snapshot.paused_queues == {"a"}
    assert snapshot.history(1)[0] == Day(today(), 5, 2)
    [record] = backend.processes()
    assert (record.identity, record.busy, record.concurrency) == ("host:1:000000000001", 1, 4)
    assert record.stopping and not record.quiet and record.rss_kb == 2048
    assert backend.work([record.identity]) == {record.identity: work}
    backend.signal(record.identity, "TSTP")
    backend.signal(record.identity, "TERM")
    beat = ProcessBeat(identity=record.identity, info=b"{}", busy=0, quiet=True, rss_kb=1,
                       concurrency=4)
    assert backend.beat(beat).signal == "TSTP"  # one per beat, oldest first
    assert backend.beat(beat).signal == "TERM"
    assert backend.beat(beat).signal is None
    [minute] = backend.function_metrics([stats.minute()])
    assert minute["app:f"] == times
    assert backend.function_metrics(["19990101|00:00"]) == [{}]
    assert backend.function_totals()["app:f"] == times
    backend.unpause("a")
    assert backend.paused() == set()
    assert len(backend.claim("host:1:000000000001", ["a"], 10, [], [], 20)) == 3


def test_stats_agree_with_sidekiqs_own_api(client: Any, redis_url: str, r: redis.Redis,
                                           start_server: Any) -> None:
    from tests.interop.ruby import Sidekiq

    sidekiq = Sidekiq(redis_url)  # skips (fails under CI) without Ruby's sidekiq gem
    server = start_server(*EXTRA, "-w", "2", env={"DIFO_HEARTBEAT": "1",
                                                  "DIFO_DEAD_AFTER": "3"})
    for _ in range(3):
        difo.perform(stats_functions.quick, "agree")
    difo.perform(stats_functions.boom, "agree-bad")
    difo.perform(stats_functions.hold, "agree-busy", 30)
    wait_for(lambda: r.llen("started:agree-busy") == 1 and r.llen("results:agree") == 3)
    backend = open_backend(redis_url)
    backend.pause("default")  # keep the units below waiting
    backend.push("default", [raw_unit("default", 1, enqueued_ago=20)])
    backend.push("low", [raw_unit("low", n) for n in range(2)])
    backend.set_add("schedule", unit.now() + 100, raw_unit("default", 5))
    backend.set_add("dead", unit.now(), raw_unit("default", 6))
    wait_for(lambda: count(r, "stat:processed") == 4
             and Stats(backend=backend).workers_size == 1, timeout=10)
    ours = Stats(backend=backend)
    theirs = sidekiq.view()["stats"]
    for name in ("processed", "failed", "enqueued", "scheduled_size", "retry_size",
                 "dead_size", "processes_size", "workers_size"):
        assert getattr(ours, name) == theirs[name], name
    assert ours.queues == theirs["queues"]
    assert abs(ours.default_queue_latency - theirs["default_queue_latency"]) < 2
    history = sidekiq.view()["history"]
    assert ours.history(1)[0].processed == history["processed"][today()]
    assert ours.history(1)[0].failed == history["failed"][today()]
    server.kill()
