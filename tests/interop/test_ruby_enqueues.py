"""Ruby enqueues, difo runs: units pushed by Sidekiq 6.4.1's own client (Sidekiq::Client.push
and push_bulk) run on a difo server with their arguments, at their time, and fail the way
their payload's `retry` option says, keeping every field Ruby wrote.
"""

from __future__ import annotations

import time
from typing import Any

import redis

from tests.conftest import wait_for
from tests.interop.ruby import Sidekiq, by_jid, runs, wait_runs

EXTRA = ("--import", "tests.interop.jobs")
RECORD = "tests.interop.jobs:record"
FAIL = "tests.interop.jobs:fail"
FAST = {"DIFO_HEARTBEAT": "1", "DIFO_DEAD_AFTER": "3"}


def test_push_and_push_bulk_run_with_their_arguments(
    sidekiq: Sidekiq, start_server: Any, r: redis.Redis
) -> None:
    # Every JSON shape, including the empty list and object Lua's cjson would confuse.
    args = ["one", 1, -2.5, 1795838553.0, True, None, [], {}, {"nested": [1, {"deep": []}]},
            "é ✓ 😀 \"quoted\" \\ /", 2**53]
    pushed = sidekiq.push(
        {"class": RECORD, "queue": "rb-in", "args": args},
        {"class": RECORD, "queue": "rb-in", "args": [["bulk", n] for n in range(5)],
         "bulk": True},
    )
    [[single_jid], bulk_jids] = pushed.jids
    start_server(*EXTRA, "-q", "rb-in")

    [single] = wait_runs(r, "one", 1)
    assert single["args"] == args
    assert single["jid"] == single_jid
    assert single["queue"] == "rb-in"
    assert single["retry_count"] is None
    assert single["enqueued_at"] == pushed.payload(single_jid)["enqueued_at"]

    bulk = by_jid(wait_runs(r, "bulk", 5))
    assert sorted(bulk) == sorted(bulk_jids)
    for position, jid in enumerate(bulk_jids):
        assert bulk[jid]["args"] == ["bulk", position]
    wait_for(lambda: sidekiq.view()["stats"]["enqueued"] == 0)
    assert runs(r, "one") == [single]


def test_scheduled_units_run_at_their_time(
    sidekiq: Sidekiq, start_server: Any, r: redis.Redis
) -> None:
    start_server(*EXTRA, "-q", "rb-at")
    now = time.time()
    single_at, bulk_at = now + 2.0, [now + 1.5, now + 3.0]
    pushed = sidekiq.push(
        {"class": RECORD, "queue": "rb-at", "args": ["single"], "at": single_at},
        {"class": RECORD, "queue": "rb-at", "args": [["bulk", 0], ["bulk", 1]], "bulk": True,
         "at": bulk_at},
        # Sidekiq::Client.push schedules a past time too; it is due at once.
        {"class": RECORD, "queue": "rb-at", "args": ["overdue"], "at": now - 30},
    )
    for jid in pushed.stored:
        assert "enqueued_at" not in pushed.payload(jid)  # a schedule member, as Ruby wrote it

    [overdue] = wait_runs(r, "overdue", 1)
    assert overdue["ran_at"] < now + 3
    [single] = wait_runs(r, "single", 1)
    bulk = by_jid(wait_runs(r, "bulk", 2))
    due = {pushed.jids[0][0]: single_at, pushed.jids[1][0]: bulk_at[0],
           pushed.jids[1][1]: bulk_at[1]}
    for run in (single, *bulk.values()):
        # Never early (one clock on this machine); late by at most a few scheduler polls.
        assert due[run["jid"]] - 0.05 <= run["ran_at"] <= due[run["jid"]] + 4, run
        # Promotion stamps enqueued_at, as Sidekiq's scheduler does on every push.
        assert run["enqueued_at"] >= due[run["jid"]] - 0.05
    assert sidekiq.view()["stats"]["scheduled_size"] == 0


