"""Retries and the dead set: Sidekiq's backoff and fields (retry.py, pure), then the whole
failure path through a real server: retry, dead, drop, refusal, invalid payloads, hooks."""

from __future__ import annotations

import base64
import json
import zlib
from typing import Any

import pytest
import redis

import difo
from difo import retry, unit
from difo.api import DeadSet, RetrySet
from difo.backends import open_backend
from difo.backends.redis import keys
from difo.scheduler import Scheduler
from tests import functions, retry_functions
from tests.conftest import wait_for

NOW = 1_800_000_000.5
EXTRA = ("--import", "tests.retry_functions")


def payload(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"retry": True, "queue": "default", "class": "app.tasks:work",
                            "args": [1], "jid": "a" * 24, "created_at": NOW - 60,
                            "enqueued_at": NOW - 30}
    base.update(fields)
    return base


def fail_with(exc: BaseException) -> BaseException:
    """`exc` with a traceback, as a worker sees it."""
    try:
        raise exc
    except BaseException as raised:
        return raised


class AppError(Exception):
    pass


# -- the backoff -------------------------------------------------------------------------------


@pytest.mark.parametrize(("count", "expected"), [
    (0, 15), (1, 16), (2, 31), (3, 96), (4, 271), (5, 640), (9, 6576), (24, 331791),
])
def test_delay_without_jitter_is_sidekiqs_table(count: int, expected: int) -> None:
    assert retry.delay(count, randrange=lambda n: 0) == expected


def test_delay_jitter_is_rand_10_times_count_plus_one() -> None:
    asked: list[int] = []

    def highest(n: int) -> int:
        asked.append(n)
        return n - 1

    for count in range(25):
        assert retry.delay(count, randrange=highest) == count**4 + 15 + 9 * (count + 1)
    assert asked == [10] * 25
    total = sum(retry.delay(count, randrange=lambda n: 0) for count in range(25))
    assert 20 * 86400 < total < 21 * 86400  # "about 20.4 days" for all 25 retries


def test_custom_retry_in_is_used_as_is_without_jitter() -> None:
    exc = fail_with(AppError("boom"))
    calls: list[tuple[int, BaseException]] = []

    def retry_in(count: int, error: BaseException) -> float:
        calls.append((count, error))
        return 7.5

    assert retry.delay(3, exc, retry_in, randrange=lambda n: 9) == 7.5
    assert calls == [(3, exc)]


@pytest.mark.parametrize("returned", [None, 0, -5, float("nan"), float("inf"), "10", True])
def test_retry_in_without_a_positive_number_falls_back_to_the_backoff(returned: Any) -> None:
    exc = fail_with(AppError("boom"))
    assert retry.delay(2, exc, lambda count, error: returned, randrange=lambda n: 1) == 31 + 3


def test_retry_in_that_raises_falls_back_to_the_backoff() -> None:
    def broken(count: int, error: BaseException) -> float:
        raise ZeroDivisionError("oops")

    exc = fail_with(AppError("boom"))
    assert retry.delay(0, exc, broken, randrange=lambda n: 4) == 15 + 4
    decision = retry.decide(payload(), exc, NOW, broken, randrange=lambda n: 0)
    assert (decision.action, decision.at) == ("retry", NOW + 15)


# -- decide: fields and outcomes ---------------------------------------------------------------


def test_first_failure_fields() -> None:
    original = payload(custom_key={"kept": [1, 2]})
    before = json.dumps(original, sort_keys=True)
    decision = retry.decide(original, fail_with(ValueError("bad value 42")), NOW,
                            randrange=lambda n: 3)
    assert json.dumps(original, sort_keys=True) == before  # the input is not changed
    failed = decision.payload
    assert decision.action == "retry"
    assert decision.at == NOW + 15 + 3
    assert failed["retry_count"] == 0
    assert failed["failed_at"] == NOW
    assert "retried_at" not in failed
    assert failed["error_message"] == "bad value 42"
    assert failed["error_class"] == "ValueError"
    assert "error_backtrace" not in failed  # backtrace not asked for
    assert failed["custom_key"] == {"kept": [1, 2]}
    for name in ("class", "args", "jid", "queue", "retry", "created_at", "enqueued_at"):
        assert failed[name] == original[name]


