"""A unit on the wire: Sidekiq-format JSON, argument checks, ids and times. No I/O.

A unit is one enqueued call: `{"class": "module:qualname", "args": [...], "jid": ...}` plus
the fields Sidekiq writes (see SIDEKIQ_LAYOUT.md). Arguments are plain JSON only, checked
before anything is written, so the arguments a unit runs with equal those it was given.
Unknown payload fields are kept: a unit read and written again loses nothing.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any, TypeAlias, TypedDict

import orjson

from difo.errors import ArgumentError, PayloadError

JSON: TypeAlias = bool | int | float | str | list["JSON"] | dict[str, "JSON"] | None
Args = list[JSON]


class Payload(TypedDict, total=False):
    """The wire payload; every other field a payload carries is kept as it is."""

    # `class` is a keyword, hence the functional fields are read with payload["class"].
    args: Args
    jid: str
    queue: str
    retry: bool | int
    created_at: float
    enqueued_at: float
    retry_count: int
    error_message: str
    error_class: str
    failed_at: float
    retried_at: float
    error_backtrace: str
    backtrace: bool | int
    dead: bool


_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode


# Every digit to b"0", "-" kept, any other byte to b" ": a run of digits is then one `in`.
_DIGITS = bytes(48 if 48 <= byte < 58 else byte if byte == 45 else 32 for byte in range(256))
_LONG_DIGITS = b"0" * 20  # beyond 2**64 - 1
_LONG_NEGATIVE = b"-" + b"0" * 19  # below -2**63 from -9223372036854775809 on


def _loads(raw: bytes | str) -> Any:
    # orjson reads bytes without the standard library's encoding detection: a drain's
    # biggest cost was json.loads (docs/performance.md). The standard library still decides
    # where the two differ, so a payload decodes, or fails, exactly as it always did: what
    # orjson refuses (NaN, 1e400, lone surrogate escapes, a BOM, invalid UTF-8), and
    # integers beyond 64 bits, which orjson reads as floats (any run of 20 digits goes, and
    # a minus sign before 19).
    if isinstance(raw, bytes):
        digits = raw.translate(_DIGITS)
        if _LONG_DIGITS not in digits and _LONG_NEGATIVE not in digits:
            try:
                return orjson.loads(raw)
            except orjson.JSONDecodeError:
                pass
    value = json.loads(raw)
    # What only the standard library reads (NaN, 1e400, a lone surrogate escape) could never
    # be written again when the unit moves on (retry, dead): refuse it here, as orjson does.
    _dumps(value).encode()
    return value


def new_jid() -> str:
    """24 lowercase hex characters, as Sidekiq's SecureRandom.hex(12)."""
    return os.urandom(12).hex()


def now() -> float:
    """Epoch seconds as a float: what every difo timestamp is."""
    return time.time()


