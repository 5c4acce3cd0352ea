"""Testing modes for users' own test suites, as Sidekiq::Testing offers.

    with difo.testing.inline():
        signup(user)                 # its perform runs send_welcome at once, here
    with difo.testing.fake() as units:
        signup(user)
        assert units.jobs[0]["args"] == [user.id]
        units.drain()                # now run them

Both check and encode arguments exactly as a real enqueue does, so a unit that would be
refused in production is refused in tests too, and a function receives its arguments after
the same JSON round trip; `difo.current()` works inside it. Neither touches Redis or SQLite.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from difo import client as client_module
from difo import registry, unit, worker
from difo.backends import Claimed

_swap_lock = threading.Lock()


def resolve(class_name: str) -> Callable[..., Any]:
    """The function a payload names: registered, or imported (tests trust their own code)."""
    known = registry.registered().get(class_name)
    if known is not None:
        return known
    module_name, _, qualname = class_name.partition(":")
    fn: Callable[..., Any] = getattr(importlib.import_module(module_name), qualname)
    return fn


def run(current: unit.Unit) -> Any:
    """Run one unit here, as a worker would call it (with its `difo.current()` context)."""
    saved = getattr(worker._context, "unit", None)
    worker._context.unit = current
    try:
        return resolve(current.class_name)(*current.args)
    finally:
        worker._context.unit = saved


class _MemoryBackend:
    """Just enough of the Backend protocol for a client; units stay in this process."""

    url = "memory://"

    def __init__(self, on_push: Callable[[unit.Unit], object]) -> None:
        self.on_push = on_push

    def push(self, queue: str, payloads: Sequence[bytes]) -> None:
        for raw in payloads:
            self.on_push(unit.decode(raw, queue))

    def schedule(self, entries: Sequence[tuple[float, bytes]]) -> None:
        for at, raw in entries:
            scheduled = unit.decode(raw)
            scheduled.payload["at"] = at
            self.on_push(scheduled)

    def close(self) -> None:
        pass

    def claim(self, *args: Any) -> list[Claimed]:  # pragma: no cover - never called
        raise NotImplementedError


class FakeUnits:
    """The units enqueued under `fake()`, in order: payload dicts (`at` for scheduled ones)."""

    def __init__(self) -> None:
        self.jobs: list[dict[str, Any]] = []

    def record(self, pushed: unit.Unit) -> None:
        self.jobs.append(pushed.payload)

    def for_function(self, fn: Callable[..., Any] | str) -> list[dict[str, Any]]:
        """The recorded units of one function (the function or its `module:name`)."""
        name = fn if isinstance(fn, str) else registry.name_of(fn)
        return [job for job in self.jobs if job["class"] == name]

    def drain(self) -> int:
        """Run every recorded unit (and the ones they enqueue, recorded here even after the
        `with` block) in order; return how many ran. A unit that raises stops the drain
        with its exception, leaving the rest recorded."""
        ran = 0
        with _with_backend(_MemoryBackend(self.record)):
            while self.jobs:
                payload = self.jobs.pop(0)
                run(unit.decode(unit.encode(payload)))
                ran += 1
        return ran

    def clear(self) -> None:
        self.jobs.clear()

    def __len__(self) -> int:
        return len(self.jobs)


@contextmanager
def _with_backend(backend: _MemoryBackend) -> Iterator[None]:
    with _swap_lock:
        saved = client_module._default
        client_module._default = client_module.Client(url="memory://", backend=backend)  # type: ignore[arg-type]
    try:
        yield
    finally:
        with _swap_lock:
            client_module._default = saved


@contextmanager
def inline() -> Iterator[None]:
    """Run every perform* at once in the caller (scheduled ones too), raising what it raises."""
    with _with_backend(_MemoryBackend(run)):
        yield


@contextmanager
def fake() -> Iterator[FakeUnits]:
    """Record every perform* in memory instead of enqueuing it."""
    units = FakeUnits()
    with _with_backend(_MemoryBackend(units.record)):
        yield units
