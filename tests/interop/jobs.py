"""Unit functions for the Sidekiq interop tests: servers run them with
`--import tests.interop.jobs`, and Ruby clients name them as `tests.interop.jobs:record` etc.

They report through the private Redis named by DIFO_TEST_REDIS, as tests/functions.py does:
`record` appends one JSON object per run to the list `interop:<tag>`.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import difo
from tests.functions import results


def _report(tag: str, args: tuple[Any, ...], **extra: Any) -> None:
    current = difo.current()
    assert current is not None
    entry = {"jid": current.jid, "queue": current.queue, "args": [tag, *args],
             "retry_count": current.retry_count, "enqueued_at": current.enqueued_at,
             "ran_at": time.time(), "pid": os.getpid(), **extra}
    results().rpush(f"interop:{tag}", json.dumps(entry))


def record(tag: str, *args: Any) -> None:
    """Succeed, recording the run."""
    _report(tag, args)


def fail(tag: str, *args: Any) -> None:
    """Fail every time (the payload's own retry option decides what follows)."""
    _report(tag, args)
    raise ValueError(f"failing on purpose: {tag}")


def sleep(tag: str, seconds: float) -> None:
    """Record the start, then keep a worker busy."""
    _report(tag, (seconds,))
    time.sleep(seconds)


def fail_until_allowed(tag: str) -> None:
    """Fail until the key `allow:<tag>` exists, then succeed."""
    allowed = bool(results().exists(f"allow:{tag}"))
    _report(tag, (), allowed=allowed)
    if not allowed:
        raise RuntimeError(f"{tag} is not allowed yet")


@difo.job(retry=3, backtrace=True)
def retried(tag: str) -> None:
    """Fail with a backtrace kept; three retries, Sidekiq's backoff (the first at 15-24 s)."""
    _report(tag, ())
    raise RuntimeError(f"retried {tag} failed")


@difo.job(retry=0, backtrace=2)
def dead_at_once(tag: str) -> None:
    """Fail straight into the dead set, keeping two backtrace lines."""
    _report(tag, ())
    raise KeyError(tag)


@difo.job(retry=3)
def retried_until_allowed(tag: str) -> None:
    fail_until_allowed(tag)


@difo.job(retry=0)
def dead_until_allowed(tag: str) -> None:
    fail_until_allowed(tag)


@difo.job(retry=5, backtrace=True, retry_in=lambda count, exc: 0.1 if count == 0 else 600)
def retried_twice(tag: str) -> None:
    """Fail; the first retry comes at once, the next in ten minutes: a retry entry whose
    retry_count is 1 (Sidekiq shows retried_at for it)."""
    _report(tag, ())
    raise RuntimeError(f"retried_twice {tag} failed")
