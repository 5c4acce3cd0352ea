"""arq: `arq app_arq.WorkerSettings`, its defaults (max_jobs 10); two workers on two cores.
The unit INCRs through arq's own connection (ctx["redis"]), as arq units do."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import common
from arq import create_pool
from arq.connections import RedisSettings

SETTINGS = RedisSettings.from_dsn(common.URL)


async def incr(ctx: dict[str, Any], sent_at: float) -> None:
    redis = ctx["redis"]
    if sent_at:
        await redis.rpush(common.LATENCY, repr(time.time() - sent_at))
    await redis.incr(common.COUNT)


class WorkerSettings:
    functions = [incr]
    redis_settings = SETTINGS


async def _send(count: int, rate: float = 0.0) -> None:
    pool = await create_pool(SETTINGS)
    if rate:  # one untimed unit first, as common.paced
        await pool.enqueue_job("incr", 0)
    start = time.perf_counter()
    for index in range(count):
        if rate:
            delay = start + index / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        await pool.enqueue_job("incr", time.time() if rate else 0)
    await pool.aclose()


def send(count: int) -> None:
    asyncio.run(_send(count))


def fill(count: int) -> None:
    send(count)


def paced(rate: float, count: int) -> None:
    asyncio.run(_send(count, rate))
