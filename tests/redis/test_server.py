"""Reliability of real `difo server` processes over Redis: no unit lost when a server is
killed or stopped or its connections drop, no live server's units taken after its beats
failed, junk and refused units sent to dead, queue order, poison pills, an idle server's cost
and latency, and the counts.

Servers beat every second and count as dead after 3 s here, to keep recovery fast. Time
bounds are loose (about ten times what the design targets): they catch a hang or a lost
unit, not a slow machine.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import redis

import difo
from difo import unit
from difo.backends.redis import keys
from difo.client import Client
from tests import functions
from tests.conftest import RedisServer, ServerProcess, wait_for

FAST = {"DIFO_HEARTBEAT": "1", "DIFO_DEAD_AFTER": "3"}
RELIABILITY = ("--import", "tests.reliability_functions")
Start = Callable[..., ServerProcess]


def results(r: redis.Redis, tag: str, kind: str = "results") -> list[Any]:
    return [json.loads(item) for item in cast(list[bytes], r.lrange(f"{kind}:{tag}", 0, -1))]


def identities(r: redis.Redis) -> set[str]:
    return {name.decode() for name in cast(set[bytes], r.smembers("processes"))}


def registered(r: redis.Redis, count: int = 1, timeout: float = 15) -> set[str]:
    """Wait until `count` servers have beaten; return their identities."""
    wait_for(lambda: len(identities(r)) >= count, timeout=timeout)
    return identities(r)


def waiting(r: redis.Redis, queue: str = "default") -> list[bytes]:
    """The raw units in `queue`, in the order they will be popped."""
    return list(reversed(cast(list[bytes], r.lrange(keys.queue(queue), 0, -1))))


def in_flight_records(r: redis.Redis) -> list[str]:
    """Every non-empty in-flight or staging record."""
    names = cast(list[bytes], r.keys("difo:inflight:*") + r.keys("difo:staging:*"))
    return [name.decode() for name in names if r.hlen(name)]


def dead_entries(r: redis.Redis) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in cast(list[bytes], r.zrange("dead", 0, -1))]


def push_raw(r: redis.Redis, queue: str, *raws: bytes) -> None:
    """What a foreign client does: LPUSH, no wake-up."""
    r.sadd("queues", queue)
    r.lpush(keys.queue(queue), *raws)


def exited(server: ServerProcess, timeout: float) -> int:
    return server.process.wait(timeout)


# -- at-least-once -----------------------------------------------------------------------------


def test_units_of_a_killed_server_all_run(
    client: Client, r: redis.Redis, start_server: Start
) -> None:
    total = 40
    difo.perform_bulk(functions.sleep_then_record, [["kill", 0.5, i] for i in range(total)])
    first = start_server("-w", "5", env=FAST)
    [identity] = registered(r)
    wait_for(lambda: len(results(r, "kill", "started")) >= 5, timeout=15)
    first.kill()  # SIGKILL: no shutdown code runs
    in_flight = cast(list[bytes], r.hvals(keys.in_flight(identity)))
    orphans = {unit.decode(raw).args[2] for raw in in_flight}
    assert len(orphans) >= 5  # units were running (and prefetched) when it died
    start_server("-w", "5", env=FAST)
    # Recovery takes DEAD_AFTER (3 s) and a beat or two, timed from the kill.
    wait_for(lambda: orphans <= set(results(r, "kill")), timeout=30)
    wait_for(lambda: set(results(r, "kill")) == set(range(total)), timeout=30)
    assert r.llen(keys.queue("default")) == 0
    assert r.zcard("dead") == 0  # orphaned once: back on the queue, not a poison pill
    assert not r.exists(keys.in_flight(identity), keys.staging(identity))
    assert r.zscore(keys.BEATS, identity) is None


def test_recovery_works_with_dead_after_at_twice_the_heartbeat(
    client: Client, r: redis.Redis, start_server: Start
) -> None:
    """The smallest DIFO_DEAD_AFTER the settings accept: beats must still count as steady."""
    env = {"DIFO_HEARTBEAT": "1", "DIFO_DEAD_AFTER": "2"}
    difo.perform_bulk(functions.sleep_then_record, [["edge", 30, i] for i in range(2)])
    first = start_server("-w", "2", env=env)
    wait_for(lambda: len(results(r, "edge", "started")) == 2, timeout=15)
    first.kill()
    start_server("-w", "2", env=env)
    wait_for(lambda: len(results(r, "edge", "started")) == 4, timeout=20)


def test_after_beats_failed_for_longer_than_dead_after_no_live_server_is_recovered(
    client: Client, r: redis.Redis, start_server: Start, redis_server: RedisServer
) -> None:
    """When every beat fails for a while (a Redis outage), all servers look dead at once: a
    server recovers others only on a steady beat, by when the live ones have beaten again.
    The outage is real for the beats alone: their user loses PING, which a beat starts with."""
    user = "difo-beats"
    r.acl_setuser(user, enabled=True, passwords=["+secret"], keys=["*"], commands=["+@all"])
    url = f"redis://{user}:secret@127.0.0.1:{redis_server.port}/0"
    servers = [start_server("-w", "2", "--prefetch", "0", env={**FAST, "REDIS_URL": url})
               for _ in range(2)]
    try:
        registered(r, 2)
        difo.perform_bulk(functions.sleep_then_record, [["outage", 20, i] for i in range(4)])
        wait_for(lambda: len(results(r, "outage", "started")) == 4, timeout=15)
        r.acl_setuser(user, commands=["-ping"])
        time.sleep(4.5)  # every beat is now older than DIFO_DEAD_AFTER (3 s)
        r.acl_setuser(user, commands=["+ping"])
        time.sleep(3)  # several good beats
        assert sorted(results(r, "outage", "started")) == [0, 1, 2, 3]  # nothing ran twice
        assert not any("recovered" in server.log() for server in servers)
        assert all("heartbeat:" in server.log() for server in servers)  # the beats failed
    finally:
        for server in servers:
            server.kill()
        r.acl_deluser(user)


def test_dropped_connections_lose_no_unit_and_leave_nothing_in_flight(
    client: Client, r: redis.Redis, start_server: Start
) -> None:
    server = start_server("-w", "4", *RELIABILITY, env=FAST)
    registered(r)
    total = 300
    for start in range(0, total, 10):
        client.backend.push("default", [
            unit.encode(unit.build("tests.reliability_functions:record_surely", ["drop", i],
                                   "default"))
            for i in range(start, start + 10)])
        r.client_kill_filter(_type="normal", skipme=True)  # every client's, the server's too
        time.sleep(0.01)
    wait_for(lambda: set(results(r, "drop")) == set(range(total)), timeout=30)
    wait_for(lambda: in_flight_records(r) == [], timeout=10)
    assert r.llen(keys.queue("default")) == 0
    assert r.zcard("retry") == 0 and r.zcard("dead") == 0
    assert server.stop() == 0
    assert in_flight_records(r) == []


# -- graceful shutdown -------------------------------------------------------------------------


def test_sigterm_puts_back_unfinished_units_at_the_front_unchanged(
    client: Client, r: redis.Redis, start_server: Start
) -> None:
    difo.perform(functions.sleep_then_record, "long", 30, "L1")
    difo.perform(functions.sleep_then_record, "long", 30, "L2")
    difo.perform(functions.sleep_then_record, "short", 0.6, "S")
    difo.perform_bulk(functions.record, [["waiting", i] for i in range(5)])
    pushed = waiting(r)
    # Three workers and three prefetched: L1, L2 and S run, W0..W2 wait in memory, W3 and
    # W4 stay in Redis.
    server = start_server("-w", "3", "--timeout", "1", env=FAST)
    [identity] = registered(r)
    wait_for(lambda: len(results(r, "long", "started")) == 2
             and results(r, "short", "started") == ["S"], timeout=15)
    wait_for(lambda: r.llen(keys.queue("default")) == 2, timeout=5)
    server.signal(signal.SIGTERM)
    assert exited(server, 15) == 0
    assert results(r, "short") == ["S"]  # finished within the timeout
    assert results(r, "long") == [] and results(r, "waiting") == []
    assert sorted(results(r, "long", "started")) == ["L1", "L2"]
    assert waiting(r) == [pushed[0], pushed[1], *pushed[3:]]  # old order, bytes unchanged
    assert not r.exists(keys.in_flight(identity), keys.started(identity),
                        keys.staging(identity))
    assert identity not in identities(r)
    assert r.zscore(keys.BEATS, identity) is None
    assert r.get("stat:processed") == b"1"
    assert "put back" in server.log()


def test_a_second_sigterm_stops_at_once_without_losing_units(
    client: Client, r: redis.Redis, start_server: Start
) -> None:
    difo.perform_bulk(functions.sleep_then_record, [["stuck", 60, i] for i in range(2)])
    difo.perform_bulk(functions.record, [["after", i] for i in range(3)])
    pushed = waiting(r)
    server = start_server("-w", "2", "--timeout", "30", env=FAST)
    [identity] = registered(r)
    wait_for(lambda: len(results(r, "stuck", "started")) == 2, timeout=15)
    server.signal(signal.SIGTERM)
    time.sleep(0.5)
    assert server.process.poll() is None  # the first one waits for the running units
    signalled = time.monotonic()
    server.signal(signal.SIGTERM)
    assert exited(server, 15) == 0
    assert time.monotonic() - signalled < 5  # not the 30 s grace period
    assert waiting(r) == pushed
    assert in_flight_records(r) == []
    assert identity not in identities(r)


# -- what a server refuses ---------------------------------------------------------------------


def test_invalid_payloads_go_to_dead_wrapped_and_the_next_unit_runs(
    client: Client, r: redis.Redis, start_server: Start
) -> None:
    not_json = b"\x04\x08{not json \xff"  # a Ruby Marshal-like blob, not even UTF-8
    no_class = b'{"jid":"abcdef","args":[1],"queue":"default"}'
    no_args = b'{"class":"tests.functions:record","queue":"default"}'
    push_raw(r, "default", not_json, no_class, no_args)
    difo.perform(functions.record, "after-junk", 1)
    start_server("-w", "1", env=FAST)
    wait_for(lambda: results(r, "after-junk") == [[1]], timeout=15)
    wait_for(lambda: r.zcard("dead") == 3, timeout=5)
    dead = {entry["difo_raw"]: entry for entry in dead_entries(r)}
    text = "\x04\x08{not json \\xff"  # undecodable bytes kept as escapes
    assert set(dead) == {text, no_class.decode(), no_args.decode()}
    assert "not JSON" in dead[text]["error_message"]
    assert "'class'" in dead[no_class.decode()]["error_message"]
    assert "'args'" in dead[no_args.decode()]["error_message"]
    for entry in dead.values():
        wrapped = unit.decode(json.dumps(entry))  # a payload Sidekiq's readers can load
        assert wrapped.jid and wrapped.queue == "default"
        assert "queue 'default'" in entry["error_message"]
        assert entry["retry"] is False
    assert r.llen(keys.queue("default")) == 0
    wait_for(lambda: in_flight_records(r) == [], timeout=5)  # the last ack goes out


def test_a_unit_outside_the_imports_goes_to_dead_and_never_runs(
    client: Client, r: redis.Redis, start_server: Start, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    refused = unit.build("os:system", [f"touch {marker}"], "default")
    client.backend.push("default", [unit.encode(refused)])
    difo.perform(functions.record, "after-refused", 1)
    start_server("-w", "1", env=FAST)
    wait_for(lambda: results(r, "after-refused") == [[1]], timeout=15)
    wait_for(lambda: r.zcard("dead") == 1, timeout=5)
    [dead] = dead_entries(r)
    assert dead["jid"] == refused["jid"] and dead["class"] == "os:system"
    assert "'os'" in dead["error_message"]
    assert "--import os" in dead["error_message"]
    assert dead["error_class"] == "difo.errors.UnitRefused"
    assert not marker.exists()
    assert r.zcard("retry") == 0


# -- queue order -------------------------------------------------------------------------------


def test_strict_queue_order_takes_every_unit_of_the_first_queue_first(
    client: Client, r: redis.Redis, start_server: Start
) -> None:
    difo.perform_bulk(functions.record, [["order", "b", i] for i in range(15)], queue="b")
    difo.perform_bulk(functions.record, [["order", "a", i] for i in range(15)], queue="a")
    start_server("-w", "1", "-q", "a b", env=FAST)
    wait_for(lambda: len(results(r, "order")) == 30, timeout=20)
    ran = results(r, "order")
    assert ran == [["a", i] for i in range(15)] + [["b", i] for i in range(15)]


def test_weighted_queues_are_taken_roughly_by_weight(
    client: Client, r: redis.Redis, start_server: Start
) -> None:
    each = 200
    difo.perform_bulk(functions.record, [["weighted", "a"]] * each, queue="a")
    difo.perform_bulk(functions.record, [["weighted", "b"]] * each, queue="b")
    # One unit per claim, so each claim is one draw of Sidekiq's weighted shuffle.
    start_server("-w", "1", "--prefetch", "0", "-q", "a:3 b:1", env=FAST)
    wait_for(lambda: len(results(r, "weighted")) >= each, timeout=30)
    first = results(r, "weighted")[:each]
    share = first.count(["a"]) / each
    assert 0.6 < share < 0.9, f"{share:.2f} of the first {each} units came from a (want ~0.75)"


# -- poison pills ------------------------------------------------------------------------------


def test_a_poison_pill_ends_in_dead_while_other_units_flow(
    client: Client, r: redis.Redis, start_server: Start
) -> None:
    servers = [start_server("-w", "2", env=FAST) for _ in range(2)]
    registered(r, 2)
    pill = difo.perform(functions.exit_process, "pill")
    started = time.monotonic()
    pushed = 0
    restarts = 0
    while r.zcard("dead") == 0:
        assert time.monotonic() - started < 60, f"the pill ran {r.llen('results:pill')} times"
        difo.perform(functions.record, "flow", pushed)
        pushed += 1
        for index, server in enumerate(servers):
            if server.process.poll() is not None:
                servers[index] = start_server("-w", "2", env=FAST)
                restarts += 1
        time.sleep(0.1)
    # Units kept flowing meanwhile: only those beside the pill waited for a recovery.
    assert len(results(r, "flow")) >= pushed / 2
    [dead] = dead_entries(r)
    assert dead["jid"] == pill
    assert dead["difo_orphaned"] == 3
    assert dead["error_class"] == "difo.PoisonPill"
    assert "orphaned 3 times" in dead["error_message"]
    assert "poison pill" in dead["error_message"]
    assert r.llen("results:pill") == 3  # it ran three times, then never again
    assert restarts == 3
    # Units pushed while the pill killed servers all ran (orphans beside it included).
    wait_for(lambda: {args[0] for args in results(r, "flow")} == set(range(pushed)), timeout=20)
    for server in servers:
        assert server.stop(timeout=15) == 0
    assert in_flight_records(r) == []
    assert r.llen("results:pill") == 3


# -- an idle server ----------------------------------------------------------------------------


def total_calls(r: redis.Redis) -> int:
    stats = r.info("commandstats")
    return sum(int(entry["calls"]) for entry in stats.values())


def test_an_idle_server_makes_few_redis_calls_and_starts_a_pushed_unit_fast(
    client: Client, r: redis.Redis, start_server: Start
) -> None:
    start_server("-w", "5")  # default heartbeat and poll interval
    registered(r)
    time.sleep(1.0)  # past the start-up calls
    r.config_resetstat()
    window = 4.0
    time.sleep(window)
    calls = total_calls(r) - 1  # our INFO
    # commandstats also counts the commands scripts run: an idle server makes about 5 round
    # trips a second (a claim and a wake-up wait, two scheduler polls, a beat every 5 s),
    # about 18 commands; a server polling in a loop would make thousands.
    assert calls / window < 30, f"{calls} Redis calls in {window} s from one idle server"
    latencies = []
    for attempt in range(3):
        time.sleep(1.2)  # idle again: blocked on the wake-up
        pushed_at = time.monotonic()
        difo.perform(functions.record, "latency", attempt)
        wait_for(lambda n=attempt + 1: r.llen("results:latency") == n, timeout=5,
                 interval=0.001)
        latencies.append(time.monotonic() - pushed_at)
    assert max(latencies) < 0.5, latencies


# -- counts ------------------------------------------------------------------------------------


def test_counts_after_a_graceful_stop(
    client: Client, r: redis.Redis, start_server: Start
) -> None:
    successes, failures = 30, 7
    server = start_server("-w", "4")  # default heartbeat: the final beat flushes the counts
    registered(r)
    difo.perform_bulk(functions.record, [["counted", i] for i in range(successes)])
    for i in range(failures):
        functions.fail_no_retry.perform(f"counted-{i}")
    wait_for(lambda: len(results(r, "counted")) == successes
             and all(r.llen(f"results:counted-{i}") for i in range(failures)), timeout=15)
    wait_for(lambda: in_flight_records(r) == [], timeout=5)
    assert server.stop() == 0
    day = time.strftime("%Y-%m-%d", time.gmtime())
    assert r.get("stat:processed") == str(successes + failures).encode()
    assert r.get("stat:failed") == str(failures).encode()
    assert r.get(f"stat:processed:{day}") == str(successes + failures).encode()
    assert r.get(f"stat:failed:{day}") == str(failures).encode()