def test_later_failures_raise_the_count_and_keep_failed_at() -> None:
    first = retry.decide(payload(), fail_with(AppError("one")), NOW,
                         randrange=lambda n: 0).payload
    second = retry.decide(first, fail_with(AppError("two")), NOW + 100,
                          randrange=lambda n: 0)
    assert second.payload["retry_count"] == 1
    assert second.payload["failed_at"] == NOW
    assert second.payload["retried_at"] == NOW + 100
    assert second.payload["error_message"] == "two"
    assert second.payload["error_class"] == f"{__name__}.AppError"
    assert second.at == NOW + 100 + 16
    third = retry.decide(second.payload, fail_with(AppError("three")), NOW + 200,
                         randrange=lambda n: 0)
    assert (third.payload["retry_count"], third.payload["failed_at"],
            third.payload["retried_at"]) == (2, NOW, NOW + 200)


def run_until_settled(start: dict[str, Any], retry_in: Any = None) -> list[retry.Decision]:
    decisions = []
    current = start
    for attempt in range(40):
        decision = retry.decide(current, fail_with(AppError(f"try {attempt}")),
                                NOW + attempt, retry_in, randrange=lambda n: 0)
        decisions.append(decision)
        if decision.action != "retry":
            return decisions
        current = decision.payload
    raise AssertionError("never settled")


@pytest.mark.parametrize(("option", "retries", "final"), [
    (5, 5, "dead"), (0, 0, "dead"), (1, 1, "dead"), (True, 25, "dead"), ("yes", 25, "dead"),
    (False, 0, "drop"), (None, 0, "drop"), (-3, 0, "dead"),
])
def test_retry_option_sets_the_number_of_retries(option: Any, retries: int, final: str) -> None:
    decisions = run_until_settled(payload(retry=option))
    assert [d.action for d in decisions] == ["retry"] * retries + [final]
    assert decisions[-1].payload["retry_count"] == retries


def test_missing_retry_field_means_25_retries() -> None:
    start = payload()
    del start["retry"]
    assert len(run_until_settled(start)) == 26


def test_dead_false_drops_an_exhausted_unit() -> None:
    decisions = run_until_settled(payload(retry=2, dead=False))
    assert [d.action for d in decisions] == ["retry", "retry", "drop"]


def test_retry_queue_replaces_the_queue() -> None:
    decision = retry.decide(payload(retry_queue="slow"), fail_with(AppError("x")), NOW,
                            randrange=lambda n: 0)
    assert decision.payload["queue"] == "slow"
    assert decision.payload["retry_queue"] == "slow"


def test_error_message_is_cut_at_10000_characters_and_made_utf8() -> None:
    decision = retry.decide(payload(), fail_with(AppError("x" * 20_000)), NOW)
    assert decision.payload["error_message"] == "x" * 10_000
    odd = retry.decide(payload(), fail_with(AppError("bad \udc80 text")), NOW)
    unit.encode(odd.payload)  # a lone surrogate would not encode
    assert odd.payload["error_message"].startswith("bad ")


