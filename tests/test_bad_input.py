"""Bad input from every side: argument values (property-based), garbage left in Redis by a
foreign writer, and bad settings.

tests/test_unit.py holds the one-value examples of the argument rule; here hypothesis
generates values: what is accepted round-trips exactly, what is refused names its position
and writes nothing.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import difo
from difo import config, unit
from difo.client import Client
from difo.config import _DIFO_SETTINGS
from difo.errors import ArgumentError, ConfigError
from tests import functions
from tests.conftest import wait_for

FUNCTION = "tests.functions:record"

scalars = (
    st.none() | st.booleans() | st.integers() | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text()
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
json_args = st.lists(json_values, max_size=5)


class Opaque:
    pass


bad_values = st.sampled_from([
    (1, 2), {1, 2}, frozenset({1}), b"bytes", bytearray(b"x"), Decimal("1.5"), math.nan,
    math.inf, -math.inf, datetime(2025, 1, 1, tzinfo=timezone.utc), Opaque(), {1: "int key"},
    {("t",): 1}, range(3), print, "lone \udc80 surrogate", "\ud800",
])


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same JSON types all the way down (1, 1.0 and True differ)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[key], b[key]) for key in a)
    if isinstance(a, float) and a == 0:
        return math.copysign(1, a) == math.copysign(1, b)
    return bool(a == b)


# -- arguments: accepted values round-trip exactly -----------------------------------------------


@given(json_args)
@settings(max_examples=300, deadline=None)
def test_accepted_arguments_round_trip_through_encode_and_decode(args: list[Any]) -> None:
    checked = unit.check_args(FUNCTION, args)
    raw = unit.encode(unit.build(FUNCTION, checked, "default"))
    assert same(unit.decode(raw).args, args)
    # The fast encoder a client uses writes the same arguments (or leaves it to `encode`).
    fast = unit.encode_checked(checked)
    if fast is not None:
        assert same(json.loads(fast), args)


@given(args=json_args)
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_accepted_arguments_round_trip_through_redis(args: list[Any], client: Client,
                                                     r: redis.Redis) -> None:
    r.delete("queue:default")
    jid = difo.perform(functions.record, *args)
    stored = r.lrange("queue:default", 0, -1)
    assert len(stored) == 1
    decoded = unit.decode(stored[0])
    assert decoded.jid == jid
    assert same(decoded.args, args)


def test_accepted_arguments_round_trip_through_a_real_server(
    client: Client, r: redis.Redis, start_server: object
) -> None:
    server = start_server("-w", "2")  # type: ignore[operator]
    sent: list[list[Any]] = []

    @given(json_args)
    @settings(max_examples=15, deadline=None, database=None)
    def enqueue(args: list[Any]) -> None:
        tag = f"arg{len(sent)}"
        sent.append(args)
        difo.perform(functions.record, tag, *args)

    try:
        enqueue()
        for index, args in enumerate(sent):
            wait_for(lambda index=index: r.llen(f"results:arg{index}") == 1)
            ran_with = json.loads(r.lindex(f"results:arg{index}", 0))  # type: ignore[arg-type]
            assert same(ran_with, args), (ran_with, args)
    finally:
        server.stop()


# -- arguments: refused values name their position and write nothing ------------------------------


@st.composite
def args_with_a_bad_value(draw: st.DrawFn) -> tuple[list[Any], int]:
    """Plain arguments with one bad value planted somewhere inside argument `position`."""
    args = draw(st.lists(json_values, min_size=1, max_size=4))
    position = draw(st.integers(0, len(args) - 1))
    bad = draw(bad_values)
    for _ in range(draw(st.integers(0, 3))):
        bad = [bad] if draw(st.booleans()) else {draw(st.text(max_size=3)): bad}
    args[position] = bad
    return args, position + 1


@given(args_with_a_bad_value())
@settings(max_examples=300, deadline=None)
def test_refused_arguments_name_the_function_and_position(case: tuple[list[Any], int]) -> None:
    args, position = case
    with pytest.raises(ArgumentError) as caught:
        unit.check_args(FUNCTION, args)
    message = str(caught.value)
    assert message.startswith(FUNCTION), message
    assert f"argument {position}" in message, message
    assert "JSON only" in message


@given(case=args_with_a_bad_value())
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_refused_perform_writes_nothing(case: tuple[list[Any], int], client: Client,
                                        r: redis.Redis) -> None:
    args, position = case
    with pytest.raises(ArgumentError, match=f"argument {position}"):
        difo.perform(functions.record, *args)
    assert r.dbsize() == 0


@given(good=st.lists(json_args, min_size=1, max_size=30), case=args_with_a_bad_value(),
       data=st.data())
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_refused_perform_bulk_writes_nothing(
    good: list[list[Any]], case: tuple[list[Any], int], data: st.DataObject, client: Client,
    r: redis.Redis,
) -> None:
    bad_args, position = case
    item = data.draw(st.integers(0, len(good)))
    batch = [*good[:item], bad_args, *good[item:]]
    with pytest.raises(ArgumentError) as caught:
        difo.perform_bulk(functions.record, batch)
    assert f"item {item}" in str(caught.value)
    assert f"argument {position}" in str(caught.value)
    assert r.dbsize() == 0


def test_a_refused_bulk_larger_than_one_chunk_writes_nothing(client: Client,
                                                              r: redis.Redis) -> None:
    batch: list[list[Any]] = [["t", index] for index in range(2_500)]
    batch[2_400] = ["t", (1, 2)]
    with pytest.raises(ArgumentError, match=r"item 2400.*argument 2"):
        difo.perform_bulk(functions.record, batch)
    assert r.dbsize() == 0


def test_a_lone_surrogate_in_a_bulk_is_refused_before_anything_is_written(
    client: Client, r: redis.Redis
) -> None:
    # It used to pass the check and fail in encoding, after earlier chunks were written.
    batch: list[list[Any]] = [["t", index] for index in range(2_500)]
    batch[2_400] = ["t", {"text": "bad \udc80"}]
    with pytest.raises(ArgumentError, match=r"item 2400.*argument 2.*surrogate"):
        difo.perform_bulk(functions.record, batch)
    assert r.dbsize() == 0


def _nested(depth: int) -> list[Any]:
    outer: list[Any] = []
    inner = outer
    for _ in range(depth - 1):
        inner.append([])
        inner = inner[0]
    return outer


def test_the_nesting_limit_is_the_same_for_client_and_server() -> None:
    deepest = _nested(unit.MAX_DEPTH)
    raw = unit.encode(unit.build(FUNCTION, unit.check_args(FUNCTION, [deepest]), "default"))
    assert unit.decode(raw).args == [deepest]
    with pytest.raises(ArgumentError, match=f"argument 1 at .*more than {unit.MAX_DEPTH}"):
        unit.check_args(FUNCTION, [_nested(unit.MAX_DEPTH + 1)])


# -- garbage in Redis ------------------------------------------------------------------------------

NESTED = 100_000
GARBAGE: dict[str, bytes] = {
    "random-bytes": bytes(range(256)) * 3,
    "empty": b"",
    "json-list": b"[1, 2, 3]",
    "json-string": b'"a unit"',
    "json-number": b"42",
    "json-null": b"null",
    "no-class": b'{"args": [1], "jid": "0123456789abcdef01234567"}',
    "no-args": b'{"class": "tests.functions:record", "jid": "0123456789abcdef01234567"}',
    "args-object": b'{"class": "tests.functions:record", "args": {"a": 1}}',
    "class-number": b'{"class": 7, "args": []}',
    "invalid-utf8": b'{"class": "tests.functions:record", "args": ["\xff\xfe"]}',
    "lone-surrogate": b'{"class": "tests.functions:record", "args": ["\\udc80"]}',
    "nan": b'{"class": "tests.functions:record", "args": [NaN]}',
    "nested-lists": b"[" * NESTED + b"]" * NESTED,
    "nested-args": (b'{"class": "tests.functions:record", "args": ['
                    + b"[" * NESTED + b"]" * NESTED + b"]}"),
    "truncated": b'{"class": "tests.functions:record", "args": ["t"',
}
HUGE = 50 * 1024 * 1024


def test_garbage_in_a_queue_goes_to_dead_and_the_server_keeps_serving(
    r: redis.Redis, start_server: object
) -> None:
    for raw in GARBAGE.values():
        r.lpush("queue:junk", raw)
    r.lpush("queue:junk", b"x" * HUGE)  # 50 MB of not-JSON
    r.sadd("queues", "junk")
    server = start_server("-q", "junk")  # type: ignore[operator]
    try:
        wait_for(lambda: r.zcard("dead") == len(GARBAGE) + 1, timeout=60, interval=0.1)
        assert r.llen("queue:junk") == 0
        _enqueue_normal(r, "junk")
        wait_for(lambda: r.llen("results:normal") == 1, timeout=10)
    finally:
        server.stop()
    _assert_dead_wrapped(r, len(GARBAGE) + 1, "queue 'junk'")
    log = server.log()
    assert log.count("invalid payload in queue junk moved to dead") == len(GARBAGE) + 1
    assert "Traceback" not in log, log[-3000:]


@pytest.mark.parametrize("zset", ["schedule", "retry"])
def test_garbage_in_the_schedule_and_retry_sets_goes_to_dead(
    r: redis.Redis, start_server: object, zset: str
) -> None:
    for raw in GARBAGE.values():
        r.zadd(zset, {raw: 1.0})  # long due
    server = start_server("--poll-interval", "0.1")  # type: ignore[operator]
    try:
        wait_for(lambda: r.zcard("dead") == len(GARBAGE), timeout=30, interval=0.1)
        assert r.zcard(zset) == 0
        _enqueue_normal(r, "default")
        wait_for(lambda: r.llen("results:normal") == 1, timeout=10)
    finally:
        server.stop()
    _assert_dead_wrapped(r, len(GARBAGE), "schedule or retry set")
    assert "Traceback" not in server.log(), server.log()[-3000:]


def _enqueue_normal(r: redis.Redis, queue: str) -> None:
    payload = unit.build("tests.functions:record", ["normal", 1], queue)
    r.lpush(f"queue:{queue}", unit.encode(payload))


def _assert_dead_wrapped(r: redis.Redis, count: int, where: str) -> None:
    """Every dead entry is a valid payload saying why it is there, raw text kept."""
    entries = [json.loads(raw) for raw in r.zrange("dead", 0, -1)]
    assert len(entries) == count
    for payload in entries:
        assert payload["class"] and isinstance(payload["args"], list) and payload["jid"]
        assert where in payload["error_message"], payload["error_message"]
        assert payload["error_class"] == "difo.errors.PayloadError"
        assert "difo_raw" in payload
        assert len(payload["difo_raw"]) <= 1_000_000


# -- configuration ------------------------------------------------------------------------------

# Bad values by parser: every DIFO_* setting is listed below, so a new one must be added.
_BAD_BY_SETTING: dict[str, list[str]] = {
    "DIFO_TIMEOUT": ["soon", "-1", "nan", "inf", "1e400", "1,5"],
    "DIFO_UNIT_TIMEOUT": ["0", "-5", "never", "nan", "inf"],
    "DIFO_LOG_FORMAT": ["xml", "yaml", "plain text"],
    "DIFO_LOG_LEVEL": ["chatty", "5", "verbose"],
    "DIFO_IMPORTS": ["my-app", "myapp/jobs", "1app", "app..jobs", "os;rm"],
    "DIFO_DEAD_AFTER": ["0", "-1", "later", "nan"],
    "DIFO_HEARTBEAT": ["0", "inf", "-2", "often"],
    "DIFO_POLL_INTERVAL": ["0", "-0.5", "x", "nan"],
    "DIFO_PREFETCH": ["-1", "1.5", "many"],
    "DIFO_ASYNC_WORKERS": ["0", "-1", "lots", "2.5"],
    "DIFO_PROCESSES": ["0", "-3", "auto", "1.0"],
    "DIFO_MAX_UNITS_PER_CHILD": ["0", "-1", "x"],
    "DIFO_MAX_MEMORY": ["0", "-1", "lots", "0G", "1T"],
    "DIFO_SETUP": ["myapp.setup", "nocolon"],
}
# Settings that take any text: nothing is a bad value.
_FREE_TEXT = {"DIFO_TAG"}


def test_every_difo_setting_has_bad_values_listed() -> None:
    names = {name for name, _, _ in _DIFO_SETTINGS}
    assert names == set(_BAD_BY_SETTING) | _FREE_TEXT


@pytest.mark.parametrize(
    ("name", "value"),
    [(name, value) for name, values in _BAD_BY_SETTING.items() for value in values]
    + [("WORKERS", value) for value in ("0", "-1", "ten", "1.5", "")]
    + [("QUEUES", value) for value in ("", "a/b", "a:0", "a a", "ünï")]
    + [(name, value) for name in ("REDIS_URL", "DIFO_URL")
       for value in ("http://h", "redis://h/x", "redis://h:99999", "unix://", "sqlite://")],
)
def test_every_setting_refuses_bad_values_naming_itself(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config.load({name: value})
    message = str(caught.value)
    assert message.startswith(name), message
    assert "\n" not in message


@pytest.mark.parametrize("name", sorted(_FREE_TEXT))
def test_free_text_settings_take_any_text(name: str) -> None:
    key = next(key for setting, key, _ in _DIFO_SETTINGS if setting == name)
    assert getattr(config.load({name: "any text: ünï / 1"}), key) == "any text: ünï / 1"


def test_the_server_cli_refuses_a_bad_setting_naming_it(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.conftest import ROOT

    done = subprocess.run(
        [sys.executable, "-m", "difo.cli", "server"], cwd=ROOT, capture_output=True,
        text=True, timeout=30,
        env={"PATH": "/usr/bin:/bin", "DIFO_HEARTBEAT": "often", "HOME": str(tmp_path)},
    )
    assert done.returncode == 2
    assert done.stderr.startswith("difo: DIFO_HEARTBEAT="), done.stderr
