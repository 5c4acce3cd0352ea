"""beat and forget_process: what keeps a server's units its own, seen through the protocol.
The Redis layout a beat writes (Sidekiq's process hash) is checked in tests/redis."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from difo.backends import Backend, ProcessBeat
from tests.conformance.conftest import payload

Name = Callable[[str], str]


def process_beat(identity: str, **fields: object) -> ProcessBeat:
    info = json.dumps({"identity": identity, "queues": ["default"], "started_at": time.time()})
    beat = ProcessBeat(identity=identity, info=info.encode(), busy=0, quiet=False, rss_kb=1,
                       concurrency=1)
    for key, value in fields.items():
        setattr(beat, key, value)
    return beat


def test_beat_replies_with_the_backend_clock(backend: Backend, name: Name) -> None:
    before = time.time()
    reply = backend.beat(process_beat(name("p")))
    assert before - 2 < reply.time < time.time() + 2
    assert reply.signal is None


def test_a_beating_process_keeps_its_units(backend: Backend, name: Name) -> None:
    queue, me, rescuer = name("q"), name("p"), name("rescuer")
    backend.push(queue, [payload(0, queue)])
    backend.beat(process_beat(me))
    [claimed] = backend.claim(me, [queue], 1, [], [], 1)
    for _ in range(3):
        time.sleep(0.1)
        backend.beat(process_beat(me))
        assert backend.take_orphans(rescuer, 0.25) == []
    assert backend.in_flight(me) == [claimed.ref]


def test_a_forgotten_process_is_not_recovered(backend: Backend, name: Name) -> None:
    """A clean stop: nothing left in flight, and nobody recovers it later."""
    queue, me, rescuer = name("q"), name("p"), name("rescuer")
    backend.push(queue, [payload(0, queue)])
    backend.beat(process_beat(me))
    [claimed] = backend.claim(me, [queue], 1, [], [], 1)
    backend.requeue(me, [(claimed.ref, queue)])
    backend.forget_process(me)
    time.sleep(0.2)
    assert backend.take_orphans(rescuer, 0.1) == []
    assert backend.queue_sizes([queue]) == {queue: 1}


def test_a_beat_pops_one_pending_signal(backend: Backend, name: Name) -> None:
    me = name("p")
    backend.beat(process_beat(me))
    backend.signal(me, "TSTP")
    backend.signal(me, "TERM")
    assert backend.beat(process_beat(me)).signal == "TSTP"  # in the order sent
    assert backend.beat(process_beat(me)).signal == "TERM"
    assert backend.beat(process_beat(me)).signal is None