def encode(payload: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON, the form Sidekiq writes. NaN and Infinity are never written."""
    try:
        return _dumps(payload).encode()
    except UnicodeEncodeError as exc:
        raise ArgumentError(
            f"a string in unit {payload.get('class')!r} holds a lone surrogate "
            f"({exc.object[exc.start:exc.end]!r}) that UTF-8 cannot carry; clean the text first"
        ) from None
    except ValueError as exc:
        # Only reached by callers that skip check_args (e.g. `difo enqueue '[NaN]'`).
        raise ArgumentError(
            f"unit {payload.get('class')!r} cannot be written as JSON: {exc}; "
            "pass finite numbers and no circular references"
        ) from None


def encode_checked(value: JSON) -> bytes | None:
    """The bytes `encode` writes for a value check_args passed, fast; None where only the
    standard library's output is exact (the caller then takes `encode` and its errors).

    orjson writes what json writes for plain data, except floats below 1e-4 (`0.00001` and
    `1.5e-7` for Python's `1e-05` and `1.5e-07`) and what it refuses (integers beyond 64
    bits, lone surrogates): those fall back.
    """
    try:
        out = orjson.dumps(value)
    except orjson.JSONEncodeError:
        return None
    if b"e-" in out or b"0.0000" in out:
        return None
    return out


def encode_args(value: JSON) -> bytes | None:
    """The bytes `encode` writes for `value` inside a payload: `encode_checked`'s, else the
    standard library's (a string holding "e-" sends orjson's output there too, and building
    the whole payload over again costs more). None where the standard library refuses the
    value: `encode` of the payload then says why."""
    fast = encode_checked(value)
    if fast is not None:
        return fast
    try:
        return _dumps(value).encode()
    except (ValueError, UnicodeEncodeError):
        return None


def encode_inner(args_lists: list[Args], *, floats: bool) -> list[bytes] | None:
    """What `encode_checked` writes for each argument list, without its outer brackets, from
    one orjson call for them all; None unless every one is written exactly (the caller then
    encodes them one by one). `floats` says whether any float is among them: without one,
    orjson's output needs no scan (check_flat knows).

    One call for the whole chunk, not one per unit: orjson sizes every output at 1 KB before
    shrinking it, and a thousand of those at once cost the allocator more than the encoding.
    """
    try:
        out = orjson.dumps(args_lists)
    except orjson.JSONEncodeError:
        return None
    if floats and (b"e-" in out or b"0.0000" in out):
        return None
    # out is "[[a],[b],...]": every boundary is "],[", and a string holding "],[" adds one.
    if out.count(b"],[") != len(args_lists) - 1:
        return None
    return out[2:-2].split(b"],[")


class Template:
    """The encoded payload of one function and queue, with holes for args, jid and time.

    `render` returns exactly `encode(build(...))` of the same fields, built by splitting a
    payload encoded once around markers, so only the parts that change are encoded per unit.
    """

    _ARGS, _JID, _TIME = "\x00difo-args\x00", "\x00difo-jid\x00", "\x00difo-time\x00"

    def __init__(
        self, class_name: str, queue: str, options: dict[str, Any] | None, *, enqueued: bool
    ) -> None:
        payload = build(class_name, [], queue, options, jid=self._JID, enqueued=enqueued)
        payload["args"] = self._ARGS
        payload["created_at"] = self._TIME
        if enqueued:
            payload["enqueued_at"] = self._TIME
        text = encode(payload)
        marks = [_dumps(mark).encode() for mark in (self._ARGS, self._JID, self._TIME)]
        order = [marks[0], marks[1], marks[2]] + ([marks[2]] if enqueued else [])
        parts = []
        rest = text
        for mark in order:
            before, found, rest = rest.partition(mark)
            if not found or mark in before:
                raise ValueError("payload options reorder the template")
            parts.append(before)
        if any(mark in rest for mark in marks):
            raise ValueError("payload options reorder the template")
        parts.append(rest)
        self.enqueued = enqueued
        self._parts = parts

    def frame(self, stamp: float) -> tuple[bytes, bytes, bytes]:
        """(head, between, tail) for units created at `stamp`: a unit's payload is
        head + encoded args + between + jid + tail."""
        parts = self._parts
        at = _time_bytes(stamp)
        tail = parts[2] + at + parts[3] + (at + parts[4] if self.enqueued else b"")
        return parts[0], parts[1] + b'"', b'"' + tail

    def render(self, args: bytes, jid: str, stamp: float) -> bytes:
        """One unit's payload: what `frame` frames, in one join (a perform's hot path)."""
        parts = self._parts
        at = _time_bytes(stamp)
        if self.enqueued:
            return b"".join((parts[0], args, parts[1], b'"', jid.encode(), b'"', parts[2], at,
                             parts[3], at, parts[4]))
        return b"".join((parts[0], args, parts[1], b'"', jid.encode(), b'"', parts[2], at,
                         parts[3]))


def _time_bytes(stamp: float) -> bytes:
    """float.__repr__ of an epoch time, as json writes it. orjson writes the same shortest
    round-trip digits in a third of the time; between 1e8 and 1e12 neither writes an
    exponent (5,000,000 random floats there: no difference); elsewhere repr decides."""
    if 1e8 <= stamp < 1e12:
        return orjson.dumps(stamp)
    return repr(stamp).encode()


def build(
    class_name: str,
    args: Args,
    queue: str,
    options: dict[str, Any] | None = None,
    *,
    jid: str | None = None,
    created_at: float | None = None,
    enqueued: bool = True,
) -> dict[str, Any]:
    """A fresh payload. `enqueued` is False for scheduled units, which carry no enqueued_at."""
    payload: dict[str, Any] = {"retry": True, "queue": queue}
    if options:
        payload.update(options)
    payload["class"] = class_name
    payload["args"] = args
    payload["jid"] = jid or new_jid()
    stamp = now() if created_at is None else created_at
    payload["created_at"] = stamp
    if enqueued:
        payload["enqueued_at"] = stamp
    return payload


@dataclass(slots=True)
class Unit:
    """A decoded unit as a worker runs it; `payload` holds every field, known or not.
    Treat it as frozen (not declared so for speed, as `Claimed`)."""

    jid: str
    class_name: str
    args: Args
    queue: str
    payload: dict[str, Any]

    @property
    def retry_count(self) -> int | None:
        count = self.payload.get("retry_count")
        return count if isinstance(count, int) and not isinstance(count, bool) else None

    @property
    def enqueued_at(self) -> float | None:
        return seconds(self.payload.get("enqueued_at"))


def decode(raw: bytes | str, queue: str = "") -> Unit:
    """Parse a stored payload; raise PayloadError saying what is wrong with it."""
    try:
        payload = _loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadError(f"payload is not JSON: {exc}") from None
    except RecursionError:
        raise PayloadError("payload is nested too deeply to read") from None
    if not isinstance(payload, dict):
        raise PayloadError(f"payload is JSON {type(payload).__name__}, not an object")
    _check_writable(raw, payload)
    class_name = payload.get("class")
    if not isinstance(class_name, str) or not class_name:
        raise PayloadError("payload has no 'class' string")
    args = payload.get("args")
    if not isinstance(args, list):
        raise PayloadError("payload has no 'args' array")
    jid = payload.get("jid")
    if not isinstance(jid, str) or not jid:
        jid = new_jid()
        payload["jid"] = jid
    unit_queue = payload.get("queue")
    if not isinstance(unit_queue, str) or not unit_queue:
        unit_queue = queue or "default"
    return Unit(jid, class_name, args, unit_queue, payload)


def _check_writable(raw: bytes | str, payload: dict[str, Any]) -> None:
    """PayloadError unless `payload` nests at most MAX_DEPTH + 2 deep (the payload object,
    `args`, then the arguments): a deeper one would fail every move (retry, kill, promote)
    on Python's recursion limit and never settle."""
    opening = raw.count(b"[") + raw.count(b"{") if isinstance(raw, bytes) else (
        raw.count("[") + raw.count("{"))
    if opening > MAX_DEPTH and _depth(payload) > MAX_DEPTH + 2:
        raise PayloadError(f"payload is nested more than {MAX_DEPTH} levels deep")


