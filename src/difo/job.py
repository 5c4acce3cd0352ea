"""`@difo.job`: register a function and give it defaults (queue, retries, backtrace, ...).

The decorated object still calls the function directly (`send_welcome(42)` runs it here);
`send_welcome.perform(42)` enqueues it. Options that travel with the unit (retry, dead,
backtrace, tags, retry_queue) are written into each payload, as Sidekiq's sidekiq_options
are; options only a server can use (retry_in, timeout) stay in the registered object.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, Generic, ParamSpec, TypeVar, overload

from difo import client as client_module
from difo import registry
from difo.errors import FunctionError
from difo.retry import RetryIn

P = ParamSpec("P")
R = TypeVar("R")


class JobFunction(Generic[P, R]):
    """A function registered with `@difo.job`, with its defaults."""

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        queue: str = "default",
        retry: bool | int = True,
        dead: bool = True,
        backtrace: bool | int = False,
        retry_in: RetryIn | None = None,
        timeout: float | None = None,
        tags: Sequence[str] = (),
        retry_queue: str | None = None,
        name: str | None = None,
    ) -> None:
        if isinstance(retry, int) and not isinstance(retry, bool) and retry < 0:
            raise FunctionError(f"@difo.job(retry={retry}): retry is True, False or a count >= 0")
        self.fn = fn
        self.difo_name = name or registry.name_of(fn)
        self.difo_queue = queue
        self.retry_in = retry_in
        self.timeout = timeout
        options: dict[str, Any] = {"retry": retry}
        if not dead:
            options["dead"] = False
        if backtrace:
            options["backtrace"] = backtrace
        if tags:
            options["tags"] = list(tags)
        if retry_queue:
            options["retry_queue"] = retry_queue
        self.difo_payload_options = options
        functools.update_wrapper(self, fn)
        registry.register(self, self.difo_name)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<difo job {self.difo_name}>"

    def perform(self, *args: Any) -> str:
        """Enqueue on the job's queue; return the jid."""
        return client_module.default().push(self, args)

    def perform_on(self, queue: str, *args: Any) -> str:
        """Enqueue on `queue`; return the jid."""
        return client_module.default().push(self, args, queue)

    def perform_in(
        self, delay: float | timedelta, *args: Any, queue: str | None = None
    ) -> str:
        """Enqueue to run after `delay` seconds (or a timedelta); return the jid."""
        when = client_module.when_from(delay, relative=True)
        return client_module.default().push_at(when, self, args, queue)

    def perform_at(
        self, when: float | datetime, *args: Any, queue: str | None = None
    ) -> str:
        """Enqueue to run at `when` (an aware datetime or epoch seconds); return the jid."""
        at = client_module.when_from(when, relative=False)
        return client_module.default().push_at(at, self, args, queue)

    def perform_bulk(
        self, args_list: Iterable[Sequence[object]], *, queue: str | None = None
    ) -> list[str]:
        """Enqueue one unit per argument list, in chunks of 1,000; return the jids."""
        return client_module.default().push_bulk(self, args_list, queue)


@overload
def job(fn: Callable[P, R], /) -> JobFunction[P, R]: ...


@overload
def job(
    *,
    queue: str = ...,
    retry: bool | int = ...,
    dead: bool = ...,
    backtrace: bool | int = ...,
    retry_in: RetryIn | None = ...,
    timeout: float | None = ...,
    tags: Sequence[str] = ...,
    retry_queue: str | None = ...,
    name: str | None = ...,
) -> Callable[[Callable[P, R]], JobFunction[P, R]]: ...


def job(fn: Callable[P, R] | None = None, /, **options: Any) -> Any:
    """Register `fn` as a unit function, optionally with defaults:

    `@difo.job(queue="mail", retry=5, backtrace=True, retry_in=lambda count, exc: 10)`
    """
    if fn is not None:
        return JobFunction(fn)

    def decorate(inner: Callable[P, R]) -> JobFunction[P, R]:
        return JobFunction(inner, **options)

    return decorate
