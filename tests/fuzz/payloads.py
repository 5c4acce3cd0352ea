"""Generated garbage for difo's payload path, and the check every payload must pass.

`generate(seed, count)` yields raw entries as a foreign writer might leave them in a queue or
a sorted set: random bytes, JSON of the wrong shape, payloads with odd field types, numbers
and strings JSON cannot carry back (NaN, 1e400, lone surrogate escapes), deep nesting, and
mutations of a valid payload. `check(raw)` runs one through the worker's decode and settle
steps and raises AssertionError unless each yields a valid Sidekiq payload or a clean
PayloadError. tests/test_fuzz_payloads.py runs a seeded batch; run.py runs longer.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from difo import heartbeat, scheduler, unit
from difo.backends import Staged
from difo.errors import PayloadError

VALID = (b'{"retry":true,"queue":"default","class":"tests.functions:record","args":["t",1,2.5,'
         b'null,[],{}],"jid":"0123456789abcdef01234567","created_at":1764300000.5,'
         b'"enqueued_at":1764300000.5}')

_ODD_VALUES: list[bytes] = [
    b"null", b"true", b"false", b"0", b"-1", b"1.5", b"1e400", b"-1e400", b"NaN", b"Infinity",
    b"-Infinity", b"123456789012345678901234567890", b"1764300000123", b'""', b'"x"',
    b'"\\udc80"', b'"\\ud800x"', b'"\\u0000"', b"[]", b"{}", b'[1,"a",null]', b'{"a":1}',
    b'"' + "漢字ünï".encode() + b'"', b'"\xff"', b"1.0", b"-0.0", b"[[[[[]]]]]",
]
_PLAIN_VALUES = [value for value in _ODD_VALUES if value not in (
    b"1e400", b"-1e400", b"NaN", b"Infinity", b"-Infinity", b'"\\udc80"', b'"\\ud800x"',
    b'"\xff"')]
_FIELDS = [b"class", b"args", b"jid", b"queue", b"retry", b"retry_count", b"created_at",
           b"enqueued_at", b"failed_at", b"error_message", b"error_class", b"difo_orphaned",
           b"retry_queue", b"backtrace", b"dead", b"bid", b"wrapped"]
_CLASSES = [b'"tests.functions:record"', b'"os:system"', b'"a:b"', b'":"', b'"nocolon"',
            b'"MyApp::Worker"', b'""', b'"\\udc80:x"', b"1", b"null", b"[]"]


def generate(seed: int, count: int) -> Iterator[bytes]:
    """`count` raw entries, the same for the same seed."""
    rng = random.Random(seed)
    makers: list[Callable[[random.Random], bytes]] = [
        _random_bytes, _wrong_shape, _odd_fields, _mutated, _nested, _long_text,
    ]
    weights = [20, 10, 40, 26, 2, 2]
    for maker in rng.choices(makers, weights, k=count):
        yield maker(rng)


def check(raw: bytes, rng: random.Random | None = None) -> str:
    """Run `raw` through decode, wrap_invalid, promote and place_orphan; return "unit" or
    "invalid". Any exception but PayloadError from decode, or any output that is not a valid
    payload, raises AssertionError."""
    rng = rng or random.Random(0)
    try:
        decoded = unit.decode(raw, "fuzz")
    except PayloadError:
        outcome = "invalid"
        assert_valid(unit.encode(unit.wrap_invalid(raw, "fuzz", "fuzz")))
    else:
        outcome = "unit"
        assert isinstance(decoded.args, list)
        assert isinstance(decoded.class_name, str) and decoded.class_name
        assert_valid(unit.encode(decoded.payload))
    promoted = scheduler.promote(Staged("p|me|0.1:fuzz", "", raw, "me", False, False), 1.0)
    assert promoted.dead == (outcome == "invalid")
    assert_valid(promoted.raw)
    started, counted = rng.random() < 0.5, rng.random() < 0.8
    placed = heartbeat.place_orphan(
        Staged("s|dead|7:fuzz", "fuzz", raw, "dead", started, counted), 2.0)
    if placed.raw == raw:
        # An orphan that never started goes back exactly as its writer wrote it.
        assert outcome == "unit" and not placed.dead
    else:
        assert_valid(placed.raw)
    if outcome == "invalid":
        assert placed.dead
    return outcome


def assert_valid(raw: bytes) -> dict[str, Any]:
    """A payload Sidekiq's readers take: a JSON object with class, args and jid."""
    assert isinstance(raw, bytes)
    try:
        payload = orjson.loads(raw)  # strict: no NaN, invalid UTF-8 or lone surrogates
    except orjson.JSONDecodeError:
        # Integers beyond 64 bits, which orjson does not read: read them as Ruby would.
        raw.decode("utf-8")
        payload = json.loads(raw, parse_constant=_no_constant)
    assert isinstance(payload, dict), raw[:200]
    assert isinstance(payload.get("class"), str) and payload["class"], raw[:200]
    assert isinstance(payload.get("args"), list), raw[:200]
    assert isinstance(payload.get("jid"), str) and payload["jid"], raw[:200]
    return payload


