"""Units on the wire: Sidekiq-format payloads, decode keeping unknown fields, Sidekiq 8 times,
and the argument check (plain JSON only, refused with a message that names the spot)."""

from __future__ import annotations

import json
import math
import re
import uuid
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from difo import unit
from difo.errors import ArgumentError, PayloadError

JID = re.compile(r"^[0-9a-f]{24}$")
FUNCTION = "tests.functions:sleep_then_record"
NAMES = ("tag", "seconds", "marker")


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same JSON type all the way down (1.0 is not 1, [] is not {})."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


EVERY_JSON_TYPE: list[Any] = [
    "text",
    "",
    "ünïcødé ✓ 漢字 🎉",
    0,
    -7,
    2**70,
    -(2**64) - 1,
    1.0,
    0.1,
    1e-300,
    -2.5e300,
    True,
    False,
    None,
    [],
    {},
    [1, "two", 3.0, None, [[]], {"k": []}],
    {"nested": {"deeper": [1, {"deepest": {}}]}, "empty": [], "f": 2.0},
]


# -- building and encoding -------------------------------------------------------------------


def test_build_makes_a_sidekiq_payload() -> None:
    before = unit.now()
    payload = unit.build("tests.functions:add", [1, 2], "critical")
    after = unit.now()
    assert payload["class"] == "tests.functions:add"
    assert payload["args"] == [1, 2]
    assert payload["queue"] == "critical"
    assert payload["retry"] is True
    assert JID.match(payload["jid"])
    assert isinstance(payload["created_at"], float)
    assert isinstance(payload["enqueued_at"], float)
    assert before <= payload["created_at"] <= after
    assert payload["enqueued_at"] == payload["created_at"]


def test_build_for_the_schedule_has_no_enqueued_at() -> None:
    payload = unit.build("tests.functions:add", [], "default", enqueued=False)
    assert "enqueued_at" not in payload
    assert isinstance(payload["created_at"], float)


def test_build_options_travel_but_never_replace_class_args_or_jid() -> None:
    options = {"retry": 5, "backtrace": True, "class": "evil:x", "args": ["no"], "jid": "x"}
    payload = unit.build("tests.functions:add", [1], "q", options, jid="a" * 24)
    assert payload["retry"] == 5
    assert payload["backtrace"] is True
    assert payload["class"] == "tests.functions:add"
    assert payload["args"] == [1]
    assert payload["jid"] == "a" * 24


def test_jids_are_24_lowercase_hex_and_unique() -> None:
    jids = [unit.new_jid() for _ in range(2000)]
    assert all(JID.match(jid) for jid in jids)
    assert len(set(jids)) == len(jids)


def test_times_are_written_with_a_decimal_point_even_when_whole() -> None:
    # Sidekiq 8 reads an integer time as milliseconds: a whole second must still say ".0".
    payload = unit.build("tests.functions:add", [], "default", created_at=1764300000.0)
    raw = unit.encode(payload).decode()
    assert re.search(r'"created_at":1764300000\.0[,}]', raw), raw
    assert re.search(r'"enqueued_at":1764300000\.0[,}]', raw), raw
    fresh = unit.encode(unit.build("tests.functions:add", [], "default")).decode()
    assert re.search(r'"created_at":\d+\.\d+', fresh), fresh
    assert re.search(r'"enqueued_at":\d+\.\d+', fresh), fresh


def test_encode_is_compact_utf8_json() -> None:
    payload = unit.build("tests.functions:record", ["ünï 漢字", 1.0, []], "default")
    raw = unit.encode(payload)
    assert isinstance(raw, bytes)
    assert b", " not in raw and b'": ' not in raw
    assert "ünï 漢字".encode() in raw  # UTF-8, not \\u escapes
    assert same(json.loads(raw), payload)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_encode_never_writes_nan_or_infinity(bad: float) -> None:
    payload = unit.build("tests.functions:record", ["t", bad], "default")
    with pytest.raises(ArgumentError, match=r"tests\.functions:record"):
        unit.encode(payload)


def test_encode_refuses_a_lone_surrogate() -> None:
    payload = unit.build("tests.functions:record", ["bad \udc80 text"], "default")
    with pytest.raises(ArgumentError, match="surrogate"):
        unit.encode(payload)


@pytest.mark.parametrize("args", [[value] for value in EVERY_JSON_TYPE] + [EVERY_JSON_TYPE])
def test_every_json_type_survives_encode_and_decode(args: list[Any]) -> None:
    raw = unit.encode(unit.build("tests.functions:record", args, "default"))
    assert same(unit.decode(raw).args, args)


# -- decoding ----------------------------------------------------------------------------------


