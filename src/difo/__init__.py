"""difo: distributed FIFOs. Simple, fast, reliable background processing for Python.

    import difo
    difo.perform(send_email, user_id)              # queue "default"; returns the jid
    difo.perform_on("mail", send_email, user_id)
    difo.perform_in(60, send_email, user_id)        # or a timedelta
    difo.perform_at(when, send_email, user_id)      # an aware datetime or epoch seconds
    difo.perform_bulk(send_email, [[1], [2], [3]])

A server (`difo server --import myapp`) runs the units. Arguments are plain JSON data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

__version__ = "0.1.0"

from difo.client import configure, when_from
from difo.client import default as _default_client
from difo.errors import (
    ArgumentError,
    BackendError,
    BackendUnavailable,
    BulkWriteError,
    ConfigError,
    DifoError,
    FunctionError,
)
from difo.job import JobFunction, job
from difo.periodic import periodic
from difo.worker import Current, current, on_failure, server_middleware


def perform(fn: Callable[..., Any], *args: Any) -> str:
    """Enqueue `fn(*args)` on the function's queue ("default" unless `@difo.job` says)."""
    return _default_client().push(fn, args)


def perform_on(queue: str, fn: Callable[..., Any], *args: Any) -> str:
    """Enqueue `fn(*args)` on `queue`."""
    return _default_client().push(fn, args, queue)


def perform_in(
    delay: float | timedelta, fn: Callable[..., Any], *args: Any, queue: str | None = None
) -> str:
    """Enqueue `fn(*args)` to run after `delay` seconds (or a timedelta)."""
    return _default_client().push_at(when_from(delay, relative=True), fn, args, queue)


def perform_at(
    when: float | datetime, fn: Callable[..., Any], *args: Any, queue: str | None = None
) -> str:
    """Enqueue `fn(*args)` to run at `when`: an aware datetime or epoch seconds."""
    return _default_client().push_at(when_from(when, relative=False), fn, args, queue)


def perform_bulk(
    fn: Callable[..., Any], args_list: Iterable[Sequence[object]], *, queue: str | None = None
) -> list[str]:
    """Enqueue one unit of `fn` per argument list, in chunks of 1,000; return the jids."""
    return _default_client().push_bulk(fn, args_list, queue)


__all__ = [
    "ArgumentError",
    "BackendError",
    "BackendUnavailable",
    "BulkWriteError",
    "ConfigError",
    "Current",
    "DifoError",
    "FunctionError",
    "JobFunction",
    "__version__",
    "configure",
    "current",
    "job",
    "on_failure",
    "perform",
    "perform_at",
    "perform_bulk",
    "perform_in",
    "perform_on",
    "periodic",
    "server_middleware",
]
