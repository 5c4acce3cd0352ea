"""The client side of the Redis backend on redis-py's asyncio client (`difo.aio` uses it).

Only the writes a client makes: push (the same Lua script as the sync backend: queue, queue
set and wake-up in one step) and schedule. One instance belongs to one event loop, as
redis.asyncio's connections do.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import redis
import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from difo.backends.redis import SOCKET_TIMEOUT, connection_options, keys, scripts
from difo.config import BackendURL
from difo.errors import BackendError, BackendUnavailable

MAX_CONNECTIONS = 50  # per event loop


class AsyncRedisPusher:
    """push / schedule / close on redis.asyncio, raising difo's BackendError family."""

    def __init__(self, url: BackendURL) -> None:
        self.url = url.masked
        # A pool that makes a burst of enqueues wait for a connection instead of failing
        # with "Too many connections" (redis.asyncio's default pool caps at 100 and raises).
        plain = redis.asyncio.Redis(**connection_options(url, retry=Retry(NoBackoff(), 0)))
        pool = redis.asyncio.BlockingConnectionPool(
            connection_class=plain.connection_pool.connection_class,
            max_connections=MAX_CONNECTIONS, timeout=SOCKET_TIMEOUT,
            **plain.connection_pool.connection_kwargs,
        )
        self._client: redis.asyncio.Redis = redis.asyncio.Redis.from_pool(pool)
        self._push = self._client.register_script(scripts.source("push"))

    @asynccontextmanager
    async def _errors(self) -> AsyncIterator[None]:
        try:
            yield
        except redis.AuthenticationError as exc:
            raise BackendUnavailable(f"Redis at {self.url} refused the password: {exc}") from exc
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            raise BackendUnavailable(f"Redis at {self.url} is unreachable: {exc}") from exc
        except redis.RedisError as exc:
            raise BackendError(f"Redis at {self.url} failed: {exc}") from exc

    async def push(self, queue: str, payloads: Sequence[bytes]) -> None:
        if payloads:
            async with self._errors():
                await self._push(keys=(keys.QUEUES, keys.queue(queue), keys.wake(queue)),
                                 args=(queue, *payloads))

    async def schedule(self, entries: Sequence[tuple[float, bytes]]) -> None:
        if entries:
            mapping: dict[Any, float] = {raw: at for at, raw in entries}
            async with self._errors():
                await self._client.zadd(keys.SCHEDULE, mapping)

    async def close(self) -> None:
        await self._client.aclose()
