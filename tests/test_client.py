"""The client against a real private Redis: perform*, @difo.job defaults, bulk chunks (one
round trip each), scheduled units, refused arguments writing nothing, a dead Redis, and
arguments surviving a real `difo server` unchanged."""

from __future__ import annotations

import json
import re
import time
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis

import difo
from difo import unit
from difo.client import BULK_CHUNK, Client
from tests import functions
from tests.conftest import RedisServer, free_port, wait_for

JID = re.compile(r"^[0-9a-f]{24}$")


@difo.job(queue="mail", retry=5, backtrace=True, tags=["welcome"], dead=False)
def mail_job(user_id: int, note: str = "") -> None:
    """Enqueued only: no server runs it."""


def stored(r: redis.Redis, queue: str) -> list[dict[str, Any]]:
    """The payloads of queue:<queue> in the order a server pops them (tail first)."""
    raw: list[bytes] = r.lrange(f"queue:{queue}", 0, -1)  # type: ignore[assignment]
    return [json.loads(item) for item in reversed(raw)]


def raw_stored(r: redis.Redis, queue: str) -> list[bytes]:
    return list(reversed(r.lrange(f"queue:{queue}", 0, -1)))  # type: ignore[arg-type]


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same JSON type all the way down (1.0 is not 1, [] is not {})."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def scripted_calls(r: redis.Redis) -> int:
    """Script calls (EVALSHA/EVAL) the private Redis has served, from commandstats."""
    stats: dict[str, dict[str, int]] = r.info("commandstats")  # type: ignore[assignment]
    return sum(stats.get(f"cmdstat_{name}", {}).get("calls", 0)
               for name in ("evalsha", "eval", "evalsha_ro", "eval_ro"))


def command_calls(r: redis.Redis, name: str) -> int:
    stats: dict[str, dict[str, int]] = r.info("commandstats")  # type: ignore[assignment]
    return stats.get(f"cmdstat_{name}", {}).get("calls", 0)


# -- perform and perform_on ------------------------------------------------------------------


def test_perform_stores_a_sidekiq_payload_and_returns_its_jid(client: Any, r: redis.Redis) -> None:
    before = unit.now()
    jid = difo.perform(functions.add, 1, 2)
    after = unit.now()
    assert JID.match(jid)
    [payload] = stored(r, "default")
    assert payload["jid"] == jid
    assert payload["class"] == "tests.functions:add"
    assert payload["args"] == [1, 2]
    assert payload["queue"] == "default"
    assert payload["retry"] is True
    assert before <= payload["created_at"] <= payload["enqueued_at"] <= after
    assert r.smembers("queues") == {b"default"}
    [raw] = raw_stored(r, "default")
    assert re.search(rb'"created_at":\d+\.\d+', raw)
    assert re.search(rb'"enqueued_at":\d+\.\d+', raw)
    assert b"NaN" not in raw and b"Infinity" not in raw


def test_each_perform_returns_a_new_jid_in_fifo_order(client: Any, r: redis.Redis) -> None:
    jids = [difo.perform(functions.add, i, i) for i in range(5)]
    assert len(set(jids)) == 5
    assert [p["jid"] for p in stored(r, "default")] == jids
    assert [p["args"] for p in stored(r, "default")] == [[i, i] for i in range(5)]


def test_floats_stay_floats_and_empty_lists_stay_lists_in_redis(
    client: Any, r: redis.Redis
) -> None:
    args = ["t", 1.0, [], {}, 2**70, 1e-300]
    difo.perform(functions.record, *args)
    [raw] = raw_stored(r, "default")
    assert b'"args":["t",1.0,[],{},1180591620717411303424,1e-300]' in raw
    assert same(json.loads(raw)["args"], args)


def test_perform_on_names_the_queue(client: Any, r: redis.Redis) -> None:
    jid = difo.perform_on("reports", functions.add, 3, 4)
    [payload] = stored(r, "reports")
    assert payload["jid"] == jid
    assert payload["queue"] == "reports"
    assert r.llen("queue:default") == 0
    assert r.smembers("queues") == {b"reports"}


