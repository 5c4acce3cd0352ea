"""RQ: `rq worker bench` (the default forking Worker: one fork per job; two on two cores)."""

from __future__ import annotations

import common
from rq import Queue

queue = Queue("bench", connection=common.R)


def incr(sent_at: float) -> None:
    common.work(sent_at)


def send(count: int) -> None:
    for _ in range(count):
        queue.enqueue(incr, 0)


def fill(count: int) -> None:
    for start in range(0, count, 1000):
        size = min(1000, count - start)
        queue.enqueue_many([Queue.prepare_data(incr, (0,)) for _ in range(size)])


def paced(rate: float, count: int) -> None:
    common.paced(lambda at: queue.enqueue(incr, at), rate, count)
