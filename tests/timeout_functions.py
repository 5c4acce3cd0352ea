"""Thread units for the time-limit tests (run with --import tests.timeout_functions)."""

from __future__ import annotations

import contextlib
import os
import time

import difo
from tests.functions import results


@difo.job(timeout=0.5, retry=1, retry_in=lambda count, exc: 0.1)
def python_loop(tag: str) -> None:
    """Busy in Python bytecode: the interruption lands at once."""
    results().rpush(f"started:{tag}", os.getpid())
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pass
    results().rpush(f"results:{tag}", "finished")


@difo.job(timeout=0.5, retry=0)
def stubborn(tag: str) -> None:
    """Catches the interruption and goes on: only the process restart stops it."""
    results().rpush(f"started:{tag}", os.getpid())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):  # swallows UnitTimeout on purpose
            time.sleep(0.05)
    results().rpush(f"results:{tag}", "finished")


def quick(tag: str) -> None:
    results().rpush(f"results:{tag}", os.getpid())


def unlimited_sleep(tag: str, seconds: float) -> None:
    """Bound by DIFO_UNIT_TIMEOUT only; time.sleep returns before the exception lands."""
    results().rpush(f"started:{tag}", os.getpid())
    for _ in range(int(seconds * 20)):
        time.sleep(0.05)
    results().rpush(f"results:{tag}", "finished")


def pid_after(tag: str, seconds: float) -> None:
    time.sleep(seconds)
    results().rpush(f"results:{tag}", os.getpid())
