"""stage_due, take_orphans and release: units moved between places through a staging record,
and the poison-pill rule applied to orphans (heartbeat.place_orphan)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import pytest

from difo import unit
from difo.backends import Backend, Claimed, Placement, ProcessBeat, Staged
from difo.config import Settings
from difo.heartbeat import POISON_LIMIT, Heartbeat, place_orphan
from difo.scheduler import promote
from tests.conformance.conftest import marker_of, payload

Name = Callable[[str], str]
DEAD_AFTER = 0.2  # seconds without a beat before a process counts as dead, in these tests


def beat(backend: Backend, identity: str) -> None:
    info = json.dumps({"identity": identity, "queues": ["default"], "started_at": time.time()})
    backend.beat(ProcessBeat(identity=identity, info=info.encode(), busy=0, quiet=False,
                             rss_kb=1, concurrency=1))


def claim_all(backend: Backend, identity: str, queue: str, count: int = 100,
              first_seq: int = 1) -> list[Claimed]:
    return backend.claim(identity, [queue], count, [], [], first_seq)


def let_die() -> None:
    """Wait until processes that last beat now count as dead under DEAD_AFTER."""
    time.sleep(DEAD_AFTER * 1.5)


def queued_markers(backend: Backend, queue: str) -> list[object]:
    """The markers waiting in `queue`, in the order they will be claimed."""
    return [marker_of(raw) for raw in reversed(backend.queue_range(queue, 0, -1))]


# -- stage_due and release ---------------------------------------------------------------------


def test_stage_due_takes_only_due_units_from_schedule_and_retry(
    backend: Backend, name: Name
) -> None:
    queue, me = name("q"), name("p")
    now = time.time()
    due, later = payload("due", queue), payload("later", queue)
    backend.schedule([(now - 5, due), (now + 3600, later)])
    retry_due, retry_later = payload("retry-due", queue), payload("retry-later", queue)
    backend.set_add("retry", now - 1, retry_due)
    backend.set_add("retry", now + 3600, retry_later)
    staged = backend.stage_due(me, 100)
    assert sorted(s.raw for s in staged) == sorted([due, retry_due])
    for item in staged:
        assert (item.owner, item.started, item.counted) == (me, False, False)
    assert len({s.ref for s in staged}) == 2
    assert [raw for raw, _ in backend.set_range("schedule", 0, -1, False)] == [later]
    assert [raw for raw, _ in backend.set_range("retry", 0, -1, False)] == [retry_later]
    assert backend.stage_due(me, 100) == []  # nothing is staged twice


def test_stage_due_takes_at_most_limit_per_set_oldest_first(backend: Backend, name: Name) -> None:
    queue, me = name("q"), name("p")
    now = time.time()
    backend.schedule([(now - 10 + i, payload(i, queue)) for i in range(5)])
    first = backend.stage_due(me, 2)
    assert sorted(marker_of(s.raw) for s in first) == [0, 1]
    assert backend.set_size("schedule") == 3


def test_promoted_units_land_at_the_head_with_a_fresh_enqueued_at(
    backend: Backend, name: Name
) -> None:
    queue, me = name("q"), name("p")
    backend.push(queue, [payload("waiting", queue)])
    scheduled = unit.build("tests.functions:record", ["conformance", "scheduled"], queue,
                           enqueued=False)
    scheduled["custom"] = [1.0, {}]
    backend.schedule([(time.time() - 1, unit.encode(scheduled))])
    [staged] = backend.stage_due(me, 10)
    before = time.time()
    backend.release(me, [promote(staged, unit.now())])
    assert backend.set_size("schedule") == 0
    assert queued_markers(backend, queue) == ["waiting", "scheduled"]  # at the head: run last
    [_, raw] = [u.raw for u in claim_all(backend, me, queue)]
    landed = json.loads(raw)
    assert before - 1 <= landed["enqueued_at"] <= time.time() + 1
    del landed["enqueued_at"]
    assert landed == scheduled  # every other field as it was
    assert queue in backend.queue_names()


def test_release_places_units_at_either_end_or_in_the_dead_set(
    backend: Backend, name: Name
) -> None:
    queue, me = name("q"), name("p")
    backend.push(queue, [payload("waiting", queue)])
    now = time.time()
    backend.schedule([(now - 3, payload("head", queue)), (now - 2, payload("front", queue)),
                      (now - 1, payload("dead", queue))])
    staged = {marker_of(s.raw): s for s in backend.stage_due(me, 10)}
    backend.release(me, [
        Placement(staged["head"].ref, staged["head"].raw, queue=queue),
        Placement(staged["front"].ref, staged["front"].raw, queue=queue, front=True),
        Placement(staged["dead"].ref, staged["dead"].raw, dead=True),
    ])
    assert queued_markers(backend, queue) == ["front", "waiting", "head"]
    assert [raw for raw, _ in backend.set_range("dead", 0, -1, False)] == [staged["dead"].raw]


def test_release_skips_units_no_longer_staged(backend: Backend, name: Name) -> None:
    queue, me = name("q"), name("p")
    backend.schedule([(time.time() - 1, payload(0, queue))])
    [staged] = backend.stage_due(me, 10)
    placement = Placement(staged.ref, staged.raw, queue=queue)
    backend.release(me, [placement])
    backend.release(me, [placement])  # a retried call must not push the unit twice
    assert backend.queue_sizes([queue]) == {queue: 1}


def test_junk_in_the_schedule_is_released_to_dead_wrapped(backend: Backend, name: Name) -> None:
    me = name("p")
    backend.set_add("schedule", time.time() - 1, b"\xff not json {")
    [staged] = backend.stage_due(me, 10)
    backend.release(me, [promote(staged, unit.now())])
    [(raw, _)] = backend.set_range("dead", 0, -1, False)
    wrapped = unit.decode(raw)  # a valid payload for Sidekiq's readers
    assert "not JSON" in wrapped.payload["error_message"]
    assert wrapped.payload["difo_raw"] == "\\xff not json {"
    assert backend.set_size("schedule") == 0


def test_kill_staged_moves_a_staged_unit_to_dead(backend: Backend, name: Name) -> None:
    queue, me = name("q"), name("p")
    backend.schedule([(time.time() - 1, payload(0, queue))])
    [staged] = backend.stage_due(me, 10)
    backend.kill(me, staged.ref, staged.raw, staged=True)
    assert [raw for raw, _ in backend.set_range("dead", 0, -1, False)] == [staged.raw]
    backend.release(me, [Placement(staged.ref, staged.raw, queue=queue)])
    assert backend.queue_sizes([queue]) == {queue: 0}  # it left the staging record


# -- take_orphans ----------------------------------------------------------------------------


def test_take_orphans_takes_only_processes_that_stopped_beating(
    backend: Backend, name: Name
) -> None:
    queue, dead, alive, rescuer = name("q"), name("dead"), name("alive"), name("rescuer")
    backend.push(queue, [payload(i, queue) for i in range(4)])
    beat(backend, dead)
    beat(backend, alive)
    beat(backend, rescuer)
    mine = claim_all(backend, dead, queue, 3)
    theirs = claim_all(backend, alive, queue, 1)
    backend.mark_started(dead, [mine[1].ref])
    assert backend.take_orphans(rescuer, 60) == []  # everyone beat within a minute
    let_die()
    beat(backend, alive)
    staged = backend.take_orphans(rescuer, DEAD_AFTER)
    assert sorted(marker_of(s.raw) for s in staged) == [0, 1, 2]
    assert {s.owner for s in staged} == {dead}
    assert [s.counted for s in staged] == [True, True, True]
    started = {marker_of(s.raw): s.started for s in staged}
    assert started == {0: False, 1: True, 2: False}
    assert {s.raw for s in staged} == {u.raw for u in mine}  # bytes untouched
    assert backend.in_flight(dead) == []
    assert backend.in_flight(alive) == [theirs[0].ref]
    assert backend.take_orphans(rescuer, DEAD_AFTER) == []  # taken once


def test_recovered_units_are_claimed_next_in_their_old_order(
    backend: Backend, name: Name
) -> None:
    queue, dead, rescuer = name("q"), name("dead"), name("rescuer")
    backend.push(queue, [payload(i, queue) for i in range(12)])
    beat(backend, dead)
    claim_all(backend, dead, queue, 8)
    let_die()
    heartbeat = Heartbeat(backend, rescuer, Settings(dead_after=DEAD_AFTER, heartbeat=0.1), [],
                          lambda signal: None, lambda: False)
    assert heartbeat.recover() == 8
    assert queued_markers(backend, queue) == list(range(12))


def test_take_orphans_leaves_the_caller_alone(backend: Backend, name: Name) -> None:
    queue, me = name("q"), name("p")
    beat(backend, me)
    backend.push(queue, [payload(0, queue)])
    claim_all(backend, me, queue)
    let_die()
    assert backend.take_orphans(me, DEAD_AFTER) == []
    assert len(backend.in_flight(me)) == 1


def test_take_orphans_takes_a_dead_process_staging_record(backend: Backend, name: Name) -> None:
    queue, dead, rescuer = name("q"), name("dead"), name("rescuer")
    beat(backend, dead)
    backend.schedule([(time.time() - 1, payload("promoting", queue))])
    [mid_move] = backend.stage_due(dead, 10)  # it died before releasing them
    let_die()
    beat(backend, rescuer)
    [staged] = backend.take_orphans(rescuer, DEAD_AFTER)
    assert (staged.raw, staged.owner, staged.counted) == (mid_move.raw, dead, False)
    backend.release(rescuer, [place_orphan(staged, unit.now())])
    [landed] = backend.queue_range(queue, 0, -1)
    assert marker_of(landed) == "promoting"
    assert isinstance(json.loads(landed)["enqueued_at"], float)  # pushed as a promotion
    assert "difo_orphaned" not in json.loads(landed)  # a promotion never ran


def test_concurrent_recoveries_take_each_orphan_once(backend: Backend, name: Name) -> None:
    queue = name("q")
    backend.push(queue, [payload(i, queue) for i in range(60)])
    for index in range(6):
        dead = name("dead")
        beat(backend, dead)
        claim_all(backend, dead, queue, 10, first_seq=1 + index * 10)
    let_die()
    rescuers = [name("rescuer") for _ in range(4)]
    for rescuer in rescuers:
        beat(backend, rescuer)
    taken: list[Staged] = []
    lock = threading.Lock()

    def recover(rescuer: str) -> None:
        for _ in range(20):
            staged = backend.take_orphans(rescuer, DEAD_AFTER)
            with lock:
                taken.extend(staged)

    threads = [threading.Thread(target=recover, args=(r,)) for r in rescuers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    # Each orphan is taken by exactly one rescuer; any not taken (a rescuer found the
    # recovery lock held) stays with its dead owner for the next beat.
    markers = sorted(marker_of(s.raw) for s in taken)
    assert len(markers) == len(set(markers))
    rest = backend.take_orphans(rescuers[0], DEAD_AFTER)
    assert sorted(markers + [marker_of(s.raw) for s in rest]) == list(range(60))


# -- the poison-pill rule ---------------------------------------------------------------------


def orphan(backend: Backend, name: Name, queue: str, *, start: bool) -> list[Placement]:
    """A process claims every unit in `queue` (marking them started if `start`) and dies; a
    rescuer takes them back. Returns where place_orphan sent them (already released)."""
    owner, rescuer = name("owner"), name("rescuer")
    beat(backend, owner)
    claimed = claim_all(backend, owner, queue)
    assert claimed
    if start:
        backend.mark_started(owner, [u.ref for u in claimed])
    let_die()
    beat(backend, rescuer)
    staged = backend.take_orphans(rescuer, DEAD_AFTER)
    assert len(staged) == len(claimed)
    placements = [place_orphan(s, unit.now()) for s in staged]
    backend.release(rescuer, placements)
    return placements


def orphan_count(backend: Backend, queue: str) -> list[object]:
    return [json.loads(raw).get("difo_orphaned") for raw in backend.queue_range(queue, 0, -1)]


def test_a_unit_orphaned_three_times_while_started_goes_to_dead(
    backend: Backend, name: Name
) -> None:
    queue = name("q")
    original = payload("pill", queue)
    backend.push(queue, [original])
    # First orphaning: counted even though nobody marked it started (it may have run).
    [first] = orphan(backend, name, queue, start=False)
    assert (first.front, first.dead) == (True, False)
    assert orphan_count(backend, queue) == [1]
    # Orphaned again without being started (fetched beside a pill): not counted, unchanged.
    before = backend.queue_range(queue, 0, -1)
    orphan(backend, name, queue, start=False)
    assert backend.queue_range(queue, 0, -1) == before
    # Started and orphaned: counted.
    orphan(backend, name, queue, start=True)
    assert orphan_count(backend, queue) == [2]
    # The third counted orphaning is the last.
    [last] = orphan(backend, name, queue, start=True)
    assert last.dead
    assert backend.queue_sizes([queue]) == {queue: 0}
    [(raw, _)] = backend.set_range("dead", 0, -1, False)
    dead = json.loads(raw)
    assert dead["difo_orphaned"] == POISON_LIMIT
    assert dead["error_class"] == "difo.PoisonPill"
    assert f"orphaned {POISON_LIMIT} times" in dead["error_message"]
    assert "poison pill" in dead["error_message"]
    assert isinstance(dead["failed_at"], float)
    kept = json.loads(original)
    assert {key: dead[key] for key in kept} == kept  # every original field kept


@pytest.mark.parametrize("raw", [b"not json at all", b'{"jid": "abc", "args": []}'])
def test_an_invalid_orphan_goes_to_dead_wrapped(raw: bytes) -> None:
    staged = Staged("n|gone|1:default", "default", raw, "gone", started=False, counted=True)
    placement = place_orphan(staged, unit.now())
    assert placement.dead
    wrapped = unit.decode(placement.raw)
    assert "recovered from a dead server" in wrapped.payload["error_message"]
    assert wrapped.payload["difo_raw"] == raw.decode()
