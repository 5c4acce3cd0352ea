"""difo: `difo server -w 10 -q bench --import app_difo` (two servers on two cores)."""

from __future__ import annotations

import common

import difo

QUEUE = "bench"


@difo.job(queue=QUEUE)
def incr(sent_at: float, pad: str = "") -> None:
    """The shared unit; `pad` only makes it bigger (the scaling table's unit sizes)."""
    common.work(sent_at)


@difo.job(queue=QUEUE)
def empty(sent_at: float, pad: str = "") -> None:
    """Does nothing at all: difo's own cost per unit."""


def send(count: int) -> None:
    for _ in range(count):
        difo.perform(incr, 0)


def fill(count: int, unit: str = "incr", pad: int = 0) -> None:
    fn = empty if unit == "empty" else incr
    args: list[object] = [0, "x" * pad] if pad else [0]
    difo.perform_bulk(fn, [args] * count)


def bulk(count: int) -> None:
    difo.perform_bulk(incr, [[index] for index in range(count)])


def paced(rate: float, count: int) -> None:
    common.paced(lambda at: difo.perform(incr, at), rate, count)


difo.configure(common.URL)