def _depth(value: object) -> int:
    """How deeply lists and dicts nest in `value`, without recursion."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, list):
            children: Any = item
        elif isinstance(item, dict):
            children = item.values()
        else:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest


def seconds(value: object) -> float | None:
    """A payload time as epoch seconds: floats are seconds, Sidekiq 8's integers milliseconds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, int) and value > 100_000_000_000:
        return value / 1000.0
    return float(value)


def wrap_invalid(raw: bytes | str, reason: str, queue: str) -> dict[str, Any]:
    """A valid payload that carries an undecodable entry to the dead set, raw text kept."""
    text = raw.decode("utf-8", "backslashreplace") if isinstance(raw, bytes) else raw
    stamp = now()
    return {
        "class": "difo:InvalidPayload",
        "args": [],
        "jid": new_jid(),
        "queue": queue,
        "retry": False,
        "created_at": stamp,
        "enqueued_at": stamp,
        "failed_at": stamp,
        "retry_count": 0,
        "error_class": "difo.errors.PayloadError",
        "error_message": reason,
        "difo_raw": text[:1_000_000],
    }


# -- argument checks ---------------------------------------------------------------------

_SCALARS = (str, int, bool, type(None))
_ARG_LISTS = frozenset({list, tuple})
_FLAT = frozenset({str, int, bool, float, type(None)})
# Arguments nest at most this deep: deeper ones would exceed Python's recursion limit when a
# server writes the unit again (decode refuses a payload nested deeper than this plus 2).
MAX_DEPTH = 500
_ADVICE = {
    "tuple": "Pass a list instead",
    "set": "Pass sorted(...) as a list instead",
    "frozenset": "Pass sorted(...) as a list instead",
    "bytes": "Pass text (bytes.decode()) or base64 text instead",
    "bytearray": "Pass text or base64 text instead",
    "datetime": "Pass {name}.isoformat() or an epoch number instead",
    "date": "Pass {name}.isoformat() instead",
    "time": "Pass {name}.isoformat() instead",
    "timedelta": "Pass {name}.total_seconds() instead",
    "Decimal": "Pass str({name}) instead",
    "UUID": "Pass str({name}) instead",
    "Path": "Pass str({name}) instead",
    "PosixPath": "Pass str({name}) instead",
    "str": "Clean the text first, e.g. {name}.encode('utf-8', 'replace').decode()",
}


