"""Seeded fuzzing of the payload path: whatever a foreign writer leaves in Redis, the worker's
decode and settle steps yield a valid Sidekiq payload or a clean PayloadError, and a real
server moves every entry to `dead` or runs it, and keeps serving.

The generator and the check live in tests/fuzz/payloads.py; tests/fuzz/README.md says how to
run them longer (DIFO_FUZZ_SEED, DIFO_FUZZ_COUNT, or the hypothesis target there).
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from pathlib import Path

import pytest
import redis

from difo import unit
from tests.conftest import wait_for
from tests.fuzz.payloads import assert_valid, check, generate

SEED = int(os.environ.get("DIFO_FUZZ_SEED", "20261128"))
COUNT = int(os.environ.get("DIFO_FUZZ_COUNT", "100000"))
SERVER_COUNT = 2_000


def test_every_generated_payload_settles_cleanly() -> None:
    rng = random.Random(SEED)
    outcomes: Counter[str] = Counter()
    for index, raw in enumerate(generate(SEED, COUNT)):
        try:
            outcomes[check(raw, rng)] += 1
        except AssertionError as exc:
            raise AssertionError(f"payload {index} of seed {SEED}: {raw[:300]!r}: {exc}") from exc
        except Exception as exc:
            raise AssertionError(
                f"payload {index} of seed {SEED} raised {type(exc).__name__}: {exc}; "
                f"payload {raw[:300]!r}"
            ) from exc
    assert sum(outcomes.values()) == COUNT
    # Both paths were exercised, not only one.
    assert outcomes["unit"] > COUNT // 50 and outcomes["invalid"] > COUNT // 50, outcomes


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"class":"tests.functions:record","args":[' + b"[" * 100_000 + b"]" * 100_000 + b"]}",
        b'{"class":"tests.functions:record","args":[' + b"[" * 1000 + b"]" * 1000 + b"]}",
        b'{"class":"tests.functions:record","args":[' + b'{"a":' * 1000 + b"1" + b"}" * 1000
        + b"]}",
        b'{"class":"tests.functions:record","args":[NaN]}',
        b'{"class":"tests.functions:record","args":[1e400]}',
        b'{"class":"tests.functions:record","args":["\\udc80"]}',
        b'{"class":"tests.functions:record","args":[12345678901234567890123,"\\ud800"]}',
    ],
    ids=["nested-100k", "nested-args-100k", "nested-1000", "nested-dicts-1000", "nan",
         "overflow", "lone-surrogate", "surrogate-beside-big-int"],
)
def test_payloads_that_could_never_be_written_again_are_payload_errors(raw: bytes) -> None:
    # Each used to escape decode (RecursionError) or pass it and then fail every move
    # (retry, dead) in unit.encode, so a worker left it in flight for ever.
    assert check(raw) == "invalid"


def test_nesting_within_the_limit_is_a_unit() -> None:
    depth = unit.MAX_DEPTH
    raw = (b'{"class":"tests.functions:record","args":' + b"[" * depth + b"]" * depth + b"}")
    assert check(raw) == "unit"


def test_big_integers_still_decode_exactly() -> None:
    big = 123456789012345678901234567890
    raw = json.dumps({"class": "tests.functions:record", "args": [big, -big]}).encode()
    assert check(raw) == "unit"
    assert unit.decode(raw).args == [big, -big]


def test_a_real_server_moves_every_generated_entry_to_dead_or_runs_it(
    start_server: object, r: redis.Redis, tmp_path: Path
) -> None:
    entries = []
    seen: set[bytes] = set()
    for raw in generate(SEED + 1, SERVER_COUNT * 2):
        # Units that decode call `sink`, which takes anything: they run, never retry.
        raw = raw.replace(b"tests.functions:record", b"tests.fuzz.functions:sink")
        if raw not in seen:
            seen.add(raw)
            entries.append(raw)
        if len(entries) == SERVER_COUNT:
            break
    runnable = sum(1 for raw in entries if _runs(raw))
    for start in range(0, len(entries), 500):
        r.lpush("queue:fuzz", *entries[start : start + 500])
    r.sadd("queues", "fuzz")
    server = start_server(  # type: ignore[operator]
        "--import", "tests.fuzz.functions", "-q", "fuzz after", "-w", "5")

    def settled() -> bool:
        ran = int(r.get("results:fuzz:ran") or 0)
        placed = ran + r.zcard("dead") + r.zcard("retry")
        return placed >= SERVER_COUNT and r.llen("queue:fuzz") == 0

    try:
        wait_for(settled, timeout=60, interval=0.2)
        # ...and the server still serves: a normal unit enqueued after the garbage runs.
        r.lpush("queue:after", unit.encode(unit.build("tests.functions:record", ["after", 1],
                                                      "after")))
        r.sadd("queues", "after")
        wait_for(lambda: r.llen("results:after") == 1, timeout=10)
    finally:
        server.stop()
    ran = int(r.get("results:fuzz:ran") or 0)
    assert ran == runnable
    # A mutated function name in an allowed module (`tests.functions:rec`) is a function
    # missing from a module the server imports: retried later (a rolling deploy may bring
    # it), never run and never lost. Everything else is dead or ran.
    retried = [json.loads(raw) for raw in r.zrange("retry", 0, -1)]
    assert all(payload["error_class"] == "difo.registry.FunctionMissing"
               for payload in retried), retried
    assert ran + r.zcard("dead") + len(retried) == SERVER_COUNT
    assert r.llen("queue:fuzz") == 0
    for raw, _ in r.zscan_iter("dead", count=1000):
        payload = assert_valid(raw)
        assert payload.get("error_message"), payload
    assert "Traceback" not in server.log(), server.log()[-3000:]


def _runs(raw: bytes) -> bool:
    """Whether a server would run this entry (sink, decodable) rather than kill it."""
    try:
        decoded = unit.decode(raw)
    except Exception:
        return False
    return decoded.class_name == "tests.fuzz.functions:sink"


def test_fuzz_run_time_is_ci_friendly() -> None:
    # A guard for the seeded run above: 1,000 payloads well under a second per 1,000 leaves
    # the 100,000 in CI-friendly time.
    rng = random.Random(SEED)
    started = time.perf_counter()
    for raw in generate(SEED, 1_000):
        check(raw, rng)
    assert time.perf_counter() - started < 5


def test_the_hypothesis_target_in_a_short_seeded_run() -> None:
    from tests.fuzz.target import hypothesis_target

    hypothesis_target(examples=300, seed=0)