def test_an_exception_whose_str_raises_still_gives_a_message() -> None:
    class Broken(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no str")

    decision = retry.decide(payload(), fail_with(Broken()), NOW)
    assert "Broken" in decision.payload["error_message"]


def raise_three_deep() -> None:
    def level_one() -> None:
        level_two()

    def level_two() -> None:
        raise AppError("deep")

    level_one()


def test_backtrace_true_keeps_every_line_in_sidekiqs_encoding() -> None:
    try:
        raise_three_deep()
    except AppError as exc:
        failed = retry.decide(payload(backtrace=True), exc, NOW).payload
    encoded = failed["error_backtrace"]
    lines = retry.decode_backtrace(encoded)
    # Plain base64 + zlib + JSON reads it too: the format Sidekiq's Web UI decodes.
    assert json.loads(zlib.decompress(base64.b64decode(encoded))) == lines
    assert len(lines) == 4
    assert lines[0].endswith(":in `level_two'")  # innermost first, as Ruby orders them
    assert lines[1].endswith(":in `level_one'")
    assert lines[2].endswith(":in `raise_three_deep'")
    assert lines[3].endswith(":in `test_backtrace_true_keeps_every_line_in_sidekiqs_encoding'")
    assert all(line.startswith(__file__ + ":") for line in lines)


def test_backtrace_n_keeps_the_first_n_lines() -> None:
    try:
        raise_three_deep()
    except AppError as exc:
        two = retry.decide(payload(backtrace=2), exc, NOW).payload
        off = retry.decide(payload(backtrace=False), exc, NOW).payload
    lines = retry.decode_backtrace(two["error_backtrace"])
    assert [line.rsplit(":in ", 1)[1] for line in lines] == ["`level_two'", "`level_one'"]
    assert "error_backtrace" not in off


def test_decode_backtrace_reads_rubys_mime_base64_and_the_old_json_array() -> None:
    lines = ["app/workers/flaky.rb:5:in `perform'", "lib/sidekiq/processor.rb:196:in `x'"]
    compact = base64.b64encode(zlib.compress(json.dumps(lines, separators=(",", ":"))
                                             .encode())).decode()
    # Ruby's Base64.encode64: a newline every 60 characters and one at the end.
    ruby = "".join(compact[i:i + 60] + "\n" for i in range(0, len(compact), 60))
    assert "\n" in ruby.rstrip("\n")
    assert retry.decode_backtrace(ruby) == lines
    assert retry.decode_backtrace(json.dumps(lines)) == lines


# -- through a server ------------------------------------------------------------------------


def results(r: redis.Redis, tag: str) -> list[Any]:
    items: list[bytes] = r.lrange(f"results:{tag}", 0, -1)  # type: ignore[assignment]
    return [json.loads(item) for item in items]


def dead_entries(r: redis.Redis) -> list[dict[str, Any]]:
    raws: list[bytes] = r.zrange("dead", 0, -1)  # type: ignore[assignment]
    return [json.loads(raw) for raw in raws]


def by_jid(r: redis.Redis, key: str, jid: str) -> tuple[dict[str, Any], float] | None:
    rows: list[tuple[bytes, float]] = r.zrange(key, 0, -1, withscores=True)  # type: ignore[assignment]
    for raw, score in rows:
        entry = json.loads(raw)
        if entry.get("jid") == jid:
            return entry, score
    return None


def failures(r: redis.Redis, jid: str) -> list[dict[str, Any]]:
    return [f for f in results(r, "failures") if f["jid"] == jid]


def test_a_flaky_unit_is_retried_then_dead_with_sidekiqs_fields(
    client: Any, r: redis.Redis, start_server: Any
) -> None:
    start_server(*EXTRA)
    before = unit.now()
    jid = functions.flaky.perform("flaky-1")  # retry=2, retry_in 0.2 s, backtrace=True
    wait_for(lambda: r.zcard("dead") == 1, timeout=15)
    assert r.lrange("results:flaky-1", 0, -1) == [b"try"] * 3
    dead, score = by_jid(r, "dead", jid) or ({}, 0.0)
    # Sidekiq's fields and nothing else (a member of `dead` written by Sidekiq has these).
    assert set(dead) == {"retry", "queue", "backtrace", "class", "args", "jid", "created_at",
                         "enqueued_at", "error_message", "error_class", "failed_at",
                         "retry_count", "retried_at", "error_backtrace"}
    assert dead["class"] == "tests.functions:flaky"
    assert dead["args"] == ["flaky-1"]
    assert dead["queue"] == "default"
    assert dead["retry"] == 2
    assert dead["retry_count"] == 2
    assert dead["error_class"] == "RuntimeError"
    assert dead["error_message"] == "flaky flaky-1"
    assert before <= dead["failed_at"] < dead["retried_at"] <= score <= unit.now()
    assert isinstance(dead["failed_at"], float) and isinstance(dead["retried_at"], float)
    lines = retry.decode_backtrace(dead["error_backtrace"])
    assert lines == json.loads(zlib.decompress(base64.b64decode(dead["error_backtrace"])))
    assert lines[0].endswith("tests/functions.py:" + lines[0].split(":")[1] + ":in `flaky'")
    assert r.zcard("retry") == 0 and r.zcard("schedule") == 0
    assert [f["retry_count"] for f in failures(r, jid)] == [None, 0, 1]  # on_failure hook
    assert DeadSet(backend=client.url).find(jid) is not None


def test_retry_five_runs_six_times_counting_from_zero(
    client: Any, r: redis.Redis, start_server: Any
) -> None:
    start_server(*EXTRA)
    jid = retry_functions.fail_five.perform("five")
    wait_for(lambda: r.zcard("dead") == 1, timeout=20)
    assert results(r, "five") == [None, 0, 1, 2, 3, 4]  # retry_count seen by each run
    dead, _ = by_jid(r, "dead", jid) or ({}, 0.0)
    assert dead["retry_count"] == 5
    assert dead["error_class"] == "KeyError"
    assert dead["error_message"] == "'five'"
    assert "error_backtrace" not in dead


def test_retry_0_is_dead_on_the_first_failure(
    client: Any, r: redis.Redis, start_server: Any
) -> None:
    start_server(*EXTRA)
    jid = functions.fail_straight_to_dead.perform("zero")
    wait_for(lambda: r.zcard("dead") == 1, timeout=10)
    dead, _ = by_jid(r, "dead", jid) or ({}, 0.0)
    assert dead["retry_count"] == 0
    assert dead["retry"] == 0
    assert "failed_at" in dead and "retried_at" not in dead
    assert r.zcard("retry") == 0


def test_retry_false_keeps_nothing_and_counts_a_failure(
    client: Any, r: redis.Redis, start_server: Any
) -> None:
    server = start_server(*EXTRA)
    jid = functions.fail_no_retry.perform("noretry")
    wait_for(lambda: len(failures(r, jid)) == 1, timeout=10)
    assert server.stop() == 0  # the last beat flushes the counts
    assert r.lrange("results:noretry", 0, -1) == [b"try"]
    assert r.zcard("retry") == 0 and r.zcard("dead") == 0
    assert r.get("stat:failed") == b"1"
    assert r.get("stat:processed") == b"1"
    assert not [k for k in r.keys("difo:inflight:*") if r.hlen(k)]


def test_dead_false_drops_the_exhausted_unit(
    client: Any, r: redis.Redis, start_server: Any
) -> None:
    start_server(*EXTRA)
    jid = functions.fail_no_dead.perform("nodead")  # retry=1, dead=False
    wait_for(lambda: len(failures(r, jid)) == 2, timeout=15)
    wait_for(lambda: not [k for k in r.keys("difo:inflight:*") if r.hlen(k)], timeout=5)
    assert r.lrange("results:nodead", 0, -1) == [b"try", b"try"]
    assert r.zcard("retry") == 0 and r.zcard("dead") == 0


def test_backtrace_n_and_retry_queue(client: Any, r: redis.Redis, start_server: Any) -> None:
    start_server("-q", "default rq-retries", *EXTRA)
    jid = retry_functions.fail_deep.perform("deep")  # retry=1, backtrace=2
    wait_for(lambda: r.zcard("dead") == 1, timeout=15)
    assert results(r, "deep") == ["default", "rq-retries"]  # the retry ran on retry_queue
    dead, _ = by_jid(r, "dead", jid) or ({}, 0.0)
    assert dead["queue"] == "rq-retries"
    assert dead["retry_queue"] == "rq-retries"
    assert dead["backtrace"] == 2
    lines = retry.decode_backtrace(dead["error_backtrace"])
    assert len(lines) == 2
    assert all(line.endswith(":in `_inner'") for line in lines)
    assert all("tests/retry_functions.py:" in line for line in lines)


def test_default_backoff_puts_the_retry_15_to_24_seconds_out(
    client: Any, r: redis.Redis, start_server: Any
) -> None:
    start_server(*EXTRA)
    jid = difo.perform(functions.fail, "backoff", "plain failure")
    broken = retry_functions.fail_broken_retry_in.perform("broken")
    wait_for(lambda: r.zcard("retry") == 2, timeout=10)
    for which in (jid, broken):
        entry, score = by_jid(r, "retry", which) or ({}, 0.0)
        assert entry["retry_count"] == 0
        assert entry["failed_at"] + 15 <= score <= entry["failed_at"] + 24 + 1
    entry, _ = by_jid(r, "retry", jid) or ({}, 0.0)
    assert entry["error_class"] == "ValueError"
    assert entry["error_message"] == "plain failure"
    assert "enqueued_at" in entry  # Sidekiq keeps it in retry members


def test_a_unit_of_a_module_not_allowed_goes_to_dead_at_once(
    client: Any, r: redis.Redis, start_server: Any
) -> None:
    start_server(*EXTRA)
    refused = unit.build("json:dumps", [1], "default")
    refused["retry"] = 5
    client.backend.push("default", [unit.encode(refused)])
    wait_for(lambda: r.zcard("dead") == 1, timeout=10)
    dead, _ = by_jid(r, "dead", refused["jid"]) or ({}, 0.0)
    assert dead["error_class"] == "difo.errors.UnitRefused"
    assert "--import json" in dead["error_message"]
    assert dead["retry_count"] == 0 and "failed_at" in dead
    assert dead["class"] == "json:dumps" and dead["args"] == [1]
    assert r.zcard("retry") == 0
    assert [f["error"] for f in failures(r, refused["jid"])] == ["UnitRefused"]


def test_a_missing_function_in_an_allowed_module_is_retried(
    client: Any, r: redis.Redis, start_server: Any
) -> None:
    start_server(*EXTRA)
    missing = unit.build("tests.functions:not_there_yet", ["x"], "default")
    client.backend.push("default", [unit.encode(missing)])
    wait_for(lambda: r.zcard("retry") == 1, timeout=10)
    entry, score = by_jid(r, "retry", missing["jid"]) or ({}, 0.0)
    assert entry["error_class"] == "difo.registry.FunctionMissing"
    assert "not_there_yet" in entry["error_message"]
    assert entry["retry_count"] == 0
    assert score >= entry["failed_at"] + 15
    assert r.zcard("dead") == 0


def test_undecodable_payloads_go_to_dead_wrapped_with_the_reason(
    client: Any, r: redis.Redis, start_server: Any
) -> None:
    start_server(*EXTRA)
    r.lpush("queue:default", b"not json {", b'{"args": [1]}')
    r.sadd("queues", "default")
    r.zadd("schedule", {b"\xffjunk in the schedule": 1.0})
    wait_for(lambda: r.zcard("dead") == 3, timeout=10)
    dead = {entry["difo_raw"]: entry for entry in dead_entries(r)}
    assert set(dead) == {"not json {", '{"args": [1]}', "\\xffjunk in the schedule"}
    for entry in dead.values():
        assert entry["class"] == "difo:InvalidPayload"
        assert entry["args"] == [] and len(entry["jid"]) == 24
        assert entry["error_class"] == "difo.errors.PayloadError"
        assert entry["retry"] is False and entry["retry_count"] == 0
    assert "not JSON" in dead["not json {"]["error_message"]
    assert "queue 'default'" in dead["not json {"]["error_message"]
    assert "'class'" in dead['{"args": [1]}']["error_message"]
    assert "schedule or retry set" in dead["\\xffjunk in the schedule"]["error_message"]
    assert r.llen("queue:default") == 0 and r.zcard("schedule") == 0


def test_current_gives_the_running_units_context(
    client: Any, r: redis.Redis, start_server: Any
) -> None:
    start_server("-q", "ctx-q default", *EXTRA)
    pushed_at = unit.now()
    jid = retry_functions.context_until.perform_on("ctx-q", "ctx", 1)
    wait_for(lambda: r.llen("results:ctx") == 2, timeout=15)
    first, second = results(r, "ctx")
    for seen in (first, second):
        assert seen["jid"] == jid
        assert seen["queue"] == "ctx-q"
        assert seen["function"] == "tests.retry_functions:context_until"
        assert seen["args"] == ["ctx", 1]
    assert first["retry_count"] is None
    assert second["retry_count"] == 0
    assert pushed_at <= first["enqueued_at"] < second["enqueued_at"] <= unit.now()
    plain = difo.perform(functions.record_context, "plain-ctx")
    wait_for(lambda: r.llen("results:plain-ctx") == 1, timeout=10)
    assert results(r, "plain-ctx") == [{"jid": plain, "queue": "default", "retry_count": None}]


# -- the dead set's limits ---------------------------------------------------------------------


def fill_dead(r: redis.Redis, count: int, score: float) -> None:
    pipe = r.pipeline(transaction=False)
    for start in range(0, count, 2000):
        pipe.zadd("dead", {f'{{"filler":{i}}}': score + i * 1e-3
                           for i in range(start, min(start + 2000, count))})
    pipe.execute()


def test_every_way_into_dead_trims_it_to_sidekiqs_limits(
    client: Any, r: redis.Redis, start_server: Any
) -> None:
    assert (keys.DEAD_MAX, keys.DEAD_TIMEOUT) == (10_000, 180 * 24 * 3600)
    now = unit.now()
    old = now - keys.DEAD_TIMEOUT - 3600

    def reset() -> None:
        r.delete("dead")
        r.zadd("dead", {b'{"ancient":1}': old})  # older than 180 days
        fill_dead(r, keys.DEAD_MAX, now - 3600)

    # 1. A worker kills a unit (kill.lua).
    reset()
    server = start_server(*EXTRA)
    jid = functions.fail_straight_to_dead.perform("trim")
    wait_for(lambda: by_jid(r, "dead", jid) is not None, timeout=10)
    server.stop()
    # Sidekiq's ZREMRANGEBYRANK 0 -max leaves max - 1 entries: the oldest went first.
    assert r.zcard("dead") == keys.DEAD_MAX - 1
    assert r.zscore("dead", b'{"ancient":1}') is None
    assert r.zscore("dead", b'{"filler":0}') is None
    assert r.zscore("dead", b'{"filler":1}') is None
    assert r.zscore("dead", b'{"filler":2}') is not None

    # 2. The API kills a retry entry (move_to_dead.lua).
    reset()
    r.zadd("retry", {unit.encode(unit.build("tests.functions:noop", [], "default")): now})
    assert DeadSet(backend=client.url).size == keys.DEAD_MAX + 1
    entry = next(iter(RetrySet(backend=client.url)))
    assert entry.kill()
    assert r.zcard("dead") == keys.DEAD_MAX - 1
    assert r.zscore("dead", entry.raw) is not None
    assert r.zscore("dead", b'{"ancient":1}') is None

    # 3. The scheduler sends junk to dead (release.lua).
    reset()
    r.zadd("schedule", {b"junk": 1.0})
    Scheduler(open_backend(client.url), "trim-test", 0.5).step()
    assert r.zcard("dead") == keys.DEAD_MAX - 1
    assert r.zscore("dead", b'{"ancient":1}') is None
    assert r.hlen(keys.staging("trim-test")) == 0


def test_the_age_limit_alone_removes_only_old_entries(client: Any, r: redis.Redis) -> None:
    now = unit.now()
    r.zadd("dead", {b'{"old":1}': now - keys.DEAD_TIMEOUT - 60,
                    b'{"recent":1}': now - keys.DEAD_TIMEOUT + 3600})
    r.zadd("retry", {unit.encode(unit.build("tests.functions:noop", [], "default")): now})
    assert RetrySet(backend=client.url).page(1)[0].kill()
    assert r.zscore("dead", b'{"old":1}') is None
    assert r.zscore("dead", b'{"recent":1}') is not None
    assert r.zcard("dead") == 2

