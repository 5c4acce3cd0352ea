"""Importable functions for units in tests (a server runs them with --import tests.functions).

They report to the test through the private Redis named by DIFO_TEST_REDIS.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import redis

import difo

_client: redis.Redis | None = None


def results() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(os.environ["DIFO_TEST_REDIS"])
    return _client


def record(tag: str, *args: Any) -> None:
    """Append the arguments, as JSON, to the list results:<tag>."""
    results().rpush(f"results:{tag}", json.dumps(list(args)))


def add(a: int, b: int) -> None:
    results().rpush("results:add", a + b)


def sleep_then_record(tag: str, seconds: float, marker: Any) -> None:
    results().rpush(f"started:{tag}", json.dumps(marker))
    time.sleep(seconds)
    results().rpush(f"results:{tag}", json.dumps(marker))


def fail(tag: str, message: str) -> None:
    results().rpush(f"results:{tag}", message)
    raise ValueError(message)


def record_context(tag: str) -> None:
    current = difo.current()
    assert current is not None
    results().rpush(f"results:{tag}", json.dumps({"jid": current.jid, "queue": current.queue,
                                                  "retry_count": current.retry_count}))


def exit_process(tag: str) -> None:
    """A poison pill: ends the server process that runs it."""
    results().rpush(f"results:{tag}", str(os.getpid()))
    os._exit(3)


def noop() -> None:
    pass


@difo.job(queue="mail", retry=3)
def send_welcome(user_id: int) -> None:
    results().rpush("results:welcome", user_id)


def _private_helper() -> None:
    pass


not_a_function = 42


@difo.job(retry=2, retry_in=lambda count, exc: 0.2, backtrace=True)
def flaky(tag: str) -> None:
    """Fails every time, retried twice 0.2 s apart, then dead."""
    results().rpush(f"results:{tag}", "try")
    raise RuntimeError(f"flaky {tag}")


@difo.job(retry=False)
def fail_no_retry(tag: str) -> None:
    results().rpush(f"results:{tag}", "try")
    raise RuntimeError("no retry")


@difo.job(retry=1, dead=False, retry_in=lambda count, exc: 0.1)
def fail_no_dead(tag: str) -> None:
    results().rpush(f"results:{tag}", "try")
    raise RuntimeError("no dead")


@difo.job(retry=0)
def fail_straight_to_dead(tag: str) -> None:
    raise RuntimeError("dead at once")


def missing_then_present(tag: str) -> None:
    results().rpush(f"results:{tag}", "ran")
