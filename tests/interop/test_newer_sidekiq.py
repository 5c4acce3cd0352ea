"""Reading newer Sidekiq: what Sidekiq 7 and 8 write into a shared Redis reads correctly in
difo (SIDEKIQ_LAYOUT.md section 6), and what difo writes carries the newer fields too.

Sidekiq 8 writes `created_at`, `enqueued_at`, `failed_at` and `retried_at` as integer epoch
milliseconds (scores stay float seconds); Sidekiq 7.2.1+ writes `error_backtrace` as strict
base64 (no newlines); Sidekiq 7 adds `weights` (one dict per capsule), `version` and
`embedded` to the process info, 8.1.2 a top-level `concurrency`, 6.4.2 renames
`IDENTITY:workers` to `IDENTITY:work`. No Ruby is needed here: the payloads below are
recorded in the forms those versions write, the backtraces encoded by Ruby's own Base64 and
Zlib.
"""

from __future__ import annotations

import json
import time
from typing import Any, cast

import redis

from difo import retry, unit
from difo.api import DeadSet, ProcessSet, Queue, RetrySet, Stats, Workers, find
from difo.client import Client
from tests.conftest import wait_for
from tests.interop.ruby import wait_runs

EXTRA = ("--import", "tests.interop.jobs")
FAST = {"DIFO_HEARTBEAT": "1", "DIFO_DEAD_AFTER": "3"}

LINES = [
    "/app/app/jobs/hard_job.rb:12:in `perform'",
    "/gems/sidekiq-8.0.4/lib/sidekiq/processor.rb:220:in `execute_job'",
    "/gems/sidekiq-8.0.4/lib/sidekiq/processor.rb:185:in `block (4 levels) in process'",
    "/gems/sidekiq-8.0.4/lib/sidekiq/middleware/chain.rb:180:in `traverse'",
]
# Base64.strict_encode64(Zlib::Deflate.deflate(JSON.generate(LINES))): Sidekiq 7.2.1+.
STRICT = (
    "eJyVztsOgjAMBuBXWXajJkqBYEJ4FWN0hyqTwWaL6OPLQe/1oknzp/+XHiSoGOe5Bc1QK7KncUtIV1leuU6cI9"
    "IlULuSWwlXbBnYWWzcfVcmaVKAd/qbQKRgkDnQVM/zdO7jC82jx0n928jK/WxoH0wj1oXwOKDnjRjDz+EvZuus"
    "9fhUhGBq5bqFXt7rSQ1IjCt5fAMSTls6"
)
# Base64.encode64 of the same bytes: Sidekiq 6.4.1 (a newline every 60 characters).
MIME = (
    "eJyVztsOgjAMBuBXWXajJkqBYEJ4FWN0hyqTwWaL6OPLQe/1oknzp/+XHiSo\n"
    "GOe5Bc1QK7KncUtIV1leuU6cI9IlULuSWwlXbBnYWWzcfVcmaVKAd/qbQKRg\n"
    "kDnQVM/zdO7jC82jx0n928jK/WxoH0wj1oXwOKDnjRjDz+EvZuus9fhUhGBq\n"
    "5bqFXt7rSQ1IjCt5fAMSTls6\n"
)

# An immediate push by Sidekiq 8's client.
SIDEKIQ8_QUEUED = (
    '{"retry":true,"queue":"s8","class":"tests.interop.jobs:record","args":["s8",1,{"a":[]}],'
    '"jid":"0d6e5d1c2a3b4c5d6e7f8091","created_at":1764300000123,"enqueued_at":1764300000125}'
)
# The same unit after its second failure on a Sidekiq 8 server.
SIDEKIQ8_RETRY = (
    '{"retry":true,"queue":"s8","class":"tests.interop.jobs:record","args":["s8",1,{"a":[]}],'
    '"jid":"0d6e5d1c2a3b4c5d6e7f8091","created_at":1764300000123,"enqueued_at":1764300040125,'
    '"error_message":"boom","error_class":"RuntimeError","failed_at":1764300000300,'
    '"retry_count":1,"retried_at":1764300040300,"backtrace":true,"error_backtrace":"'
    + STRICT + '"}'
)
# A Sidekiq 7.2 dead entry: float seconds, strict base64.
SIDEKIQ7_DEAD = (
    '{"retry":0,"queue":"s7","class":"HardJob","args":[],"jid":"9f8e7d6c5b4a39281706f5e4",'
    '"created_at":1764300000.5,"enqueued_at":1764300000.75,"error_message":"gone",'
    '"error_class":"ArgumentError","failed_at":1764300001.25,"retry_count":0,'
    '"backtrace":true,"error_backtrace":"' + STRICT + '"}'
)

