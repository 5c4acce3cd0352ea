"""Dramatiq: `dramatiq app_dramatiq -p 1 -t 10` / `-p 2 -t 8`, its default middleware."""

from __future__ import annotations

import common
import dramatiq
from dramatiq.brokers.redis import RedisBroker

broker = RedisBroker(url=common.URL)
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="bench")
def incr(sent_at: float) -> None:
    common.work(sent_at)


def send(count: int) -> None:
    for _ in range(count):
        incr.send(0)


def fill(count: int) -> None:
    send(count)


def paced(rate: float, count: int) -> None:
    common.paced(lambda at: incr.send(at), rate, count)
