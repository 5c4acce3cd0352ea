"""Huey: `huey_consumer app_huey.huey -k thread -w 10` / `-k process -w 2`."""

from __future__ import annotations

import common
from huey import RedisHuey

huey = RedisHuey("bench", url=common.URL)


@huey.task()
def incr(sent_at: float) -> None:
    common.work(sent_at)


def send(count: int) -> None:
    for _ in range(count):
        incr(0)


def fill(count: int) -> None:
    send(count)


def paced(rate: float, count: int) -> None:
    common.paced(lambda at: incr(at), rate, count)
