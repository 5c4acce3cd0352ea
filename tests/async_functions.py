"""async def functions for units in tests (servers run them with --import tests.async_functions).

They report to the test through the private Redis named by DIFO_TEST_REDIS.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import difo
from tests.functions import results


async def record(tag: str, *args: Any) -> None:
    await asyncio.sleep(0)
    results().rpush(f"results:{tag}", json.dumps(list(args)))


async def sleep_then_record(tag: str, seconds: float, marker: Any) -> None:
    results().rpush(f"started:{tag}", json.dumps(marker))
    await asyncio.sleep(seconds)
    results().rpush(f"results:{tag}", json.dumps(marker))


async def record_context(tag: str) -> None:
    await asyncio.sleep(0.01)
    current = difo.current()
    assert current is not None
    results().rpush(f"results:{tag}", json.dumps({"jid": current.jid, "queue": current.queue}))


@difo.job(retry=1, retry_in=lambda count, exc: 0.1)
async def fail(tag: str) -> None:
    results().rpush(f"results:{tag}", "try")
    raise ValueError(f"async failure {tag}")


@difo.job(timeout=0.5, retry=1, retry_in=lambda count, exc: 0.1)
async def too_slow(tag: str) -> None:
    results().rpush(f"started:{tag}", str(time.time()))
    await asyncio.sleep(30)
    results().rpush(f"results:{tag}", "finished")


async def unlimited(tag: str, seconds: float) -> None:
    """Bound by DIFO_UNIT_TIMEOUT only."""
    results().rpush(f"started:{tag}", "1")
    await asyncio.sleep(seconds)
    results().rpush(f"results:{tag}", "finished")
