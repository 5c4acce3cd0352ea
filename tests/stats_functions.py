"""Unit functions for the statistics, process and metrics tests (servers import them with
--import tests.stats_functions). They report through the private Redis (DIFO_TEST_REDIS)."""

from __future__ import annotations

import time

import difo
from tests.functions import results


def quick(tag: str) -> None:
    results().rpush(f"results:{tag}", "ok")


def slow(tag: str, ms: float) -> None:
    time.sleep(ms / 1000)
    results().rpush(f"results:{tag}", "ok")


@difo.job(retry=False)
def boom(tag: str) -> None:
    """Fails once, for good: counted as processed and failed, kept nowhere."""
    results().rpush(f"results:{tag}", "boom")
    raise RuntimeError(f"boom {tag}")


def hold(tag: str, seconds: float) -> None:
    """Marks its start, then runs for `seconds` (a busy worker to look at)."""
    results().rpush(f"started:{tag}", "1")
    time.sleep(seconds)
    results().rpush(f"results:{tag}", "done")