# A Sidekiq 8.1 process record (the hash fields as strings) and its busy work, written under
# `IDENTITY:work` (6.4.2+); the work payload is the job JSON as a string, times in ms.
SIDEKIQ8_IDENTITY = "app-1:4242:0f1e2d3c4b5a"
SIDEKIQ8_INFO = (
    '{"hostname":"app-1","started_at":1764300000.1234567,"pid":4242,"tag":"shop",'
    '"concurrency":5,"queues":["critical","default"],"weights":[{"critical":3,"default":1}],'
    '"labels":["blue"],"identity":"app-1:4242:0f1e2d3c4b5a","version":"8.1.2","embedded":false}'
)
SIDEKIQ8_JOB = (
    '{"retry":true,"queue":"critical","class":"HardJob","args":[7],'
    '"jid":"a1b2c3d4e5f6a7b8c9d0e1f2","created_at":1764300090000,"enqueued_at":1764300090001}'
)
SIDEKIQ8_WORK = json.dumps({"queue": "critical", "payload": SIDEKIQ8_JOB, "run_at": 1764300090},
                           separators=(",", ":"))
# Sidekiq 7.0 with two capsules: no top-level concurrency, one weights dict per capsule.
SIDEKIQ7_INFO = (
    '{"hostname":"app-2","started_at":1764300000.5,"pid":77,"tag":"","concurrency":7,'
    '"queues":["default","single"],"weights":[{"default":0},{"single":0}],"labels":[],'
    '"identity":"app-2:77:aaaaaaaaaaaa","version":"7.0.9","embedded":true}'
)


def test_decode_reads_sidekiq8_millisecond_times() -> None:
    decoded = unit.decode(SIDEKIQ8_QUEUED)
    assert (decoded.class_name, decoded.args, decoded.queue) == (
        "tests.interop.jobs:record", ["s8", 1, {"a": []}], "s8")
    assert decoded.jid == "0d6e5d1c2a3b4c5d6e7f8091"
    assert decoded.enqueued_at == 1764300000.125
    assert decoded.payload["created_at"] == 1764300000123  # kept as written
    assert unit.decode(SIDEKIQ8_RETRY).retry_count == 1


def test_seconds_tells_milliseconds_from_seconds() -> None:
    assert unit.seconds(1764300000123) == 1764300000.123  # Sidekiq 8: an Integer is ms
    assert unit.seconds(1764300000.123) == 1764300000.123  # a Float is seconds
    assert unit.seconds(1764300000) == 1764300000.0  # integer seconds (older writers)
    assert unit.seconds(0.0) == 0.0
    for junk in (None, True, "1764300000", [1]):
        assert unit.seconds(junk) is None


def test_decode_backtrace_reads_every_form() -> None:
    assert retry.decode_backtrace(STRICT) == LINES  # Sidekiq 7.2.1+
    assert retry.decode_backtrace(MIME) == LINES  # Sidekiq 6.x
    assert retry.decode_backtrace(json.dumps(LINES)) == LINES  # the old raw JSON array
    # difo writes strict base64, which every version reads.
    assert "\n" not in retry.encode_backtrace(LINES)
    assert retry.decode_backtrace(retry.encode_backtrace(LINES)) == LINES


