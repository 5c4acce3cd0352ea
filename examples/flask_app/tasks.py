"""The units. They use `current_app` as a view would: worker.setup pushes the app context."""

from __future__ import annotations

import redis
from flask import current_app

import difo


@difo.job(retry=5)
def send_welcome(email: str) -> None:
    """Stand-in for sending mail: append the message to the Redis list `examples:outbox`."""
    sender = current_app.config["MAIL_SENDER"]
    with redis.Redis.from_url(current_app.config["REDIS_URL"]) as outbox:
        outbox.rpush("examples:outbox", f"From {sender}: welcome, {email}!")