def _no_constant(name: str) -> None:
    raise AssertionError(f"{name} written into a payload")


# -- makers ------------------------------------------------------------------------------------


def _random_bytes(rng: random.Random) -> bytes:
    return rng.randbytes(rng.choice((0, 1, 2, 8, 40, 300)))


def _wrong_shape(rng: random.Random) -> bytes:
    return rng.choice([
        b"[]", b"[1,2]", b"1", b'"text"', b"null", b"true", b"{}", b'{"class":"a:b"}',
        b'{"args":[]}', b'{"class":null,"args":[]}', b'{"class":"a:b","args":{}}',
        b'{"class":"a:b","args":"x"}', b'{"class":["a:b"],"args":[]}', b"\xef\xbb\xbf{}",
        b'\xef\xbb\xbf{"class":"a:b","args":[]}', b'{"class":"a:b","args":[]', b"{" * 3,
        b'{"class":"a:b","args":[]} trailing', b'{"class":"a:b","class":"c:d","args":[]}',
        b"  \n", b'{"class":"a:b","args":[],"args":7}',
    ])


def _value(rng: random.Random, depth: int = 0) -> bytes:
    roll = rng.random()
    if depth > 3 or roll < 0.6:
        return rng.choice(_ODD_VALUES if rng.random() < 0.3 else _PLAIN_VALUES)
    if roll < 0.8:
        return b"[" + b",".join(_value(rng, depth + 1) for _ in range(rng.randrange(4))) + b"]"
    items = (b'"' + rng.choice(_FIELDS) + b'":' + _value(rng, depth + 1)
             for _ in range(rng.randrange(4)))
    return b"{" + b",".join(items) + b"}"


def _odd_fields(rng: random.Random) -> bytes:
    fields = [b'"class":' + (rng.choice(_CLASSES) if rng.random() < 0.3
                             else b'"tests.functions:record"')]
    fields.append(b'"args":' + (_value(rng) if rng.random() < 0.3 else
                                b"[" + b",".join(_value(rng) for _ in range(3)) + b"]"))
    for name in rng.sample(_FIELDS[2:], rng.randrange(6)):
        fields.append(b'"' + name + b'":' + _value(rng))
    rng.shuffle(fields)
    if rng.random() < 0.2:
        del fields[rng.randrange(len(fields))]
    return b"{" + b",".join(fields) + b"}"


def _mutated(rng: random.Random) -> bytes:
    data = bytearray(VALID)
    for _ in range(rng.randrange(1, 4)):
        kind = rng.random()
        at = rng.randrange(len(data))
        if kind < 0.4:
            data[at] = rng.randrange(256)
        elif kind < 0.7:
            del data[at : at + rng.randrange(1, 10)]
        else:
            data[at:at] = rng.choice(_ODD_VALUES)
    return bytes(data)


def _nested(rng: random.Random) -> bytes:
    depth = rng.choice((100, 900, 990, 1000, 1023, 1024, 1025, 1100, 5000))
    open_, close = (b"[", b"]") if rng.random() < 0.5 else (b'{"a":', b"}")
    inner = open_ * depth + b"1" + close * depth
    if rng.random() < 0.5:
        return inner
    return b'{"class":"tests.functions:record","args":[' + inner + b"]}"


def _long_text(rng: random.Random) -> bytes:
    text = b"x" * rng.choice((1_000, 1_000, 10_000, 100_000))
    if rng.random() < 0.5:
        return b'{"class":"tests.functions:record","args":["' + text + b'"]}'
    return text
