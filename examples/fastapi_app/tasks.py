"""The units: `difo server --import fastapi_app.tasks` may call anything defined here."""

from __future__ import annotations

import os

import redis.asyncio


async def send_welcome(email: str) -> None:
    """Stand-in for sending mail: append the message to the Redis list `examples:outbox`.

    An `async def` unit runs on the server's event loop, so it awaits its I/O as an endpoint
    would; anything blocking belongs in a plain function (docs/async-and-processes.md).
    """
    url = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
    async with redis.asyncio.Redis.from_url(url) as outbox:
        await outbox.rpush("examples:outbox", f"Welcome, {email}!")