def check_args(
    function: str, args: Sequence[object], names: Callable[[], Sequence[str]] | None = None
) -> Args:
    """Return `args` as a JSON list, or raise ArgumentError naming the first bad value.

    The message names the function, the argument's position (1-based) and parameter name,
    the key path inside it, the type, and what to pass instead.
    """
    checked = list(args)
    for index, value in enumerate(checked):
        if type(value) in _SCALARS and (not isinstance(value, str) or _is_text(value)):
            continue
        try:
            problem = _find_problem(value, "")
        except RecursionError:
            problem = ("", type(value).__name__, "nested too deeply (or contains itself)")
        if problem is not None:
            path, kind, detail = problem
            known = names() if names is not None else ()
            name = known[index] if index < len(known) else ""
            raise ArgumentError(_argument_message(function, index, name, path, kind, detail))
    return checked  # type: ignore[return-value]


def check_flat(args_lists: Sequence[object]) -> tuple[list[Args], bool] | None:
    """check_args of many argument lists at once, for the common case: lists or tuples of
    plain scalars (str, int, float, bool, None). Returns (the lists, copied; whether any float
    is among them), or None when any item needs the full check (nesting, another type, a bad
    value): check_args of each then finds what is wrong and names it.

    Python-level work per unit is what bounded perform_bulk (docs/performance.md): here the
    types are read with `map` and `set`, and only strings and floats are looked at again."""
    if not set(map(type, args_lists)) <= _ARG_LISTS:
        return None
    checked: list[Args] = list(map(list, args_lists))  # type: ignore[arg-type]
    flat = list(chain.from_iterable(checked))
    kinds = set(map(type, flat))
    if not kinds <= _FLAT:
        return None
    if str in kinds:
        texts = flat if len(kinds) == 1 else [value for value in flat if type(value) is str]
        # A str holds no surrogate pair: joined, each lone surrogate stays one and fails.
        if not _is_text("".join(texts)):  # type: ignore[arg-type]
            return None
    floats = float in kinds
    if floats:
        numbers = flat if len(kinds) == 1 else [value for value in flat if type(value) is float]
        if not all(map(math.isfinite, numbers)):  # type: ignore[arg-type]
            return None
    return checked, floats


def _find_problem(value: object, path: str, depth: int = 1) -> tuple[str, str, str] | None:
    """(key path, type name, detail) of the first value that is not plain JSON, or None."""
    kind = type(value)
    if kind in _SCALARS:
        if kind is str and isinstance(value, str) and not _is_text(value):
            return path, "str", "it holds a lone surrogate, which UTF-8 cannot carry"
        return None
    if depth > MAX_DEPTH and kind in (list, dict):
        return path, kind.__name__, f"nested more than {MAX_DEPTH} levels deep"
    if kind is float and isinstance(value, float):
        if math.isfinite(value):
            return None
        return path, "float", f"{value!r}, which JSON cannot carry"
    if kind is list and isinstance(value, list):
        for index, item in enumerate(value):
            problem = _find_problem(item, f"{path}[{index}]", depth + 1)
            if problem is not None:
                return problem
        return None
    if kind is dict and isinstance(value, dict):
        for key, item in value.items():
            if type(key) is not str:
                return f"{path}", "dict", f"key {key!r} is a {type(key).__name__}, not a str"
            problem = _find_problem(item, f"{path}[{key!r}]", depth + 1)
            if problem is not None:
                return problem
        return None
    return path, kind.__name__, ""


def _is_text(value: str) -> bool:
    """Whether UTF-8 can carry `value` (no lone surrogates)."""
    if value.isascii():
        return True
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _argument_message(
    function: str, index: int, name: str, path: str, kind: str, detail: str
) -> str:
    where = f"argument {index + 1}" + (f' ("{name}")' if name else "")
    if path:
        where += f" at {path}"
    label = name + path if name else f"argument {index + 1}"
    key_problem = kind == "dict" and detail.startswith("key ")
    if detail:
        what = f"is a dict whose {detail}" if key_problem else f"is a {kind}: {detail}"
    else:
        what = f"is {_article(kind)} {kind}"
    advice = _ADVICE.get(kind, "Pass plain data (an id, a string, a number) instead")
    if kind == "float":
        advice = "Pass a finite number or None instead"
    elif key_problem:
        advice = "Use str keys instead"
    elif detail.startswith("nested"):
        advice = f"Pass flatter data (at most {MAX_DEPTH} levels of lists and dicts)"
    return (
        f"{function} {where} {what}; units carry JSON only "
        f"(str, int, float, bool, None, list, dict with str keys). "
        f"{advice.format(name=label)}."
    )