def test_decode_keeps_unknown_fields_and_reencodes_them() -> None:
    raw = json.dumps({
        "class": "tests.functions:add", "args": [1, 2], "jid": "b" * 24, "queue": "q",
        "retry": 3, "created_at": 1764300000.5, "enqueued_at": 1764300001.25,
        "bid": "batch-1", "tags": ["a"], "wrapped": "Foo", "custom": {"x": [1.0]},
    })
    decoded = unit.decode(raw)
    assert decoded.jid == "b" * 24
    assert decoded.class_name == "tests.functions:add"
    assert decoded.args == [1, 2]
    assert decoded.queue == "q"
    assert decoded.payload["bid"] == "batch-1"
    assert decoded.payload["tags"] == ["a"]
    assert decoded.payload["wrapped"] == "Foo"
    assert same(json.loads(unit.encode(decoded.payload)), json.loads(raw))


def test_decode_fills_a_missing_jid_and_queue() -> None:
    decoded = unit.decode(b'{"class": "m:f", "args": []}', queue="fallback")
    assert JID.match(decoded.jid)
    assert decoded.payload["jid"] == decoded.jid
    assert decoded.queue == "fallback"
    assert unit.decode(b'{"class": "m:f", "args": []}').queue == "default"


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not an object"),
        (b'{"args": []}', "class"),
        (b'{"class": "", "args": []}', "class"),
        (b'{"class": 7, "args": []}', "class"),
        (b'{"class": "m:f"}', "args"),
        (b'{"class": "m:f", "args": {}}', "args"),
    ],
)
def test_decode_refuses_what_is_not_a_unit(raw: bytes, words: str) -> None:
    with pytest.raises(PayloadError, match=words):
        unit.decode(raw)


def test_sidekiq_8_millisecond_times_read_as_seconds() -> None:
    millis = 1764300000123
    assert unit.seconds(millis) == pytest.approx(1764300000.123)
    assert unit.seconds(1764300000.5) == 1764300000.5
    assert unit.seconds(1764300000) == 1764300000.0
    assert isinstance(unit.seconds(1764300000), float)
    for not_a_time in (None, "1764300000", True, [1]):
        assert unit.seconds(not_a_time) is None
    raw = json.dumps({"class": "m:f", "args": [], "enqueued_at": millis, "created_at": millis})
    decoded = unit.decode(raw)
    assert decoded.enqueued_at == pytest.approx(1764300000.123)
    assert decoded.payload["enqueued_at"] == millis  # kept as Sidekiq wrote it


def test_retry_count_is_an_int_or_none() -> None:
    assert unit.decode('{"class": "m:f", "args": [], "retry_count": 2}').retry_count == 2
    assert unit.decode('{"class": "m:f", "args": []}').retry_count is None
    assert unit.decode('{"class": "m:f", "args": [], "retry_count": true}').retry_count is None


def test_wrap_invalid_is_a_valid_payload_keeping_the_raw_text() -> None:
    wrapped = unit.wrap_invalid(b"\xffgarbage{", "payload is not JSON", "q")
    again = unit.decode(unit.encode(wrapped))
    assert again.class_name and again.args == []
    assert again.payload["error_message"] == "payload is not JSON"
    assert "garbage{" in again.payload["difo_raw"]
    assert again.queue == "q"


# -- argument checks ---------------------------------------------------------------------------


def check(*args: object) -> list[Any]:
    return unit.check_args(FUNCTION, args, lambda: NAMES)


def test_plain_json_arguments_pass_unchanged() -> None:
    for value in EVERY_JSON_TYPE:
        checked = check("tag", 1, value)
        assert same(checked, ["tag", 1, value])
        assert checked[2] is value  # checked, not copied or converted


class Opaque:
    pass


@pytest.mark.parametrize(
    ("value", "kind", "advice"),
    [
        ((1, 2), "tuple", "list"),
        (datetime(2025, 1, 2, 3, 4, tzinfo=timezone.utc), "datetime", "marker.isoformat()"),
        (date(2025, 1, 2), "date", "marker.isoformat()"),
        (timedelta(seconds=3), "timedelta", "total_seconds()"),
        (Decimal("1.50"), "Decimal", "str(marker)"),
        ({1, 2}, "set", "list"),
        (frozenset({1}), "frozenset", "list"),
        (b"bytes", "bytes", "decode"),
        (bytearray(b"x"), "bytearray", "text"),
        (Opaque(), "Opaque", "plain data"),
        (uuid.UUID(int=5), "UUID", "str(marker)"),
        (Path("/tmp"), "PosixPath", "str(marker)"),
        (math.nan, "float", "finite number"),
        (math.inf, "float", "finite number"),
        (-math.inf, "float", "finite number"),
        ({1: "a"}, "dict", "str keys"),
        ({None: "a"}, "dict", "str keys"),
    ],
)
def test_refused_argument_names_function_position_parameter_type_and_fix(
    value: object, kind: str, advice: str
) -> None:
    if kind == "PosixPath" and type(value).__name__ != "PosixPath":
        pytest.skip("not a POSIX system")  # the class name is WindowsPath there
    with pytest.raises(ArgumentError) as caught:
        check("tag", 1, value)
    message = str(caught.value)
    assert message.startswith(FUNCTION + " ")
    assert 'argument 3 ("marker")' in message
    assert f" {kind}" in message
    assert advice in message
    assert "instead" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("value", "path", "kind"),
    [
        ([1, [2, (3,)]], "[1][1]", "tuple"),
        ({"a": {"b": [0, {"c": {1}}]}}, "['a']['b'][1]['c']", "set"),
        ({"when": date(2025, 1, 1)}, "['when']", "date"),
        ([{"ok": 1}, {"bad": math.nan}], "[1]['bad']", "float"),
        ({"a": {2: 1}}, "['a']", "dict"),
        ([[[[b"deep"]]]], "[0][0][0][0]", "bytes"),
    ],
)
def test_refused_nested_value_names_its_key_path(value: object, path: str, kind: str) -> None:
    with pytest.raises(ArgumentError) as caught:
        check("tag", 1, value)
    message = str(caught.value)
    assert f'argument 3 ("marker") at {path} ' in message
    assert f" {kind}" in message
    assert "instead" in message


