"""Functions for units in the fault suite (servers run them with `--import
tests.fault_functions`), reporting through DIFO_TEST_REDIS like tests/functions.py.

Each run reports twice in one transaction: a bit per unit in `faults:<tag>:done` (so
`BITCOUNT` is the number of units that completed) and a token per run in `faults:<tag>:runs`
(so `SCARD` minus `BITCOUNT` is the number of extra runs). The token is unique per run, so a
report retried after a lost reply cannot count twice; reports ride out a Redis restart.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import redis

from tests.functions import results

REPORT_ATTEMPTS = 400  # 50 ms apart: about 20 s of outage


def done_key(tag: str) -> str:
    return f"faults:{tag}:done"


def runs_key(tag: str) -> str:
    return f"faults:{tag}:runs"


def started_key(tag: str) -> str:
    return f"faults:{tag}:started"


def work(tag: str, marker: int, millis: int) -> None:
    """Sleep `millis` ms, then report the run."""
    if millis:
        time.sleep(millis / 1000)
    report(tag, marker)


def long_work(tag: str, marker: int, millis: int) -> None:
    """Record the start in `faults:<tag>:started`, sleep `millis` ms, then report the run."""
    _surely(lambda: results().sadd(started_key(tag), marker))
    time.sleep(millis / 1000)
    report(tag, marker)


def tally(tag: str, marker: int) -> None:
    """The cheap report for big backlogs: the unit's bit and a run counter, one round trip."""
    pipe = results().pipeline(transaction=False)
    pipe.setbit(done_key(tag), marker, 1)
    pipe.incr(runs_key(tag))
    pipe.execute()


def report(tag: str, marker: int) -> None:
    token = f"{marker}:{os.urandom(6).hex()}"

    def write() -> None:
        pipe = results().pipeline(transaction=True)
        pipe.setbit(done_key(tag), marker, 1)
        pipe.sadd(runs_key(tag), token)
        pipe.execute()

    _surely(write)


def _surely(write: Callable[[], object]) -> None:
    for _ in range(REPORT_ATTEMPTS):
        try:
            write()
            return
        except (redis.ConnectionError, redis.TimeoutError):
            time.sleep(0.05)
    raise RuntimeError("could not report to the test's Redis")
