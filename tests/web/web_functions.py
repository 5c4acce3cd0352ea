"""Functions for the dashboard tests' units (servers import them with
--import tests.web.web_functions)."""

from __future__ import annotations

import time

import difo


def hold(seconds: float) -> None:
    """Keeps a worker busy, so the Busy page has something to show."""
    time.sleep(seconds)


def add(a: int, b: int) -> int:
    return a + b


def record(*args: object) -> None:
    """Never run in these tests: its units wait in a queue no server reads."""


@difo.job(retry=5, retry_in=lambda count, exc: 3600, backtrace=True)
def fail_later(message: str) -> None:
    """Fails; the retry waits an hour, so the unit stays in the retry set."""
    raise ValueError(message)


@difo.job(retry=0, backtrace=True)
def die(message: str) -> None:
    """Fails once and goes straight to the dead set."""
    raise RuntimeError(message)
