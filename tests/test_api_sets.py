"""difo.api over the sorted sets and the queues: order, pages, find, and every move
(retry now, add to queue, delete, kill, retry all, clear), checked in Redis itself."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis

from difo import api, retry, unit
from difo.api import DeadSet, Queue, RetrySet, ScheduledSet
from difo.backends.redis import keys

NOW = unit.now()


def member(n: int, queue: str = "default", **fields: Any) -> dict[str, Any]:
    return unit.build("tests.functions:record", ["api", n], queue, fields or None)


def fill(r: redis.Redis, key: str, count: int, base: float = NOW, **fields: Any
         ) -> list[dict[str, Any]]:
    """`count` units in sorted set `key`, unit n scored base + n."""
    made = [member(n, **fields) for n in range(count)]
    if key == "schedule":  # Sidekiq's schedule members carry no enqueued_at
        for one in made:
            del one["enqueued_at"]
    r.zadd(key, {unit.encode(m): base + n for n, m in enumerate(made)})
    return made


def failed_member(n: int, count: int = 3, queue: str = "default") -> dict[str, Any]:
    made = member(n, queue, retry=5, backtrace=True)
    made.update({"retry_count": count, "failed_at": NOW - 100, "retried_at": NOW - 10,
                 "error_class": "ValueError", "error_message": f"bad {n}",
                 "error_backtrace": retry.encode_backtrace(["a.py:1:in `f'", "b.py:2:in `g'"])})
    return made


def in_queue(r: redis.Redis, queue: str) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in r.lrange(f"queue:{queue}", 0, -1)]


# -- order and pages -----------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "key", "newest_first"), [
    (ScheduledSet, "schedule", False), (RetrySet, "retry", False), (DeadSet, "dead", True),
])
def test_iteration_order_and_pages(
    redis_url: str, r: redis.Redis, kind: Any, key: str, newest_first: bool
) -> None:
    made = fill(r, key, 120)
    sorted_set = kind(backend=redis_url)
    assert sorted_set.size == len(sorted_set) == 120
    expected = [m["jid"] for m in made]
    if newest_first:
        expected.reverse()
    entries = list(sorted_set)  # more than two pages of 50
    assert [e.jid for e in entries] == expected
    scores = [e.at for e in entries]
    assert scores == sorted(scores, reverse=newest_first)
    assert [e.jid for e in sorted_set.page(1, 50)] == expected[:50]
    assert [e.jid for e in sorted_set.page(3, 50)] == expected[100:]
    assert sorted_set.page(4, 50) == []
    assert [e.jid for e in sorted_set.page(2)] == expected[25:50]  # 25 a page by default
    assert all(e.where == key for e in entries)


def test_entry_fields(redis_url: str, r: redis.Redis) -> None:
    failed = failed_member(1, queue="mail")
    failed["enqueued_at"] = 1_800_000_000_123  # Sidekiq 8 writes integer milliseconds
    r.zadd("retry", {unit.encode(failed): NOW + 60})
    [entry] = list(RetrySet(backend=redis_url))
    assert entry.valid
    assert entry.jid == failed["jid"]
    assert entry.function == "tests.functions:record"
    assert entry.args == ["api", 1]
    assert entry.queue == "mail"
    assert entry.at == pytest.approx(NOW + 60)
    assert entry.retry_count == 3
    assert entry.error_class == "ValueError"
    assert entry.error_message == "bad 1"
    assert entry.failed_at == pytest.approx(NOW - 100)
    assert entry.retried_at == pytest.approx(NOW - 10)
    assert entry.enqueued_at == pytest.approx(1_800_000_000.123)
    assert entry.backtrace == ["a.py:1:in `f'", "b.py:2:in `g'"]
    shown = entry.to_dict()
    assert shown["jid"] == failed["jid"] and shown["retry_count"] == 3
    assert shown["where"] == "retry" and shown["at"] == pytest.approx(NOW + 60)
    assert "raw" not in shown
    json.dumps(shown)


def test_display_class_and_wrapped_name_the_function(redis_url: str, r: redis.Redis) -> None:
    wrapped = member(1, wrapped="SendMail", display_class=None)
    shown = member(2, display_class="Mailer#deliver")
    r.zadd("schedule", {unit.encode(wrapped): NOW, unit.encode(shown): NOW + 1})
    assert [e.function for e in ScheduledSet(backend=redis_url)] == ["SendMail",
                                                                     "Mailer#deliver"]


def test_an_entry_that_is_not_json_is_listed_and_can_be_deleted(
    redis_url: str, r: redis.Redis
) -> None:
    r.zadd("dead", {b"\xff not json": NOW})
    [entry] = list(DeadSet(backend=redis_url))
    assert not entry.valid
    assert entry.jid == "" and entry.args == []
    assert entry.text == "\\xff not json"
    assert entry.to_dict()["raw"] == "\\xff not json"
    assert not entry.retry()  # nothing to enqueue
    assert r.zcard("dead") == 1
    assert entry.delete()
    assert r.zcard("dead") == 0


# -- find -----------------------------------------------------------------------------------------


def test_find_by_jid_in_each_set(redis_url: str, r: redis.Redis) -> None:
    scheduled = fill(r, "schedule", 3)
    decoy = member(99)
    target = member(7)
    decoy["args"] = ["mentions", target["jid"]]  # the jid appears inside another entry
    r.zadd("retry", {unit.encode(decoy): NOW, unit.encode(target): NOW + 5})
    found = RetrySet(backend=redis_url).find(target["jid"])
    assert found is not None and found.args == ["api", 7] and found.at == pytest.approx(NOW + 5)
    again = ScheduledSet(backend=redis_url).find(scheduled[1]["jid"])
    assert again is not None and again.jid == scheduled[1]["jid"]
    assert RetrySet(backend=redis_url).find(scheduled[1]["jid"]) is None
    assert DeadSet(backend=redis_url).find("0" * 24) is None
    assert RetrySet(backend=redis_url).find("*") is None  # a glob is matched literally
    fetched = RetrySet(backend=redis_url).fetch(NOW + 5, target["jid"])
    assert fetched is not None and fetched.jid == target["jid"]
    assert RetrySet(backend=redis_url).fetch(NOW + 6, target["jid"]) is None


def test_api_find_looks_in_queues_and_every_set(redis_url: str, r: redis.Redis) -> None:
    queued = member(1, "inbox")
    r.lpush("queue:inbox", unit.encode(queued))
    r.sadd("queues", "inbox")
    places = {}
    for key in ("schedule", "retry", "dead"):
        made = member(2)
        r.zadd(key, {unit.encode(made): NOW})
        places[key] = made["jid"]
    found = api.find(queued["jid"], backend=redis_url)
    assert found is not None and found.where == "inbox" and found.score is None
    for key, jid in places.items():
        entry = api.find(jid, backend=redis_url)
        assert entry is not None and entry.where == key and entry.jid == jid
    assert api.find("f" * 24, backend=redis_url) is None


# -- moves -----------------------------------------------------------------------------------------


def test_retry_now_lowers_the_count_and_refreshes_enqueued_at(
    redis_url: str, r: redis.Redis
) -> None:
    failed = failed_member(1, count=3, queue="mail")
    raw = unit.encode(failed)
    r.zadd("retry", {raw: NOW + 3600})
    entry = RetrySet(backend=redis_url).find(failed["jid"])
    assert entry is not None
    before = unit.now()
    assert entry.retry()
    assert r.zcard("retry") == 0
    [moved] = in_queue(r, "mail")
    assert moved["retry_count"] == 2  # the next failure raises it back to 3, as in Sidekiq
    assert before <= moved["enqueued_at"] <= unit.now()
    assert {k: v for k, v in moved.items() if k not in ("retry_count", "enqueued_at")} == \
        {k: v for k, v in failed.items() if k not in ("retry_count", "enqueued_at")}
    assert r.sismember("queues", "mail")
    assert r.llen(keys.wake("mail")) >= 1
    assert not entry.retry()  # already moved: nothing written twice
    assert r.llen("queue:mail") == 1


def test_retry_now_from_the_dead_set_and_the_head_of_the_queue(
    redis_url: str, r: redis.Redis
) -> None:
    r.lpush("queue:default", unit.encode(member(0)))
    dead = failed_member(5, count=25)
    r.zadd("dead", {unit.encode(dead): NOW})
    assert DeadSet(backend=redis_url).retry(dead["jid"])
    newest = in_queue(r, "default")[0]  # LPUSH: the head, like any new push
    assert newest["jid"] == dead["jid"] and newest["retry_count"] == 24
    assert not DeadSet(backend=redis_url).retry(dead["jid"])


def test_add_to_queue_runs_a_scheduled_unit_now(redis_url: str, r: redis.Redis) -> None:
    [scheduled] = fill(r, "schedule", 1, base=NOW + 3600)
    entry = ScheduledSet(backend=redis_url).find(scheduled["jid"])
    assert entry is not None
    before = unit.now()
    assert entry.add_to_queue()
    [moved] = in_queue(r, "default")
    assert "enqueued_at" not in scheduled
    assert before <= moved["enqueued_at"] <= unit.now()
    assert {k: v for k, v in moved.items() if k != "enqueued_at"} == scheduled
    assert r.zcard("schedule") == 0


def test_delete(redis_url: str, r: redis.Redis) -> None:
    made = fill(r, "retry", 3)
    retries = RetrySet(backend=redis_url)
    assert retries.delete(made[1]["jid"])
    assert not retries.delete(made[1]["jid"])
    assert [e.jid for e in retries] == [made[0]["jid"], made[2]["jid"]]
    entry = retries.page(1)[0]
    assert entry.delete() and not entry.delete()
    assert r.zcard("retry") == 1


def test_kill_moves_an_entry_to_dead_as_it_is(redis_url: str, r: redis.Redis) -> None:
    failed = failed_member(3)
    raw = unit.encode(failed)
    r.zadd("retry", {raw: NOW + 50})
    [scheduled] = fill(r, "schedule", 1, base=NOW + 60)
    before = unit.now()
    assert RetrySet(backend=redis_url).kill(failed["jid"])
    assert ScheduledSet(backend=redis_url).kill(scheduled["jid"])
    assert r.zcard("retry") == 0 and r.zcard("schedule") == 0
    score = r.zscore("dead", raw)
    assert score is not None and before <= score <= unit.now() + 0.01  # time of death
    assert DeadSet(backend=redis_url).find(scheduled["jid"]) is not None
    assert not DeadSet(backend=redis_url).kill(failed["jid"])  # already dead
    assert not RetrySet(backend=redis_url).kill(failed["jid"])
    assert r.zcard("dead") == 2


def test_retry_all_moves_more_than_a_page(redis_url: str, r: redis.Redis) -> None:
    made = [failed_member(n, count=1, queue="q1" if n % 2 else "q2") for n in range(130)]
    r.zadd("retry", {unit.encode(m): NOW + n for n, m in enumerate(made)})
    assert RetrySet(backend=redis_url).retry_all() == 130
    assert r.zcard("retry") == 0
    moved = in_queue(r, "q1") + in_queue(r, "q2")
    assert sorted(m["jid"] for m in moved) == sorted(m["jid"] for m in made)
    assert {m["retry_count"] for m in moved} == {0}
    assert r.llen("queue:q1") == r.llen("queue:q2") == 65


def test_retry_all_steps_over_entries_it_cannot_enqueue(
    redis_url: str, r: redis.Redis
) -> None:
    r.zadd("dead", {f"junk {n}".encode(): NOW - 1000 + n for n in range(60)})
    made = fill(r, "dead", 10)
    assert DeadSet(backend=redis_url).retry_all() == 10
    assert len(in_queue(r, "default")) == 10
    assert r.zcard("dead") == 60
    assert {e.valid for e in DeadSet(backend=redis_url)} == {False}
    assert sorted(m["jid"] for m in in_queue(r, "default")) == sorted(m["jid"] for m in made)


def test_kill_all_and_clear(redis_url: str, r: redis.Redis) -> None:
    fill(r, "retry", 70)
    assert RetrySet(backend=redis_url).kill_all() == 70
    assert r.zcard("retry") == 0 and r.zcard("dead") == 70
    assert DeadSet(backend=redis_url).clear() == 70
    assert not r.exists("dead")
    assert DeadSet(backend=redis_url).clear() == 0


# -- queues ------------------------------------------------------------------------------------


def push(r: redis.Redis, queue: str, count: int, enqueued_at: float | None = None
         ) -> list[dict[str, Any]]:
    made = []
    for n in range(count):
        one = member(n, queue)
        if enqueued_at is not None:
            one["enqueued_at"] = enqueued_at
        r.lpush(f"queue:{queue}", unit.encode(one))
        made.append(one)
    r.sadd("queues", queue)
    return made


def test_queue_size_latency_and_order(redis_url: str, r: redis.Redis) -> None:
    made = push(r, "work", 120, enqueued_at=unit.now() - 30)
    queue = Queue("work", backend=redis_url)
    assert queue.size == len(queue) == 120
    assert 30 <= queue.latency() < 40
    newest_first = [m["jid"] for m in reversed(made)]
    assert [e.jid for e in queue] == newest_first  # iterates more than two pages
    assert [e.jid for e in queue.page(2, 50)] == newest_first[50:100]
    assert queue.page(4, 50) == []
    assert Queue("empty", backend=redis_url).latency() == 0.0
    assert Queue("empty", backend=redis_url).size == 0
    assert [q.name for q in Queue.all(backend=redis_url)] == ["work"]


def test_queue_latency_reads_sidekiq_8_milliseconds(redis_url: str, r: redis.Redis) -> None:
    push(r, "ms", 1, enqueued_at=int((unit.now() - 5) * 1000))
    assert 5 <= Queue("ms", backend=redis_url).latency() < 15


def test_queue_find_delete_and_clear(redis_url: str, r: redis.Redis) -> None:
    made = push(r, "work", 5)
    queue = Queue("work", backend=redis_url)
    found = queue.find(made[2]["jid"])
    assert found is not None and found.args == ["api", 2] and found.where == "work"
    assert queue.find("0" * 24) is None
    assert queue.delete(made[2]["jid"])
    assert not queue.delete(made[2]["jid"])
    assert queue.size == 4
    assert made[2]["jid"] not in [e.jid for e in queue]
    assert queue.clear() == 4
    assert not r.exists("queue:work")
    assert not r.sismember("queues", "work")
