"""Functions for units in the reliability tests (servers run them with
`--import tests.reliability_functions`), reporting through DIFO_TEST_REDIS like
tests/functions.py."""

from __future__ import annotations

import json
import time

import redis

from tests.functions import results


def record_surely(tag: str, marker: int) -> None:
    """Append `marker` to results:<tag>, riding out dropped connections (the tests that drop
    every connection must not see the unit's own report fail)."""
    for _ in range(50):
        try:
            results().rpush(f"results:{tag}", json.dumps(marker))
            return
        except redis.ConnectionError:
            time.sleep(0.02)
    raise RuntimeError(f"could not report {marker} for {tag}")