def test_failures_follow_the_payload_retry_option(
    sidekiq: Sidekiq, start_server: Any, r: redis.Redis
) -> None:
    extra = {"tags": ["ruby", "interop"], "custom_key": {"kept": [1, {"deep": []}], "e": {}},
             "cattr": {"user_id": 7}, "locale": "fr", "backtrace": 3}
    pushed = sidekiq.push(
        {"class": FAIL, "queue": "rb-fail", "args": ["no-retry"], "retry": False},
        {"class": FAIL, "queue": "rb-fail", "args": ["retry-0"], "retry": 0, **extra},
        {"class": FAIL, "queue": "rb-fail", "args": ["retry-2"], "retry": 2, **extra},
        # Sidekiq's default (retry: true, 25 retries), moved to another queue for its retries.
        {"class": FAIL, "queue": "rb-fail", "args": ["default"], "retry_queue": "rb-later"},
        # A Ruby class on a difo queue: refused, never retried, kept in the dead set.
        {"class": "HardJob", "queue": "rb-fail", "args": [1]},
    )
    [[no_retry], [retry_0], [retry_2], [default], [ruby_class]] = pushed.jids
    server = start_server(*EXTRA, "-q", "rb-fail", env=FAST)
    for tag in ("no-retry", "retry-0", "retry-2", "default"):
        wait_runs(r, tag, 1)
    wait_for(lambda: r.zcard("retry") == 2 and r.zcard("dead") == 2)

    view = sidekiq.view()
    retries = by_jid(view["retries"]["jobs"])
    dead = by_jid(view["dead"]["jobs"])
    # retry: false -> counted as failed, kept nowhere.
    assert no_retry not in retries and no_retry not in dead
    assert view["stats"]["enqueued"] == 0
    # retry: 0 -> dead at the first failure.
    assert_failed(dead[retry_0], pushed.payload(retry_0), count=0, message="retry-0")
    # retry: 2 -> the retry set, Sidekiq's first delay (15 s plus 0-9 s of jitter).
    entry = retries[retry_2]
    assert_failed(entry, pushed.payload(retry_2), count=0, message="retry-2")
    assert 15 <= entry["score"] - entry["item"]["failed_at"] <= 24.01
    refused = dead[ruby_class]["item"]
    # Refused at once (no retry), with the payload's own retry option left as Ruby wrote it.
    assert refused["class"] == "HardJob" and "retry_count" in refused
    assert refused["retry_count"] == 0 and "not a difo function name" in refused["error_message"]
    # The default retry goes to the retry queue.
    assert retries[default]["item"]["queue"] == "rb-later"
    assert retries[default]["item"]["retry"] is True

    # Time passes: Sidekiq's own API moves the retry to now (it re-encodes the payload and
    # must find difo's bytes), and difo runs it again, twice, then gives up: 3 runs in all.
    for count in (1, 2):
        assert sidekiq.act("retry", retry_2, "reschedule", at=time.time())
        wait_runs(r, "retry-2", count + 1)
        if count == 1:
            wait_for(lambda: retry_count(sidekiq.view()["retries"]["jobs"], retry_2) == 1)
            retries = sidekiq.view()["retries"]["jobs"]
            assert [job["jid"] for job in retries].count(retry_2) == 1  # moved, not copied
            entry = by_jid(retries)[retry_2]
            assert_failed(entry, pushed.payload(retry_2), count=1, message="retry-2")
            assert 16 <= entry["score"] - entry["item"]["retried_at"] <= 16 + 18.01
    wait_for(lambda: r.zcard("dead") == 3)
    assert [job["jid"] for job in sidekiq.view()["retries"]["jobs"]] == [default]
    final = by_jid(sidekiq.view()["dead"]["jobs"])[retry_2]
    assert_failed(final, pushed.payload(retry_2), count=2, message="retry-2")
    assert final["item"]["failed_at"] == entry["item"]["failed_at"]  # set once, kept

    assert server.stop() == 0
    stats = sidekiq.view()["stats"]
    assert (stats["processed"], stats["failed"]) == (7, 7)
    assert len(runs(r, "retry-2")) == 3


def retry_count(jobs: list[dict[str, Any]], jid: str) -> int | None:
    found = by_jid(jobs).get(jid)
    return found["item"].get("retry_count") if found else None


def assert_failed(entry: dict[str, Any], pushed: dict[str, Any], *, count: int,
                  message: str) -> None:
    """A failed unit as Sidekiq's API reads it: Sidekiq's error fields, and every field the
    Ruby client wrote still there, unchanged (enqueued_at is restamped by each push)."""
    item = entry["item"]
    for key, value in pushed.items():
        if key != "enqueued_at":
            assert item[key] == value, key
    assert item["retry_count"] == count
    assert item["error_class"] == "ValueError"
    assert item["error_message"] == f"failing on purpose: {message}"
    assert isinstance(item["failed_at"], float)
    assert abs(item["failed_at"] - time.time()) < 60
    assert ("retried_at" in item) == (count > 0)
    assert entry["error?"] is True
    assert entry["tags"] == pushed.get("tags", [])
    if pushed.get("backtrace"):
        lines = entry["backtrace"]
        assert 1 <= len(lines) <= 3
        assert "tests/interop/jobs.py" in lines[0] and "in `" in lines[0]