def test_job_defaults_travel_with_every_unit(client: Any, r: redis.Redis) -> None:
    first = mail_job.perform(7)
    second = difo.perform(mail_job, 8, "hi")
    [one, two] = stored(r, "mail")
    assert (one["jid"], two["jid"]) == (first, second)
    for payload in (one, two):
        assert payload["class"] == "tests.test_client:mail_job"
        assert payload["queue"] == "mail"
        assert payload["retry"] == 5
        assert payload["backtrace"] is True
        assert payload["tags"] == ["welcome"]
        assert payload["dead"] is False
    assert two["args"] == [8, "hi"]


def test_job_perform_on_overrides_only_the_queue(client: Any, r: redis.Redis) -> None:
    jid = mail_job.perform_on("urgent", 9)
    other = difo.perform_on("urgent", functions.send_welcome, 10)
    [payload, welcome] = stored(r, "urgent")
    assert payload["jid"] == jid and welcome["jid"] == other
    assert payload["queue"] == "urgent"
    assert payload["retry"] == 5
    assert welcome["retry"] == 3
    assert r.llen("queue:mail") == 0


@pytest.mark.parametrize("queue", ["", "two words", "bad/name", "tab\tq", "ünï"])
def test_a_queue_no_server_could_serve_is_refused_and_nothing_written(
    client: Any, r: redis.Redis, queue: str
) -> None:
    calls = [
        lambda: difo.perform_on(queue, functions.add, 1, 2),
        lambda: difo.perform_in(60, functions.add, 1, 2, queue=queue),
        lambda: difo.perform_at(unit.now() - 1, functions.add, 1, 2, queue=queue),
        lambda: difo.perform_bulk(functions.add, [[1, 2]], queue=queue),
        lambda: mail_job.perform_on(queue, 1),
    ]
    for call in calls:
        with pytest.raises(difo.ConfigError, match="not a queue name"):
            call()
    assert r.dbsize() == 0


def test_queue_names_with_colons_dots_and_dashes_are_fine(client: Any, r: redis.Redis) -> None:
    for queue in ("a:b", "mail.v2", "low-priority", "x_1"):
        difo.perform_on(queue, functions.add, 1, 2)
        assert r.llen(f"queue:{queue}") == 1


def test_a_job_with_a_negative_retry_count_is_refused() -> None:
    with pytest.raises(difo.FunctionError, match="retry"):
        difo.job(retry=-1)(functions.noop)


# -- refused arguments write nothing -------------------------------------------------------


class Opaque:
    pass


REFUSED: list[Any] = [
    (1, 2),
    datetime(2025, 1, 1, tzinfo=timezone.utc),
    Decimal("9.99"),
    {1, 2},
    b"raw",
    Opaque(),
    float("nan"),
    float("inf"),
    {1: "x"},
    {"deep": [{"deeper": (1,)}]},
]


@pytest.mark.parametrize("value", REFUSED, ids=lambda v: type(v).__name__)
def test_refused_arguments_write_nothing(client: Any, r: redis.Redis, value: Any) -> None:
    calls = [
        lambda: difo.perform(functions.add, 1, value),
        lambda: difo.perform_on("q", functions.add, 1, value),
        lambda: difo.perform_in(60, functions.add, 1, value),
        lambda: difo.perform_at(unit.now() - 10, functions.add, 1, value),
        lambda: functions.send_welcome.perform(value),
        lambda: mail_job.perform_on("q", 1, value),
        lambda: difo.perform_bulk(functions.add, [[1, 2], [1, value]]),
    ]
    for call in calls:
        with pytest.raises(difo.ArgumentError) as caught:
            call()
        message = str(caught.value)
        assert "argument 2" in message or "argument 1" in message
        assert "instead" in message
    assert r.dbsize() == 0


