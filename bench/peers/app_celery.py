"""Celery: `celery -A app_celery worker -P threads -c 10` / `-P prefork -c 2`; no result
backend (the units return nothing), every other setting Celery's default."""

from __future__ import annotations

import common
from celery import Celery

app = Celery("bench", broker=common.URL)
app.conf.task_ignore_result = True
app.conf.worker_hijack_root_logger = False


@app.task(name="incr")
def incr(sent_at: float) -> None:
    common.work(sent_at)


def send(count: int) -> None:
    for _ in range(count):
        incr.delay(0)


def fill(count: int) -> None:
    send(count)


def paced(rate: float, count: int) -> None:
    common.paced(lambda at: incr.delay(at), rate, count)