def test_api_reads_sidekiq7_and_8_entries(client: Client, r: redis.Redis) -> None:
    now_ms = int(time.time() * 1000)
    queued = json.loads(SIDEKIQ8_QUEUED)
    queued.update(created_at=now_ms - 6000, enqueued_at=now_ms - 5000)
    r.sadd("queues", "s8")
    r.lpush("queue:s8", json.dumps(queued, separators=(",", ":")))
    r.zadd("retry", {SIDEKIQ8_RETRY: 1764300100.5})
    r.zadd("dead", {SIDEKIQ7_DEAD: 1764300001.25})
    backend = client.backend

    queue = Queue("s8", backend=backend)
    assert 4 <= queue.latency() < 60  # not -1.8e12: milliseconds read as such
    [entry] = list(queue)
    assert entry.enqueued_at is not None and abs(entry.enqueued_at - (now_ms - 5000) / 1000) < 1e-3
    assert entry.created_at is not None and abs(entry.created_at - (now_ms - 6000) / 1000) < 1e-3

    [retried] = list(RetrySet(backend=backend))
    assert (retried.jid, retried.function, retried.args) == (
        "0d6e5d1c2a3b4c5d6e7f8091", "tests.interop.jobs:record", ["s8", 1, {"a": []}])
    assert retried.created_at == 1764300000.123
    assert retried.enqueued_at == 1764300040.125
    assert retried.failed_at == 1764300000.3
    assert retried.retried_at == 1764300040.3
    assert retried.retry_count == 1 and retried.at == 1764300100.5
    assert retried.error_class == "RuntimeError" and retried.error_message == "boom"
    assert retried.backtrace == LINES
    shown = retried.to_dict()
    assert shown["created_at"] == 1764300000.123 and shown["failed_at"] == 1764300000.3

    [dead] = list(DeadSet(backend=backend))
    assert (dead.function, dead.queue, dead.failed_at) == ("HardJob", "s7", 1764300001.25)
    assert dead.backtrace == LINES
    found = find("9f8e7d6c5b4a39281706f5e4", backend=backend)
    assert found is not None and found.where == "dead"

    # "Retry now" from difo's API: the unit goes back with a float enqueued_at (seconds in
    # every version) and the fields difo does not own keep their bytes (ms stay ms).
    assert retried.retry()
    [raw] = r.lrange("queue:s8", 0, 0)
    moved = json.loads(raw)
    assert isinstance(moved["enqueued_at"], float) and abs(moved["enqueued_at"] - time.time()) < 60
    assert b'"created_at":1764300000123' in raw and b'"failed_at":1764300000300' in raw
    assert moved["retry_count"] == 0


def test_difo_runs_and_fails_sidekiq8_payloads(
    client: Client, start_server: Any, r: redis.Redis
) -> None:
    now_ms = int(time.time() * 1000)
    ok = json.loads(SIDEKIQ8_QUEUED)
    ok.update(created_at=now_ms, enqueued_at=now_ms)
    failing = dict(ok, jid="1" * 24, args=["s8-fail"], retry=1,
                   **{"class": "tests.interop.jobs:fail"})
    r.sadd("queues", "s8")
    r.lpush("queue:s8", *(json.dumps(p, separators=(",", ":")) for p in (ok, failing)))
    start_server(*EXTRA, "-q", "s8", env=FAST)

    [run] = wait_runs(r, "s8", 1)
    assert run["args"] == ["s8", 1, {"a": []}] and run["jid"] == ok["jid"]
    assert abs(run["enqueued_at"] - now_ms / 1000) < 1e-3  # difo.current() in seconds

    wait_for(lambda: r.zcard("retry") == 1)
    [(raw, score)] = cast(list[tuple[bytes, float]], r.zrange("retry", 0, -1, withscores=True))
    stored = json.loads(raw)
    assert stored["created_at"] == now_ms and f'"created_at":{now_ms}'.encode() in raw
    assert isinstance(stored["failed_at"], float)  # difo writes seconds, with a point
    assert abs(stored["failed_at"] - time.time()) < 60
    assert 15 <= score - stored["failed_at"] <= 24.01


