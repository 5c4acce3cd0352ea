"""Periodic units: cron schedules, fired once per tick however many servers run, never
replayed for ticks that passed while no server ran. Servers are driven by an injected clock:
`Firing.step(now)` is one scheduler pass."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
import redis

import difo
from difo.backends import open_backend
from difo.backends.redis import keys
from difo.periodic import Firing, Periodic, schedules, unregister
from tests import functions
from tests.conftest import wait_for

EVERY_5 = 300.0
T0 = 1_800_000_000.0 - 1_800_000_000.0 % EVERY_5  # a */5 tick


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0,
        second: int = 0) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc).timestamp()


@pytest.fixture
def registered() -> Iterator[list[Periodic]]:
    """Schedules registered by a test, unregistered after it (the registry is global)."""
    made: list[Periodic] = []
    yield made
    for schedule in made:
        unregister(schedule.name)


def queued(r: redis.Redis, queue: str) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in r.lrange(f"queue:{queue}", 0, -1)]


def fired_ticks(r: redis.Redis, queue: str, every: float = EVERY_5) -> list[int]:
    """The tick number (from T0) of each unit in `queue`, read from its creation time."""
    return sorted(int((unit["created_at"] - T0) // every) for unit in queued(r, queue))


# -- registration -------------------------------------------------------------------------------


def test_periodic_registers_a_schedule(registered: list[Periodic]) -> None:
    schedule = difo.periodic("*/5 * * * *", functions.record, "tick", 1, queue="cron")
    registered.append(schedule)
    assert schedule.cron == "*/5 * * * *"
    assert schedule.function == "tests.functions:record"
    assert schedule.args == ["tick", 1]
    assert schedule.queue == "cron"
    assert schedule.tz == "UTC"
    assert schedule in schedules()
    payload = json.loads(schedule.payload(T0))
    assert payload["class"] == "tests.functions:record"
    assert payload["args"] == ["tick", 1]
    assert payload["queue"] == "cron"
    assert payload["created_at"] == payload["enqueued_at"] == T0
    assert len(payload["jid"]) == 24
    assert payload["difo_periodic"] == schedule.name
    unregister(schedule.name)
    assert schedule not in schedules()


def test_job_defaults_and_the_decorator_form(registered: list[Periodic]) -> None:
    schedule = difo.periodic("@hourly", functions.send_welcome, 5)  # queue="mail", retry=3
    registered.append(schedule)
    assert schedule.queue == "mail"
    assert json.loads(schedule.payload(T0))["retry"] == 3

    decorate = difo.periodic("0 3 * * *", name="nightly-noop", tz="Europe/Paris")
    assert decorate(functions.noop) is functions.noop  # the function is returned as it was
    [decorated] = [s for s in schedules() if s.name == "nightly-noop"]
    registered.append(decorated)
    assert decorated.function == "tests.functions:noop"
    assert decorated.tz == "Europe/Paris"
    assert decorated.args == []


@pytest.mark.parametrize("cron", ["bad", "61 * * * *", "* * *", "", "@reboot", "@often"])
def test_an_invalid_cron_is_a_config_error(cron: str) -> None:
    with pytest.raises(difo.ConfigError, match="not a cron schedule"):
        difo.periodic(cron, functions.noop)


@pytest.mark.parametrize("tz", ["Mars/Olympus", "", "../etc/passwd", "utc", None])
def test_an_invalid_time_zone_is_a_config_error(tz: Any) -> None:
    with pytest.raises(difo.ConfigError, match="not a time zone"):
        difo.periodic("@daily", functions.noop, tz=tz)


def test_a_tick_is_never_reached_early() -> None:
    schedule = Periodic("t", "* * * * * *", "tests.functions:noop", [], "default")  # each second
    tick = utc(2030, 1, 1, 12, 0, 30)
    assert schedule.last_tick(tick - 0.0005) == tick - 1
    assert schedule.last_tick(tick) == tick
    assert schedule.last_tick(tick + 0.999) == tick


def test_arguments_are_checked_when_registering() -> None:
    with pytest.raises(difo.ArgumentError, match="tuple"):
        difo.periodic("@daily", functions.record, ("not", "json"))


@pytest.mark.parametrize(("cron", "now", "last", "following"), [
    ("*/5 * * * *", utc(2030, 1, 1, 12, 7, 30), utc(2030, 1, 1, 12, 5), utc(2030, 1, 1, 12, 10)),
    ("*/5 * * * *", utc(2030, 1, 1, 12, 5), utc(2030, 1, 1, 12, 5), utc(2030, 1, 1, 12, 10)),
    ("@hourly", utc(2030, 1, 1, 12, 59, 59), utc(2030, 1, 1, 12), utc(2030, 1, 1, 13)),
    ("@daily", utc(2030, 1, 1, 12), utc(2030, 1, 1), utc(2030, 1, 2)),
    ("@midnight", utc(2030, 1, 1, 12), utc(2030, 1, 1), utc(2030, 1, 2)),
    ("@weekly", utc(2030, 1, 3, 12), utc(2029, 12, 30), utc(2030, 1, 6)),  # Sundays
    ("@monthly", utc(2030, 2, 15), utc(2030, 2, 1), utc(2030, 3, 1)),
    ("@yearly", utc(2030, 6, 1), utc(2030, 1, 1), utc(2031, 1, 1)),
    ("@annually", utc(2030, 6, 1), utc(2030, 1, 1), utc(2031, 1, 1)),
])
def test_ticks_of_crons_and_aliases(cron: str, now: float, last: float, following: float) -> None:
    schedule = Periodic("t", cron, "tests.functions:noop", [], "default")
    assert schedule.last_tick(now) == last
    assert schedule.next_tick(now) == following


def test_ticks_follow_the_time_zone_through_daylight_saving() -> None:
    paris = Periodic("t", "0 9 * * *", "tests.functions:noop", [], "default", tz="Europe/Paris")
    assert paris.last_tick(utc(2030, 1, 15, 12)) == utc(2030, 1, 15, 8)  # UTC+1
    assert paris.last_tick(utc(2030, 7, 15, 12)) == utc(2030, 7, 15, 7)  # UTC+2
    assert paris.next_tick(utc(2030, 3, 30, 12)) == utc(2030, 3, 31, 7)  # the switch day


# -- firing: one unit per tick -----------------------------------------------------------------


def test_three_servers_fire_each_tick_exactly_once(
    client: Any, r: redis.Redis, registered: list[Periodic]
) -> None:
    schedule = difo.periodic("*/5 * * * *", functions.record, "tick", queue="cron-3")
    registered.append(schedule)
    # Three servers, each with its own connection, started at different times.
    starts = {"a": T0 + 10, "b": T0 + EVERY_5 + 100, "c": T0 + 3 * EVERY_5 + 200}
    servers = {name: Firing(open_backend(client.url), at) for name, at in starts.items()}
    fired = {name: 0 for name in servers}
    chooser = random.Random(7)
    ticks = 40
    for k in range(ticks + 1):
        tick = T0 + k * EVERY_5
        # Every running server polls several times per tick interval, in a random order,
        # some just before the tick, most after it.
        passes = [(tick + offset, name) for name in servers for offset in
                  (chooser.uniform(-2, 0), chooser.uniform(0, 1), chooser.uniform(0, 1),
                   chooser.uniform(1, EVERY_5 - 3))]
        chooser.shuffle(passes)
        for now, name in sorted(passes, key=lambda p: p[0] + chooser.uniform(-0.5, 0.5)):
            if now >= starts[name]:
                fired[name] += servers[name].step(now, [schedule])
    # Tick 0 came before any server started; ticks 1..40 fired once each.
    assert fired_ticks(r, "cron-3") == list(range(1, ticks + 1))
    assert sum(fired.values()) == ticks
    assert all(count > 0 for count in fired.values()), fired  # no server is special
    assert r.hget(keys.PERIODIC, schedule.name) == repr(T0 + ticks * EVERY_5).encode()
    assert open_backend(client.url).periodic_ticks() == {schedule.name: T0 + ticks * EVERY_5}
    for unit in queued(r, "cron-3"):
        assert unit["args"] == ["tick"] and unit["class"] == "tests.functions:record"
    assert r.sismember("queues", "cron-3")


def test_a_tick_missed_while_no_server_ran_is_not_replayed(
    client: Any, r: redis.Redis, registered: list[Periodic]
) -> None:
    schedule = difo.periodic("*/5 * * * *", functions.record, "missed", queue="cron-m")
    registered.append(schedule)
    first = Firing(open_backend(client.url), T0 + 1)
    for k in range(1, 4):
        first.step(T0 + k * EVERY_5 + 0.5, [schedule])
    assert fired_ticks(r, "cron-m") == [1, 2, 3]
    # The server stops during tick 3; none runs through ticks 4..7; one starts in tick 7.
    second = Firing(open_backend(client.url), T0 + 7 * EVERY_5 + 60)
    assert second.step(T0 + 7 * EVERY_5 + 61, [schedule]) == 0
    assert second.step(T0 + 7 * EVERY_5 + 250, [schedule]) == 0
    assert second.step(T0 + 8 * EVERY_5 + 0.2, [schedule]) == 1
    assert fired_ticks(r, "cron-m") == [1, 2, 3, 8]


def test_a_server_that_stalled_fires_only_the_latest_tick(
    client: Any, r: redis.Redis, registered: list[Periodic]
) -> None:
    schedule = difo.periodic("*/5 * * * *", functions.record, "stall", queue="cron-s")
    registered.append(schedule)
    firing = Firing(open_backend(client.url), T0 - 100)
    assert firing.step(T0 + 1, [schedule]) == 1
    # Its scheduler could not reach Redis for four ticks, then it comes back.
    assert firing.step(T0 + 5 * EVERY_5 + 30, [schedule]) == 1
    assert firing.step(T0 + 5 * EVERY_5 + 40, [schedule]) == 0
    assert fired_ticks(r, "cron-s") == [0, 5]


def test_a_restarted_server_does_not_fire_a_tick_again(
    client: Any, r: redis.Redis, registered: list[Periodic]
) -> None:
    schedule = difo.periodic("*/5 * * * *", functions.record, "restart", queue="cron-r")
    registered.append(schedule)
    assert Firing(open_backend(client.url), T0 - 5).step(T0 + 0.3, [schedule]) == 1
    # Restarted within the same tick, just after it (inside the start grace).
    again = Firing(open_backend(client.url), T0 + 0.8)
    assert again.step(T0 + 0.9, [schedule]) == 0
    assert again.step(T0 + EVERY_5 + 0.1, [schedule]) == 1
    assert fired_ticks(r, "cron-r") == [0, 1]


def test_firing_walks_every_registered_schedule(
    client: Any, r: redis.Redis, registered: list[Periodic]
) -> None:
    one = difo.periodic("*/5 * * * *", functions.record, "one", queue="cron-w")
    two = difo.periodic("@hourly", functions.record, "two", queue="cron-w")
    registered.extend([one, two])
    hour = T0 - T0 % 3600 + 3600
    firing = Firing(open_backend(client.url), hour - 1)
    assert firing.step(hour + 1) >= 2  # other tests' schedules are unregistered already
    args = sorted(unit["args"][0] for unit in queued(r, "cron-w"))
    assert args == ["one", "two"]


def test_two_real_servers_fire_one_unit_per_tick(
    client: Any, r: redis.Redis, start_server: Any
) -> None:
    # tests.retry_functions registers a schedule firing every second when this is set.
    env = {"DIFO_TEST_PERIODIC": "1"}
    extra = ("-q", "periodic-e2e", "--import", "tests.retry_functions")
    start_server(*extra, env=env)
    start_server(*extra, env=env)
    wait_for(lambda: r.llen("results:periodic") >= 4, timeout=15)
    time.sleep(1.2)
    runs = [json.loads(item) for item in r.lrange("results:periodic", 0, -1)]
    ticks = [int(run["enqueued_at"]) for run in runs]  # fired within its second
    assert len(ticks) == len(set(ticks)), ticks
    assert all(run["queue"] == "periodic-e2e" for run in runs)
    assert all(run["function"] == "tests.retry_functions:context" for run in runs)
    assert max(ticks) - min(ticks) + 1 - len(ticks) <= 1, ticks  # hardly a tick missed