def test_position_is_one_based_and_the_first_bad_argument_is_named() -> None:
    with pytest.raises(ArgumentError) as caught:
        check((1,), 1, {2})
    assert 'argument 1 ("tag") is a tuple' in str(caught.value)
    with pytest.raises(ArgumentError) as caught:
        check("tag", b"x", {2})
    assert 'argument 2 ("seconds") is a bytes' in str(caught.value)


def test_position_without_a_known_parameter_name() -> None:
    with pytest.raises(ArgumentError) as caught:
        unit.check_args("tests.functions:record", ["t", "ok", 3, (1,)], lambda: ("tag",))
    message = str(caught.value)
    assert "argument 4 is a tuple" in message
    assert '("' not in message
    with pytest.raises(ArgumentError, match="argument 1 is a set"):
        unit.check_args("m:f", [{1}])


def test_subclasses_of_json_types_are_refused() -> None:
    # json.dumps would write an IntEnum or a str subclass, but a server gets back a plain
    # int or str: the arguments would no longer compare equal by type.
    class Label(str):
        pass

    with pytest.raises(ArgumentError, match="Label"):
        check("tag", 1, Label("x"))
    with pytest.raises(ArgumentError, match="Label"):
        check("tag", 1, {"k": [Label("x")]})


def test_parameter_names_are_read_only_when_a_message_needs_them() -> None:
    calls: list[int] = []

    def names() -> tuple[str, ...]:
        calls.append(1)
        return NAMES

    unit.check_args(FUNCTION, ["tag", 1, {"a": [1.5]}], names)
    assert calls == []
    with pytest.raises(ArgumentError):
        unit.check_args(FUNCTION, ["tag", 1, (1,)], names)
    assert calls == [1]


# -- the fast paths (orjson, payload templates): the standard library's bytes and values ------

from hypothesis import given  # noqa: E402  (only these tests use it)
from hypothesis import strategies as st  # noqa: E402

_TEXT = st.text(st.characters(blacklist_categories=("Cs",)))  # UTF-8 carries no lone surrogate
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | _TEXT
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=12,
)


@given(st.lists(_VALUES, max_size=4))
def test_a_template_writes_the_bytes_encode_writes(args: list[Any]) -> None:
    options = {"retry": 3, "backtrace": True, "tags": ["a", 1.0]}
    expected = unit.encode(unit.build("m:f", args, "q", options, jid="j" * 24, created_at=1.5))
    fast = unit.encode_checked(args)
    if fast is not None:  # None: only the standard library writes these args exactly
        assert unit.Template("m:f", "q", options, enqueued=True).render(fast, "j" * 24,
                                                                         1.5) == expected


@pytest.mark.parametrize("args", [[1e-05], [1.5e-07], [2**64], ["bad \udc80 text"]])
def test_encode_checked_leaves_what_orjson_writes_otherwise_to_encode(args: list[Any]) -> None:
    assert unit.encode_checked(args) is None


def test_a_template_refuses_options_that_move_its_fields() -> None:
    with pytest.raises(ValueError, match="reorder"):
        unit.Template("m:f", "q", {"created_at": 1.0}, enqueued=True)


@given(_VALUES)
def test_decode_reads_what_json_loads_reads(value: Any) -> None:
    raw = json.dumps({"class": "m:f", "args": [value]}).encode()
    assert same(unit.decode(raw).args, json.loads(raw)["args"])


@pytest.mark.parametrize("raw", [
    b"[18446744073709551616, -9223372036854775809, 12345678901234567890123]",
    b"\xef\xbb\xbf[1]",
])
def test_the_json_reader_falls_back_where_orjson_differs(raw: bytes) -> None:
    """orjson reads integers beyond 64 bits as floats and refuses a BOM: the standard
    library reads those, exactly as before."""
    assert repr(unit._loads(raw)) == repr(json.loads(raw))
