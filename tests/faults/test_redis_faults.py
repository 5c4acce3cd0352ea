"""Redis itself at fault: restarted mid-run (a private, append-only Redis), or stalled
(`DEBUG SLEEP`, `CLIENT PAUSE`). Servers ride it out: none exits, no unit is lost or run
twice, and no server takes the stall for the death of the others."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
import redis

import difo
from difo.backends.redis import keys
from difo.client import Client
from difo.errors import BackendUnavailable
from tests import fault_functions
from tests.conftest import RedisServer, ServerProcess, wait_for
from tests.faults.support import (
    FAST,
    FAULTS,
    Report,
    Start,
    completed,
    in_flight_records,
    registered,
    runs,
    sized,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A private Redis that loses no acknowledged write across a clean restart."""
    server = RedisServer(tmp_path, "--appendonly", "yes", "--appendfsync", "always")
    yield server
    server.stop()


def claiming_again(r: redis.Redis, timeout: float) -> float:
    """Seconds until the servers claim again (the default queue shrinks): units already
    running report on their own, so completions alone would not show the fetchers back."""
    started = time.monotonic()
    waiting = int(r.llen(keys.queue("default")))
    if waiting:
        wait_for(lambda: r.llen(keys.queue("default")) < waiting, timeout=timeout,
                 interval=0.01)
    return time.monotonic() - started


def test_a_redis_restart_loses_no_unit_and_stops_no_server(
    durable_redis: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tag, total = "restart", sized(2_000, 20_000)
    url = durable_redis.url
    monkeypatch.setenv("REDIS_URL", url)  # as the `client` fixture does, for this Redis
    monkeypatch.setenv("DIFO_TEST_REDIS", url)
    client = difo.configure(url)
    r = redis.Redis.from_url(url)
    rng = random.Random()
    half = total // 2
    report = Report("redis-restart", enqueued=total)
    servers = [ServerProcess(url, "-w", "4", *FAULTS, env=FAST, log=tmp_path / f"s{i}.log")
               for i in range(2)]
    try:
        registered(r, 2)
        difo.perform_bulk(fault_functions.work,
                          ([tag, i, rng.randint(0, 10)] for i in range(half)))
        wait_for(lambda: completed(r, tag) >= half // 4, timeout=60)
        r.shutdown()  # a clean SHUTDOWN: the AOF has every acknowledged write
        assert durable_redis.process is not None
        durable_redis.process.wait(10)
        durable_redis.process = None
        down_at = time.monotonic()
        with pytest.raises(BackendUnavailable, match="unreachable") as caught:
            difo.perform(fault_functions.work, "outage", 0, 0)
        assert f"127.0.0.1:{durable_redis.port}" in str(caught.value)
        time.sleep(max(0.0, 2.0 - (time.monotonic() - down_at)))
        durable_redis.start()
        up_at = time.monotonic()
        done_before = completed(r, tag)
        claiming_again(r, timeout=30)
        report.recover_s = time.monotonic() - up_at
        # The client reconnects on its next call.
        difo.perform_bulk(fault_functions.work,
                          ([tag, i, rng.randint(0, 10)] for i in range(half, total)))
        wait_for(lambda: completed(r, tag) == total, timeout=60 + total / 50)
        wait_for(lambda: in_flight_records(r) == [], timeout=10)
        assert all(server.process.poll() is None for server in servers), "a server exited"
        for server in servers:
            assert server.stop() == 0
    finally:
        for server in servers:
            if server.process.poll() is None:
                server.kill()
        client.close()

    report.completed = completed(r, tag)
    report.duplicates = runs(r, tag) - report.completed
    report.extra.update(outage=f"{up_at - down_at:.1f}s", done_at_restart=done_before)
    report.show()
    assert report.lost == 0
    assert report.duplicates == 0
    assert report.recover_s < 10  # the fetchers' backoff is capped at 5 s
    # The unit refused during the outage was never written, not even in part.
    raws = cast(list[bytes], r.lrange(keys.queue("default"), 0, -1))
    assert not any(b'"outage"' in raw for raw in raws)
    assert completed(r, "outage") == 0
    assert r.zcard(keys.DEAD) == 0 and r.zcard(keys.RETRY) == 0
    for server in servers:
        assert "reachable again" in server.log() or "heartbeat:" in server.log()


def test_redis_stalls_declare_no_server_dead(
    client: Client, r: redis.Redis, start_server: Start
) -> None:
    """`DEBUG SLEEP 3` then `CLIENT PAUSE 3000`, each as long as DIFO_DEAD_AFTER, under load."""
    tag, total = "stall", sized(3_000, 20_000)
    rng = random.Random()
    report = Report("redis-stalls", enqueued=total)
    servers: list[ServerProcess] = [start_server("-w", "3", *FAULTS, env=FAST)
                                    for _ in range(3)]
    registered(r, 3)
    difo.perform_bulk(fault_functions.work, ([tag, i, rng.randint(0, 20)] for i in range(total)))
    stalls: list[float] = []
    for stall in ("DEBUG SLEEP", "CLIENT PAUSE"):
        wait_for(lambda: completed(r, tag) > 0, timeout=30)
        time.sleep(1.5)
        if completed(r, tag) >= total:
            break
        stalled_at = time.monotonic()
        if stall == "DEBUG SLEEP":
            r.execute_command("DEBUG", "SLEEP", 3)  # type: ignore[no-untyped-call]
        else:
            r.client_pause(3000)
            # Our own commands wait out the pause, like everyone else's.
            threading.Event().wait(3)
        stalls.append(time.monotonic() - stalled_at)
        report.recover_s = max(report.recover_s, claiming_again(r, timeout=20))
    wait_for(lambda: completed(r, tag) == total, timeout=60 + total / 50)
    wait_for(lambda: in_flight_records(r) == [], timeout=10)
    assert all(server.process.poll() is None for server in servers), "a server exited"
    for server in servers:
        assert server.stop() == 0

    report.completed = completed(r, tag)
    report.duplicates = runs(r, tag) - report.completed
    report.extra.update(stalls=len(stalls))
    report.show()
    assert len(stalls) == 2, "the units ran out before both stalls; make the run longer"
    assert report.lost == 0
    assert report.duplicates == 0
    assert not any("recovered" in server.log() for server in servers)
    assert report.recover_s < 5
    assert r.zcard(keys.DEAD) == 0 and r.zcard(keys.RETRY) == 0