def test_refused_argument_message_names_function_position_and_parameter(
    client: Any, r: redis.Redis
) -> None:
    with pytest.raises(difo.ArgumentError) as caught:
        difo.perform(functions.add, 1, {"when": datetime(2025, 1, 1, tzinfo=timezone.utc)})
    message = str(caught.value)
    assert message.startswith("tests.functions:add argument 2 (\"b\") at ['when'] is a datetime")
    assert "isoformat()" in message
    with pytest.raises(difo.ArgumentError, match=r'mail_job argument 2 \("note"\) is a tuple'):
        mail_job.perform(1, ("x",))
    assert r.dbsize() == 0


def test_functions_a_server_could_never_find_are_refused(client: Any, r: redis.Redis) -> None:
    def nested(x: int) -> None:
        pass

    for fn in (lambda x: x, nested, Opaque, print):
        with pytest.raises(difo.FunctionError):
            difo.perform(fn, 1)
    assert r.dbsize() == 0


# -- perform_bulk ------------------------------------------------------------------------------


def test_perform_bulk_is_one_round_trip_per_chunk(client: Any, r: redis.Redis) -> None:
    difo.perform(functions.noop)  # loads the script, so every call below is one EVALSHA
    r.delete("queue:default")
    count = 2 * BULK_CHUNK + 500
    scripts_before = scripted_calls(r)
    lpush_before = command_calls(r, "lpush")
    jids = difo.perform_bulk(functions.add, [[i, i] for i in range(count)])
    chunks = -(-count // BULK_CHUNK)
    assert scripted_calls(r) - scripts_before == chunks
    # One LPUSH of the whole chunk (plus at most one wake-up token), never one per unit.
    assert command_calls(r, "lpush") - lpush_before <= 2 * chunks
    assert len(jids) == len(set(jids)) == count
    payloads = stored(r, "default")
    assert [p["jid"] for p in payloads] == jids
    assert [p["args"] for p in payloads] == [[i, i] for i in range(count)]
    assert all(p["class"] == "tests.functions:add" and "enqueued_at" in p for p in payloads)


def test_perform_bulk_with_a_queue_and_job_defaults(client: Any, r: redis.Redis) -> None:
    jids = mail_job.perform_bulk([[1], [2]], queue="bulkmail")
    payloads = stored(r, "bulkmail")
    assert [p["jid"] for p in payloads] == jids
    assert all(p["retry"] == 5 and p["queue"] == "bulkmail" for p in payloads)
    assert difo.perform_bulk(functions.add, []) == []
    assert r.llen("queue:default") == 0


def test_perform_bulk_accepts_tuples_as_argument_lists(client: Any, r: redis.Redis) -> None:
    difo.perform_bulk(functions.add, [(1, 2), (3, 4)])
    assert [p["args"] for p in stored(r, "default")] == [[1, 2], [3, 4]]


def test_one_bad_item_of_a_list_writes_nothing(client: Any, r: redis.Redis) -> None:
    args_list: list[list[Any]] = [[i, i] for i in range(1500)]
    args_list[500] = [500, {"at": {1, 2}}]
    with pytest.raises(difo.ArgumentError) as caught:
        difo.perform_bulk(functions.add, args_list)
    message = str(caught.value)
    assert "item 500" in message
    assert "tests.functions:add argument 2 (\"b\") at ['at'] is a set" in message
    assert "already" not in message
    assert r.dbsize() == 0


@pytest.mark.parametrize("item", [5, "ab", None, {"a": 1}], ids=repr)
def test_a_bulk_item_that_is_not_an_argument_list_writes_nothing(
    client: Any, r: redis.Redis, item: Any
) -> None:
    args_list: list[Any] = [[1, 2]] * 1200
    args_list[1100] = item
    with pytest.raises(difo.ArgumentError) as caught:
        difo.perform_bulk(functions.add, args_list)
    assert "item 1100" in str(caught.value)
    assert r.dbsize() == 0


def test_an_iterator_writes_the_chunks_before_the_bad_one_and_says_how_many(
    client: Any, r: redis.Redis
) -> None:
    def generate() -> Any:
        for i in range(2500):
            yield [i, (i,)] if i == 1500 else [i, i]

    with pytest.raises(difo.ArgumentError) as caught:
        difo.perform_bulk(functions.add, generate())
    message = str(caught.value)
    assert "item 1500" in message
    assert f"{BULK_CHUNK} units of earlier chunks were already enqueued" in message
    payloads = stored(r, "default")
    assert [p["args"] for p in payloads] == [[i, i] for i in range(BULK_CHUNK)]


def test_an_iterator_in_the_first_chunk_writes_nothing(client: Any, r: redis.Redis) -> None:
    items = iter([[1, 2], [3, b"x"], [5, 6]])
    with pytest.raises(difo.ArgumentError) as caught:
        difo.perform_bulk(functions.add, items)
    assert "already" not in str(caught.value)
    assert r.dbsize() == 0


def test_a_good_iterator_is_written_whole(client: Any, r: redis.Redis) -> None:
    jids = difo.perform_bulk(functions.add, ([i, 0] for i in range(BULK_CHUNK + 1)))
    assert len(jids) == BULK_CHUNK + 1
    assert [p["jid"] for p in stored(r, "default")] == jids


# -- perform_in and perform_at -----------------------------------------------------------------


def schedule(r: redis.Redis) -> list[tuple[dict[str, Any], float]]:
    rows: list[tuple[bytes, float]] = r.zrange("schedule", 0, -1, withscores=True)  # type: ignore[assignment]
    return [(json.loads(raw), score) for raw, score in rows]


def test_perform_in_writes_the_schedule_with_the_due_time(client: Any, r: redis.Redis) -> None:
    before = unit.now()
    jid = difo.perform_in(90, functions.add, 1, 2)
    other = functions.send_welcome.perform_in(timedelta(hours=1), 5)
    after = unit.now()
    rows = {member["jid"]: (member, score) for member, score in schedule(r)}
    member, score = rows[jid]
    assert before + 90 <= score <= after + 90
    assert "enqueued_at" not in member
    assert member["class"] == "tests.functions:add" and member["args"] == [1, 2]
    assert before <= member["created_at"] <= after
    welcome, welcome_score = rows[other]
    assert before + 3600 <= welcome_score <= after + 3600
    assert welcome["queue"] == "mail" and "enqueued_at" not in welcome
    assert r.exists("queue:default", "queue:mail") == 0


def test_perform_at_an_aware_datetime_or_epoch_seconds(client: Any, r: redis.Redis) -> None:
    when = datetime.now(timezone(timedelta(hours=-5))) + timedelta(days=1)
    first = difo.perform_at(when, functions.add, 1, 2, queue="later")
    epoch = unit.now() + 7200.25
    second = mail_job.perform_at(epoch, 3)
    rows = {member["jid"]: (member, score) for member, score in schedule(r)}
    assert rows[first][1] == pytest.approx(when.timestamp(), abs=1e-3)
    assert rows[first][0]["queue"] == "later"
    assert rows[second][1] == pytest.approx(epoch, abs=1e-3)
    assert rows[second][0]["queue"] == "mail"


def test_a_naive_datetime_is_refused_saying_what_to_pass(client: Any, r: redis.Redis) -> None:
    naive = datetime.now() + timedelta(hours=1)
    for call in (lambda: difo.perform_at(naive, functions.add, 1, 2),
                 lambda: mail_job.perform_at(naive, 1)):
        with pytest.raises(difo.ArgumentError) as caught:
            call()
        message = str(caught.value)
        assert "naive" in message
        assert "aware datetime" in message
        assert "epoch seconds" in message
    assert r.dbsize() == 0


def test_a_time_in_the_past_enqueues_at_once(client: Any, r: redis.Redis) -> None:
    before = unit.now()
    jids = [
        difo.perform_at(before - 60, functions.add, 1, 2),
        difo.perform_at(datetime.now(timezone.utc) - timedelta(minutes=5), functions.add, 3, 4),
        difo.perform_in(-5, functions.add, 5, 6),
        difo.perform_in(0, functions.add, 7, 8),
    ]
    assert r.zcard("schedule") == 0
    payloads = stored(r, "default")
    assert [p["jid"] for p in payloads] == jids
    assert all(isinstance(p["enqueued_at"], float) and p["enqueued_at"] >= before
               for p in payloads)


# -- a dead Redis ------------------------------------------------------------------------------


def test_a_dead_redis_raises_backend_unavailable_naming_the_masked_url(
    client: Any, r: redis.Redis
) -> None:
    port = free_port()  # bound and closed again: nothing listens there
    secret = f"pw-{uuid.uuid4().hex}"
    dead_url = f"redis://:{secret}@127.0.0.1:{port}/0"
    masked = f"redis://:***@127.0.0.1:{port}/0"
    dead = Client(dead_url)
    started = time.monotonic()
    calls = [
        lambda: dead.push(functions.add, [1, 2]),
        lambda: dead.push_at(unit.now() + 60, functions.add, [1, 2]),
        lambda: dead.push_bulk(functions.add, [[1, 2]] * 1500),
    ]
    for call in calls:
        with pytest.raises(difo.BackendUnavailable) as caught:
            call()
        message = str(caught.value)
        assert masked in message
        assert secret not in message
        assert secret not in repr(caught.value)
    assert time.monotonic() - started < 30
    dead.close()
    try:
        difo.configure(dead_url)
        with pytest.raises(difo.BackendUnavailable, match=re.escape(masked)):
            difo.perform(functions.add, 1, 2)
    finally:
        difo.configure(str(client.url))
    assert r.dbsize() == 0


def test_a_redis_dying_part_way_through_a_bulk_says_how_many_were_written(
    tmp_path: Path,
) -> None:
    own = RedisServer(tmp_path)  # a second private Redis, stopped between two chunks
    watcher = redis.Redis(port=own.port)
    seen: list[int] = []

    def generate() -> Any:
        for i in range(BULK_CHUNK * 2):
            if i == BULK_CHUNK:
                seen.append(int(watcher.llen("queue:default")))  # type: ignore[arg-type]
                watcher.close()
                own.stop()
            yield [i, i]

    bulk = Client(own.url)
    try:
        with pytest.raises(difo.BulkWriteError) as caught:
            bulk.push_bulk(functions.add, generate())
    finally:
        bulk.close()
        own.stop()
    assert seen == [BULK_CHUNK]
    assert caught.value.written == BULK_CHUNK
    assert f"stopped after {BULK_CHUNK} units" in str(caught.value)
    assert own.url in str(caught.value)


# -- arguments arrive equal at a real server ---------------------------------------------------


ROUND_TRIP: list[Any] = [
    "plain text",
    "",
    "ünïcødé ✓ 漢字 🎉 \u0000 \"quoted\" \\ back",
    0,
    -1,
    2**63,
    2**70,
    -(2**80),
    1.0,
    -0.5,
    0.1,
    1e-300,
    1.7976931348623157e308,
    True,
    False,
    None,
    [],
    {},
    [[], {}, [[]], [{}]],
    {"nested": {"list": [1, 2.0, "3", None, True], "empty": {}, "none": None}},
    [{"a": [{"b": [{"c": []}]}]}],
]


def test_every_json_type_arrives_equal_at_a_real_server(
    client: Any, r: redis.Redis, start_server: Any
) -> None:
    tag = uuid.uuid4().hex
    expected: dict[str, list[Any]] = {}
    for index, value in enumerate(ROUND_TRIP):
        expected[f"{tag}-{index}"] = [value]
    expected[f"{tag}-all"] = list(ROUND_TRIP)
    expected[f"{tag}-none"] = []
    for key, args in expected.items():
        difo.perform(functions.record, key, *args)
    start_server()
    wait_for(lambda: all(r.llen(f"results:{key}") for key in expected), timeout=30)
    for key, args in expected.items():
        [raw] = r.lrange(f"results:{key}", 0, -1)
        received = json.loads(raw)
        assert same(received, args), (key, received, args)
    assert r.llen("queue:default") == 0
