"""The asyncio client: enqueue from an event loop without blocking it.

    import difo.aio
    jid = await difo.aio.perform(send_email, user_id)
    await difo.aio.perform_in(60, send_email, user_id)

The same checks, payloads and errors as `difo.perform*`: the async client reuses the sync
client's pure half (`Client.prepare`, `Client.prepare_bulk`); only the write differs. A Redis
URL is written through redis-py's asyncio client; a sqlite:// URL runs the sync backend in a
worker thread (`asyncio.to_thread`). redis.asyncio connections belong to the event loop that
opened them, so the client keeps one connection pool per running loop.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from difo import config, unit
from difo.backends import Backend, open_backend
from difo.client import Client, bulk_argument_error, bulk_write_error, when_from
from difo.errors import ArgumentError, BackendError


class AsyncBackend(Protocol):
    """The writes an async client makes; the guarantees of Backend.push and .schedule."""

    url: str

    async def push(self, queue: str, payloads: Sequence[bytes]) -> None:
        """Append units to `queue` atomically, register it and wake an idle server."""

    async def schedule(self, entries: Sequence[tuple[float, bytes]]) -> None:
        """Add units to the schedule, each due at its epoch-seconds time. Atomic."""

    async def close(self) -> None:
        """Close the connections."""


class ThreadedBackend:
    """A sync backend (SQLite) driven from a worker thread, so the loop never blocks."""

    def __init__(self, backend: Backend) -> None:
        self.url = backend.url
        self._backend = backend

    async def push(self, queue: str, payloads: Sequence[bytes]) -> None:
        await asyncio.to_thread(self._backend.push, queue, list(payloads))

    async def schedule(self, entries: Sequence[tuple[float, bytes]]) -> None:
        await asyncio.to_thread(self._backend.schedule, list(entries))

    async def close(self) -> None:
        await asyncio.to_thread(self._backend.close)


def open_async_backend(url: str) -> AsyncBackend:
    """The async writer for `url`: redis.asyncio for Redis, a threaded sync backend else."""
    parsed = config.parse_url(url)
    if parsed.is_redis:
        from difo.backends.redis.aio import AsyncRedisPusher

        return AsyncRedisPusher(parsed)
    return ThreadedBackend(open_backend(url))


class AsyncClient:
    """Enqueues units from coroutines; one connection pool per event loop, fork-safe."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or config.load().url
        config.parse_url(self.url)
        self._builder = Client(self.url)  # checks and payloads only: its backend stays shut
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._backends: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncBackend] = (
            weakref.WeakKeyDictionary()
        )

    def backend(self) -> AsyncBackend:
        """The writer for the running event loop (opened on first use)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if os.getpid() != self._pid:  # connections are never shared across a fork
                self._pid = os.getpid()
                self._backends = weakref.WeakKeyDictionary()
            backend = self._backends.get(loop)
            if backend is None:
                backend = self._backends[loop] = open_async_backend(self.url)
            return backend

    async def close(self) -> None:
        """Close the running loop's connections (the others go with their loops)."""
        with self._lock:
            backend = self._backends.pop(asyncio.get_running_loop(), None)
        if backend is not None:
            await backend.close()

    async def push(
        self, fn: Callable[..., Any], args: Sequence[object], queue: str | None = None
    ) -> str:
        """Enqueue one unit now; return its jid."""
        target, jid, raw = self._builder.prepare(fn, args, queue)
        await self.backend().push(target, [raw])
        return jid

    async def push_at(
        self, when: float, fn: Callable[..., Any], args: Sequence[object], queue: str | None = None
    ) -> str:
        """Enqueue one unit due at epoch seconds `when` (now, if that has passed)."""
        if when <= unit.now():
            return await self.push(fn, args, queue)
        _, jid, raw = self._builder.prepare(fn, args, queue, enqueued=False)
        await self.backend().schedule([(when, raw)])
        return jid

    async def push_bulk(
        self, fn: Callable[..., Any], args_list: Iterable[Sequence[object]],
        queue: str | None = None,
    ) -> list[str]:
        """Enqueue many units of one function in chunks of 1,000 (see Client.push_bulk)."""
        name, target, chunks = self._builder.prepare_bulk(fn, args_list, queue)
        backend = self.backend()
        jids: list[str] = []
        try:
            for chunk_jids, encoded in chunks:
                try:
                    await backend.push(target, encoded)
                except BackendError as exc:
                    if not jids:
                        raise
                    raise bulk_write_error(name, len(jids), exc) from exc
                jids.extend(chunk_jids)
        except ArgumentError as exc:
            if jids:
                raise bulk_argument_error(exc, len(jids)) from None
            raise
        return jids


_default: AsyncClient | None = None
_default_lock = threading.Lock()


def default() -> AsyncClient:
    """The process's async client, configured from the environment on first use."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = AsyncClient()
    return _default


def configure(url: str | None = None) -> AsyncClient:
    """Point the default async client at `url` (or the environment's setting again).
    Connections of the old client are dropped with it; `await close()` first to shut them."""
    global _default
    with _default_lock:
        _default = AsyncClient(url)
        return _default


async def close() -> None:
    """Close the default async client's connections for the running loop."""
    if _default is not None:
        await _default.close()


async def perform(fn: Callable[..., Any], *args: Any) -> str:
    """Enqueue `fn(*args)` on the function's queue; return the jid."""
    return await default().push(fn, args)


async def perform_on(queue: str, fn: Callable[..., Any], *args: Any) -> str:
    """Enqueue `fn(*args)` on `queue`."""
    return await default().push(fn, args, queue)


async def perform_in(
    delay: float | timedelta, fn: Callable[..., Any], *args: Any, queue: str | None = None
) -> str:
    """Enqueue `fn(*args)` to run after `delay` seconds (or a timedelta)."""
    return await default().push_at(when_from(delay, relative=True), fn, args, queue)


async def perform_at(
    when: float | datetime, fn: Callable[..., Any], *args: Any, queue: str | None = None
) -> str:
    """Enqueue `fn(*args)` to run at `when`: an aware datetime or epoch seconds."""
    return await default().push_at(when_from(when, relative=False), fn, args, queue)


async def perform_bulk(
    fn: Callable[..., Any], args_list: Iterable[Sequence[object]], *, queue: str | None = None
) -> list[str]:
    """Enqueue one unit of `fn` per argument list, in chunks of 1,000; return the jids."""
    return await default().push_bulk(fn, args_list, queue)
