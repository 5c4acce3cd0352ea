"""push, claim, ack, requeue, in_flight and wait: the fetch half of the Backend contract."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from difo.backends import Backend, Claimed
from tests.conformance.conftest import marker_of, payload

Name = Callable[[str], str]


def claim(backend: Backend, identity: str, queues: list[str], count: int,
          acks: list[str] | None = None, careful: list[str] | None = None,
          first_seq: int = 1) -> list[Claimed]:
    return backend.claim(identity, queues, count, acks or [], careful or [], first_seq)


def markers(claimed: list[Claimed]) -> list[Any]:
    return [marker_of(unit.raw) for unit in claimed]


def test_claim_returns_the_oldest_units_first_with_unique_refs(
    backend: Backend, name: Name
) -> None:
    queue, me = name("q"), name("p")
    pushed = [payload(i, queue) for i in range(5)]
    backend.push(queue, pushed[:3])
    backend.push(queue, pushed[3:])
    claimed = claim(backend, me, [queue], 10)
    assert markers(claimed) == [0, 1, 2, 3, 4]
    assert [unit.raw for unit in claimed] == pushed  # bytes untouched
    assert {unit.queue for unit in claimed} == {queue}
    refs = [unit.ref for unit in claimed]
    assert len(set(refs)) == 5
    assert sorted(backend.in_flight(me)) == sorted(refs)
    assert backend.queue_sizes([queue]) == {queue: 0}
    assert queue in backend.queue_names()


def test_claim_takes_at_most_count_and_leaves_the_rest_in_order(
    backend: Backend, name: Name
) -> None:
    queue, me = name("q"), name("p")
    backend.push(queue, [payload(i, queue) for i in range(6)])
    first = claim(backend, me, [queue], 2)
    second = claim(backend, me, [queue], 3, first_seq=3)
    third = claim(backend, me, [queue], 5, first_seq=6)
    assert markers(first) == [0, 1]
    assert markers(second) == [2, 3, 4]
    assert markers(third) == [5]
    assert claim(backend, me, [queue], 5, first_seq=11) == []
    assert len(backend.in_flight(me)) == 6


def test_claim_follows_the_queue_order_given(backend: Backend, name: Name) -> None:
    low, high, me = name("low"), name("high"), name("p")
    backend.push(low, [payload(f"low{i}", low) for i in range(3)])
    backend.push(high, [payload(f"high{i}", high) for i in range(2)])
    claimed = claim(backend, me, [high, low], 4)
    assert markers(claimed) == ["high0", "high1", "low0", "low1"]
    assert [unit.queue for unit in claimed] == [high, high, low, low]
    # The other order takes from `low` first, even though `high` has units again.
    backend.push(high, [payload("high2", high)])
    assert markers(claim(backend, me, [low, high], 1, first_seq=5)) == ["low2"]
    assert markers(claim(backend, me, [low, high], 1, first_seq=6)) == ["high2"]


def test_claim_with_count_zero_moves_nothing(backend: Backend, name: Name) -> None:
    queue, me = name("q"), name("p")
    backend.push(queue, [payload(0, queue)])
    assert claim(backend, me, [queue], 0) == []
    assert backend.in_flight(me) == []
    assert backend.queue_sizes([queue]) == {queue: 1}


def test_claim_on_empty_queues_does_not_block(backend: Backend, name: Name) -> None:
    started = time.monotonic()
    assert claim(backend, name("p"), [name("q"), name("q")], 10) == []
    assert time.monotonic() - started < 0.5


def test_acks_leave_the_in_flight_record(backend: Backend, name: Name) -> None:
    queue, me = name("q"), name("p")
    backend.push(queue, [payload(i, queue) for i in range(4)])
    claimed = claim(backend, me, [queue], 4)
    refs = [unit.ref for unit in claimed]
    # Ack two and claim nothing: an ack-only call.
    assert claim(backend, me, [queue], 0, acks=refs[:2], first_seq=5) == []
    assert sorted(backend.in_flight(me)) == sorted(refs[2:])
    # Ack the rest in the same call that claims a new unit.
    backend.push(queue, [payload(4, queue)])
    fresh = claim(backend, me, [queue], 1, acks=refs[2:], first_seq=5)
    assert markers(fresh) == [4]
    assert backend.in_flight(me) == [fresh[0].ref]
    # Acking a ref twice (a retried call) or one unknown is harmless.
    claim(backend, me, [queue], 0, acks=[refs[0], "999:nowhere"], first_seq=6)
    assert backend.in_flight(me) == [fresh[0].ref]


def test_careful_acks_of_started_units_leave_the_record(backend: Backend, name: Name) -> None:
    queue, me = name("q"), name("p")
    backend.push(queue, [payload(i, queue, difo_orphaned=1) for i in range(3)])
    claimed = claim(backend, me, [queue], 3)
    refs = [unit.ref for unit in claimed]
    backend.mark_started(me, refs)
    # A careful ack is sent with the ack of the same ref, as the fetcher does.
    claim(backend, me, [queue], 0, acks=refs[:2], careful=refs[:2], first_seq=4)
    assert backend.in_flight(me) == [refs[2]]
    claim(backend, me, [queue], 0, acks=refs[2:], careful=refs[2:], first_seq=4)
    assert backend.in_flight(me) == []


def test_in_flight_records_are_per_process(backend: Backend, name: Name) -> None:
    queue, one, two = name("q"), name("p"), name("p")
    backend.push(queue, [payload(i, queue) for i in range(3)])
    mine = claim(backend, one, [queue], 1)
    theirs = claim(backend, two, [queue], 2)
    assert backend.in_flight(one) == [mine[0].ref]
    assert sorted(backend.in_flight(two)) == sorted(u.ref for u in theirs)
    # An ack names a ref of the caller's own record only.
    claim(backend, one, [queue], 0, acks=[u.ref for u in theirs], first_seq=2)
    assert len(backend.in_flight(two)) == 2


def test_requeue_puts_units_back_to_be_claimed_next_in_order(
    backend: Backend, name: Name
) -> None:
    queue, me = name("q"), name("p")
    backend.push(queue, [payload(i, queue) for i in range(3)])
    claimed = claim(backend, me, [queue], 3)
    backend.push(queue, [payload("later", queue)])
    # The last given is popped first: newest first puts them back in their old order.
    moved = backend.requeue(me, [(u.ref, u.queue) for u in reversed(claimed)])
    assert moved == 3
    assert backend.in_flight(me) == []
    again = claim(backend, me, [queue], 10, first_seq=4)
    assert markers(again) == [0, 1, 2, "later"]
    assert [u.raw for u in again[:3]] == [u.raw for u in claimed]  # unchanged


def test_requeue_goes_to_each_units_own_queue(backend: Backend, name: Name) -> None:
    one, two, me = name("q"), name("q"), name("p")
    backend.push(one, [payload("one", one)])
    backend.push(two, [payload("two", two)])
    claimed = claim(backend, me, [one, two], 2)
    assert backend.requeue(me, [(u.ref, u.queue) for u in claimed]) == 2
    assert backend.queue_sizes([one, two]) == {one: 1, two: 1}
    assert markers(claim(backend, me, [two], 5, first_seq=3)) == ["two"]


def test_requeue_skips_units_no_longer_in_flight(backend: Backend, name: Name) -> None:
    queue, me = name("q"), name("p")
    backend.push(queue, [payload(i, queue) for i in range(2)])
    first, second = claim(backend, me, [queue], 2)
    claim(backend, me, [queue], 0, acks=[first.ref], first_seq=3)
    moved = backend.requeue(me, [(second.ref, queue), (first.ref, queue)])
    assert moved == 1  # the acked unit is not put back: it would run twice
    assert backend.queue_sizes([queue]) == {queue: 1}
    assert backend.requeue(me, [(second.ref, queue)]) == 0  # twice is harmless
    assert backend.queue_sizes([queue]) == {queue: 1}
    assert backend.requeue(me, []) == 0


def test_concurrent_claims_take_each_unit_once(backend: Backend, name: Name) -> None:
    queue = name("q")
    total = 600
    backend.push(queue, [payload(i, queue) for i in range(total)])
    found: dict[str, list[Any]] = {}

    def drain(identity: str) -> None:
        seq = 1
        taken: list[Any] = []
        while True:
            claimed = claim(backend, identity, [queue], 7, first_seq=seq)
            if not claimed:
                break
            seq += 7
            taken.extend(markers(claimed))
        found[identity] = taken

    threads = [threading.Thread(target=drain, args=(name("p"),)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    everything = [marker for taken in found.values() for marker in taken]
    assert sorted(everything) == list(range(total))  # each unit claimed exactly once
    for taken in found.values():
        assert taken == sorted(taken)  # and each claimer saw them oldest first


def test_wait_claim_acks_then_claims_what_a_push_brings(backend: Backend, name: Name) -> None:
    queue, me = name("q"), name("p")
    backend.push(queue, [payload("old", queue)])
    [old] = claim(backend, me, [queue], 1)
    assert claim(backend, me, [queue], 1, first_seq=2) == []  # idle now: wake-ups cleared
    pusher = threading.Timer(0.2, lambda: backend.push(queue, [payload(i, queue)
                                                               for i in range(3)]))
    started = time.monotonic()
    pusher.start()
    try:
        claimed = backend.wait_claim(me, [name("other"), queue], 5.0, 2, [old.ref], [], 10)
    finally:
        pusher.join()
    assert 0.15 < time.monotonic() - started < 1.5
    assert markers(claimed) == [0, 1]
    assert [u.ref.partition(":")[0] for u in claimed] == ["10", "11"]
    assert sorted(backend.in_flight(me)) == sorted(u.ref for u in claimed)  # "old" acked
    assert markers(claim(backend, me, [queue], 5, first_seq=12)) == [2]


def test_wait_claim_claims_after_its_timeout_too(backend: Backend, name: Name) -> None:
    """A unit pushed without a wake-up (by a Ruby client) is found when the wait times out."""
    queue, me = name("q"), name("p")
    started = time.monotonic()
    assert backend.wait_claim(me, [queue], 0.3, 5, [], [], 1) == []
    assert 0.25 < time.monotonic() - started < 2.0
