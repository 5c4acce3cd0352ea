"""The fetcher on a real Redis: the adaptive prefetch stays bounded, a lost script is
reloaded inside the idle wait, units claimed while stopping are held back."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from difo import unit
from difo.backends import Backend, Claimed, open_backend
from difo.config import QueueSpec
from difo.fetch import PREFETCH_FACTOR, RATE_WINDOW, Fetcher
from difo.worker import ACK

WORKERS = 2


@pytest.fixture
def backend(redis_url: str) -> Iterator[Backend]:
    opened = open_backend(redis_url)
    yield opened
    opened.close()


def payload(marker: Any) -> bytes:
    return unit.encode(unit.build("tests.functions:record", ["fetch", marker], "default"))


def fetcher_for(backend: Backend, prefetch: int | None = None) -> Fetcher:
    return Fetcher(backend, "fetch-test", [QueueSpec("default")], False, WORKERS, prefetch)


def take_all(fetcher: Fetcher) -> list[Claimed]:
    taken = []
    while not fetcher.inbox.empty():
        item = fetcher.inbox.get_nowait()
        assert item is not None
        taken.append(item)
    return taken


def test_the_adaptive_prefetch_grows_for_fast_units_and_stays_bounded(
    backend: Backend
) -> None:
    for start in range(0, 20_000, 1_000):
        backend.push("default", [payload(i) for i in range(start, start + 1_000)])
    fetcher = fetcher_for(backend)
    bound = WORKERS + WORKERS * PREFETCH_FACTOR
    most, finished, deadline = 0, 0, time.monotonic() + 30
    while finished < 20_000:
        assert time.monotonic() < deadline
        fetcher.step()
        most = max(most, len(fetcher.outstanding))
        for claimed in take_all(fetcher):  # "run" each at once: a very fast unit
            fetcher.done.append((claimed.ref, ACK))
            finished += 1
    assert most <= bound
    assert fetcher.prefetch == WORKERS * PREFETCH_FACTOR  # fast units: the upper bound
    assert most > WORKERS * 2  # it did claim past the workers


def test_the_adaptive_prefetch_stays_at_workers_for_slow_units(backend: Backend) -> None:
    backend.push("default", [payload(i) for i in range(200)])
    fetcher = fetcher_for(backend)
    deadline = time.monotonic() + 4 * RATE_WINDOW
    while time.monotonic() < deadline:
        fetcher.step()
        for claimed in take_all(fetcher)[:1]:  # about one unit per step: slow units
            fetcher.done.append((claimed.ref, ACK))
        time.sleep(0.05)
        assert len(fetcher.outstanding) <= 2 * WORKERS
    assert fetcher.prefetch == WORKERS


def test_a_fixed_prefetch_does_not_adapt(backend: Backend) -> None:
    backend.push("default", [payload(i) for i in range(3_000)])
    fetcher = fetcher_for(backend, prefetch=1)
    for _ in range(200):
        fetcher.step()
        assert len(fetcher.outstanding) <= WORKERS + 1
        for claimed in take_all(fetcher):
            fetcher.done.append((claimed.ref, ACK))
    assert fetcher.prefetch == 1


def test_the_idle_wait_reloads_a_flushed_script(backend: Backend, r: redis.Redis) -> None:
    backend.push("default", [payload("before")])
    backend.claim("p", ["default"], 1, [], [], 1)
    r.script_flush()
    backend.push("default", [payload("after")])  # push loads it again: flush once more
    r.script_flush()
    claimed = backend.wait_claim("p", ["default"], 1.0, 5, [], [], 2)
    assert [unit.decode(c.raw, "default").args[1] for c in claimed] == ["after"]


def test_units_claimed_while_stopping_are_held_not_handed_to_workers(
    backend: Backend
) -> None:
    fetcher = fetcher_for(backend)
    fetcher.step()  # finds the queue empty: the next step waits, then claims
    backend.push("default", [payload(i) for i in range(3)])
    fetcher.stopping.set()
    fetcher.step()
    assert fetcher.inbox.empty()
    held = fetcher.take_waiting()
    assert len(held) == 3
    assert fetcher.requeue(held) == 3
    assert backend.in_flight("fetch-test") == []