def test_difo_process_record_has_newer_fields(
    client: Client, start_server: Any, r: redis.Redis
) -> None:
    """difo writes what 6.4.1 reads and what 7.x / 8.x add: info weights and version, the
    top-level concurrency (8.1.2+), busy work under both `:workers` and `:work` (6.4.2+)."""
    server = start_server(*EXTRA, "-q", "hi:3 lo:1", "-w", "4", env=FAST)
    r.lpush("queue:hi", json.dumps({"class": "tests.interop.jobs:sleep", "args": ["rec", 30],
                                    "jid": "2" * 24, "queue": "hi", "retry": True,
                                    "created_at": time.time(), "enqueued_at": time.time()}))
    wait_runs(r, "rec", 1)
    identity = next(key.decode() for key in cast(set[bytes], r.smembers("processes")))
    assert identity.split(":")[1] == str(server.process.pid)

    def busy() -> bool:
        return r.hget(identity, "busy") == b"1"

    wait_for(busy, timeout=10)
    stored = cast(dict[bytes, bytes], r.hgetall(identity))
    record = {key.decode(): value.decode() for key, value in stored.items()}
    info = json.loads(record["info"])
    assert info["weights"] == [{"hi": 3, "lo": 1}] and info["queues"] == ["hi", "lo"]
    assert info["concurrency"] == 4 and record["concurrency"] == "4"
    assert isinstance(info["version"], str) and info["identity"] == identity
    assert isinstance(info["started_at"], float) and float(record["beat"]) > info["started_at"]
    assert 0 < r.ttl(identity) <= 60
    for work_key in (f"{identity}:workers", f"{identity}:work"):
        [work] = [json.loads(value) for value in cast(list[bytes], r.hvals(work_key))]
        assert work["queue"] == "hi" and isinstance(work["run_at"], int)
        assert json.loads(work["payload"])["jid"] == "2" * 24


def test_api_reads_sidekiq7_and_8_processes(client: Client, r: redis.Redis) -> None:
    beat = time.time()
    r.sadd("processes", SIDEKIQ8_IDENTITY, "app-2:77:aaaaaaaaaaaa")
    r.hset(SIDEKIQ8_IDENTITY, mapping={"info": SIDEKIQ8_INFO, "busy": "1", "beat": repr(beat),
                                       "rtt_us": "150", "quiet": "false", "rss": "81234",
                                       "concurrency": "5"})
    r.hset(f"{SIDEKIQ8_IDENTITY}:work", "2n9", SIDEKIQ8_WORK)
    r.hset("app-2:77:aaaaaaaaaaaa", mapping={"info": SIDEKIQ7_INFO, "busy": "0",
                                             "beat": repr(beat), "quiet": "true", "rss": "1"})
    for key in (SIDEKIQ8_IDENTITY, f"{SIDEKIQ8_IDENTITY}:work", "app-2:77:aaaaaaaaaaaa"):
        r.expire(key, 60)

    processes = {process.identity: process for process in ProcessSet(backend=client.backend)}
    eight, seven = processes[SIDEKIQ8_IDENTITY], processes["app-2:77:aaaaaaaaaaaa"]
    assert (eight.hostname, eight.pid, eight.tag, eight.version) == ("app-1", 4242, "shop",
                                                                     "8.1.2")
    assert eight.queues == ["critical", "default"]
    assert eight.weights == {"critical": 3, "default": 1}
    assert (eight.concurrency, eight.busy, eight.rss, eight.rtt_us) == (5, 1, 81234, 150)
    assert eight.started_at == 1764300000.1234567 and eight.beat == beat
    assert eight.labels == ["blue"] and not eight.is_quiet
    assert (seven.concurrency, seven.version, seven.is_quiet) == (7, "7.0.9", True)
    assert seven.weights == {"default": 0, "single": 0}

    [work] = list(Workers(backend=client.backend))
    assert (work.process, work.thread, work.queue) == (SIDEKIQ8_IDENTITY, "2n9", "critical")
    assert (work.jid, work.function, work.args) == ("a1b2c3d4e5f6a7b8c9d0e1f2", "HardJob", [7])
    assert work.run_at == 1764300090  # run_at stays integer seconds in 8.x
    assert work.enqueued_at == 1764300090.001  # the payload's milliseconds, read as such
    stats = Stats(backend=client.backend)
    assert (stats.processes_size, stats.workers_size) == (2, 1)
