"""retry_later, kill and discard: a failed unit leaves the in-flight record for one place."""

from __future__ import annotations

import time
from collections.abc import Callable

from difo import unit
from difo.backends import Backend, Claimed
from tests.conformance.conftest import marker_of, payload

Name = Callable[[str], str]
DAY = 24 * 3600


def claim_all(backend: Backend, identity: str, queue: str, count: int) -> list[Claimed]:
    return backend.claim(identity, [queue], count, [], [], 1)


def failed(raw: bytes, message: str) -> bytes:
    rewritten = dict(unit.decode(raw).payload)
    rewritten.update(error_message=message, error_class="ValueError", retry_count=0)
    return unit.encode(rewritten)


def test_retry_later_moves_the_unit_to_the_retry_set(backend: Backend, name: Name) -> None:
    queue, me = name("q"), name("p")
    backend.push(queue, [payload(0, queue), payload(1, queue)])
    first, second = claim_all(backend, me, queue, 2)
    at = time.time() + 3600.125
    rewritten = failed(first.raw, "boom")
    backend.retry_later(me, first.ref, rewritten, at)
    assert backend.in_flight(me) == [second.ref]
    assert backend.set_range("retry", 0, -1, False) == [(rewritten, at)]
    assert backend.set_size("dead") == 0
    assert backend.queue_sizes([queue]) == {queue: 0}


def test_kill_moves_the_unit_to_the_dead_set(backend: Backend, name: Name) -> None:
    queue, me = name("q"), name("p")
    backend.push(queue, [payload(0, queue), payload(1, queue)])
    first, second = claim_all(backend, me, queue, 2)
    rewritten = failed(first.raw, "dead at once")
    before = time.time()
    backend.kill(me, first.ref, rewritten)
    assert backend.in_flight(me) == [second.ref]
    [(raw, score)] = backend.set_range("dead", 0, -1, False)
    assert raw == rewritten
    assert before - 1 < score < time.time() + 1  # the time of death
    assert backend.set_size("retry") == 0


def test_kill_adds_one_entry_and_trims_entries_older_than_180_days(
    backend: Backend, name: Name
) -> None:
    queue, me = name("q"), name("p")
    now = time.time()
    too_old, old_enough = payload("181 days", queue), payload("179 days", queue)
    backend.set_add("dead", now - 181 * DAY, too_old)
    backend.set_add("dead", now - 179 * DAY, old_enough)
    backend.push(queue, [payload("fresh", queue)])
    [claimed] = claim_all(backend, me, queue, 1)
    backend.kill(me, claimed.ref, claimed.raw)
    kept = [raw for raw, _ in backend.set_range("dead", 0, -1, False)]
    assert kept == [old_enough, claimed.raw]


def test_discard_drops_the_unit_everywhere(backend: Backend, name: Name) -> None:
    queue, me = name("q"), name("p")
    backend.push(queue, [payload(0, queue)])
    [claimed] = claim_all(backend, me, queue, 1)
    backend.discard(me, claimed.ref)
    assert backend.in_flight(me) == []
    assert backend.queue_sizes([queue]) == {queue: 0}
    assert [backend.set_size(s) for s in ("schedule", "retry", "dead")] == [0, 0, 0]


def test_settling_a_unit_no_longer_in_flight_writes_nothing(
    backend: Backend, name: Name
) -> None:
    """A unit already acked (or put back) must not reappear in a second place."""
    queue, me = name("q"), name("p")
    backend.push(queue, [payload(0, queue)])
    [claimed] = claim_all(backend, me, queue, 1)
    assert backend.requeue(me, [(claimed.ref, queue)]) == 1
    backend.retry_later(me, claimed.ref, failed(claimed.raw, "late"), time.time() + 60)
    backend.kill(me, claimed.ref, failed(claimed.raw, "late"))
    backend.discard(me, claimed.ref)
    assert backend.set_size("retry") == 0
    assert backend.set_size("dead") == 0
    assert [marker_of(raw) for raw in backend.queue_range(queue, 0, -1)] == [0]
