"""Unit functions for the retry, schedule and periodic tests.

A server runs them when started with `--import tests.retry_functions`. They report to the
test through the private Redis named by DIFO_TEST_REDIS, as tests/functions.py does. Importing
this module also registers a failure hook that records every failure of a unit.
"""

from __future__ import annotations

import json
import os
from typing import Any

import difo
from tests.functions import results

# Short retry delays: the scheduler promotes a retry within one poll (0.5 s on average).
QUICK = 0.05


def _context() -> dict[str, Any]:
    current = difo.current()
    assert current is not None
    return {"jid": current.jid, "queue": current.queue, "retry_count": current.retry_count,
            "enqueued_at": current.enqueued_at, "function": current.function,
            "args": current.args}


@difo.on_failure
def record_failure(exc: BaseException, current: difo.Current) -> None:
    """Every failure seen by the server, for the on_failure tests."""
    if "DIFO_TEST_REDIS" not in os.environ:
        return
    results().rpush("results:failures", json.dumps({
        "jid": current.jid, "function": current.function, "error": type(exc).__name__,
        "retry_count": current.retry_count, "queue": current.queue,
    }))


def context(tag: str) -> None:
    """Record difo.current() (with enqueued_at) and succeed."""
    results().rpush(f"results:{tag}", json.dumps(_context()))


@difo.job(retry=2, retry_in=lambda count, exc: QUICK)
def context_until(tag: str, failures: int) -> None:
    """Record difo.current(), then fail while fewer than `failures` runs have failed."""
    seen = _context()
    runs = results().rpush(f"results:{tag}", json.dumps(seen))
    if runs <= failures:
        raise ValueError(f"run {runs} of {tag} fails")


@difo.job(retry=5, retry_in=lambda count, exc: QUICK)
def fail_five(tag: str) -> None:
    """Always fails: five retries, then dead."""
    results().rpush(f"results:{tag}", json.dumps(_context()["retry_count"]))
    raise KeyError(tag)


def _inner(depth: int, tag: str) -> None:
    if depth == 0:
        raise LookupError(f"deep failure of {tag}")
    _inner(depth - 1, tag)


@difo.job(retry=1, retry_in=lambda count, exc: QUICK, backtrace=2, retry_queue="rq-retries")
def fail_deep(tag: str) -> None:
    """Fails five frames down; keeps the first 2 backtrace lines; retries on rq-retries."""
    results().rpush(f"results:{tag}", json.dumps(_context()["queue"]))
    _inner(4, tag)


@difo.job(retry=0, backtrace=True)
def fail_full_backtrace(tag: str) -> None:
    _inner(2, tag)


@difo.job(retry_in=lambda count, exc: 3600)
def fail_later(tag: str) -> None:
    """Fails; the retry waits an hour (for tests that inspect the retry set)."""
    results().rpush(f"results:{tag}", "try")
    raise RuntimeError(f"later {tag}")


def _broken_retry_in(count: int, exc: BaseException) -> float:
    raise ZeroDivisionError("a retry_in that raises")


@difo.job(retry=1, retry_in=_broken_retry_in)
def fail_broken_retry_in(tag: str) -> None:
    """A retry_in that raises: the default backoff applies (as in Sidekiq)."""
    results().rpush(f"results:{tag}", "try")
    raise RuntimeError(f"broken retry_in {tag}")


if os.environ.get("DIFO_TEST_PERIODIC"):
    # Only servers started by the periodic end-to-end test register this (every second).
    difo.periodic("* * * * * *", context, "periodic", queue="periodic-e2e")
