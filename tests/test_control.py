"""Control from outside, across processes: `difo quiet|stop` through Sidekiq's signal list,
and `difo pause|unpause`: a paused queue keeps its units, and an idle server does not spin
on it."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
import time
from typing import Any

import redis

import difo
from difo.api import ProcessSet, Queue, Stats
from difo.backends import open_backend
from difo.backends.redis import scripts
from tests import functions, stats_functions
from tests.conftest import ROOT, wait_for

EXTRA = ("--import", "tests.stats_functions")
FAST = {"DIFO_HEARTBEAT": "1", "DIFO_DEAD_AFTER": "3"}


def cli(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`difo ARGS` in its own process, as an operator would type it."""
    return subprocess.run([sys.executable, "-m", "difo.cli", *args, "--url", redis_url],
                          cwd=ROOT, capture_output=True, text=True, timeout=30)


def identity_of(r: redis.Redis, pid: int) -> str:
    found: list[str] = []

    def registered() -> bool:
        found[:] = [m.decode() for m in r.smembers("processes")
                    if m.decode().split(":")[1] == str(pid)]
        return bool(found)

    wait_for(registered)
    return found[0]


# -- quiet and stop -----------------------------------------------------------------------------


def test_quiet_then_stop_one_server_from_outside(client: Any, redis_url: str, r: redis.Redis,
                                                 start_server: Any) -> None:
    server = start_server(*EXTRA, env=FAST)
    other = start_server(*EXTRA, "-q", "elsewhere", env=FAST)
    identity = identity_of(r, server.process.pid)
    other_id = identity_of(r, other.process.pid)
    difo.perform(stats_functions.quick, "before")
    wait_for(lambda: r.llen("results:before") == 1)

    done = cli(redis_url, "quiet", identity)
    assert done.returncode == 0, done.stderr
    assert identity in done.stdout
    wait_for(lambda: r.hget(identity, "quiet") == b"true", timeout=5)
    assert r.hget(other_id, "quiet") == b"false"  # only the one named
    assert ProcessSet(backend=redis_url).get(identity).is_quiet  # type: ignore[union-attr]
    difo.perform(stats_functions.quick, "after")
    time.sleep(2)
    assert r.llen("results:after") == 0  # a quiet server takes no new unit
    assert Queue("default", backend=redis_url).size == 1

    done = cli(redis_url, "stop", identity)
    assert done.returncode == 0, done.stderr
    assert server.process.wait(15) == 0
    assert Queue("default", backend=redis_url).size == 1  # left for another server
    assert other.process.poll() is None
    assert other.stop() == 0


def test_quiet_all_and_stop_all(redis_url: str, r: redis.Redis, start_server: Any) -> None:
    servers = [start_server(*EXTRA, env=FAST) for _ in range(2)]
    identities = [identity_of(r, s.process.pid) for s in servers]
    done = cli(redis_url, "quiet", "--all")
    assert done.returncode == 0, done.stderr
    wait_for(lambda: all(r.hget(i, "quiet") == b"true" for i in identities), timeout=5)
    done = cli(redis_url, "stop", "--all")
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.split()) == sorted(["stop:", "stop:", *identities])
    assert [s.process.wait(15) for s in servers] == [0, 0]
    assert r.scard("processes") == 0


def test_signals_travel_as_sidekiq_sends_them(redis_url: str, r: redis.Redis) -> None:
    # Sidekiq's Process#quiet!/#stop!: LPUSH IDENTITY-signals + EXPIRE 60; a server RPOPs.
    identity = "host:42:0123456789ab"
    r.sadd("processes", identity)
    r.hset(identity, mapping={"info": f'{{"identity": "{identity}"}}', "busy": 0, "beat": 1.0})
    process = ProcessSet(backend=redis_url).get(identity)
    assert process is not None
    process.quiet()
    process.stop()
    assert r.lrange(f"{identity}-signals", 0, -1) == [b"TERM", b"TSTP"]
    assert r.rpop(f"{identity}-signals") == b"TSTP"  # the order a server reads them in
    assert 0 < r.ttl(f"{identity}-signals") <= 60


def test_quiet_names_an_unknown_server(redis_url: str) -> None:
    done = cli(redis_url, "quiet", "nohost:1:000000000000")
    assert done.returncode == 1
    assert "nohost:1:000000000000" in done.stderr
    usage = cli(redis_url, "stop")
    assert usage.returncode == 2 and "--all" in usage.stderr


# -- pause and unpause --------------------------------------------------------------------------


def test_pause_and_unpause_across_processes(client: Any, redis_url: str, r: redis.Redis,
                                            start_server: Any) -> None:
    server = start_server(*EXTRA, "-q", "work other", env=FAST)
    identity_of(r, server.process.pid)
    done = cli(redis_url, "pause", "work")
    assert done.returncode == 0, done.stderr
    assert Queue("work", backend=redis_url).paused
    assert Stats(backend=redis_url).paused_queues == {"work"}
    for n in range(3):
        difo.perform_on("work", functions.record, "paused", n)
    difo.perform_on("other", functions.record, "running", 1)
    wait_for(lambda: r.llen("results:running") == 1)  # other queues keep running
    time.sleep(1.5)
    assert r.llen("results:paused") == 0
    assert Queue("work", backend=redis_url).size == 3

    done = cli(redis_url, "unpause", "work")
    assert done.returncode == 0, done.stderr
    unpaused_at = time.monotonic()
    wait_for(lambda: r.llen("results:paused") == 3, timeout=5)
    assert time.monotonic() - unpaused_at < 1.5  # unpausing wakes the idle server
    assert not Queue("work", backend=redis_url).paused
    assert server.stop() == 0


def test_a_busy_server_stops_taking_from_a_paused_queue(client: Any, redis_url: str,
                                                        r: redis.Redis,
                                                        start_server: Any) -> None:
    server = start_server(*EXTRA, "-w", "2", env=FAST)
    identity_of(r, server.process.pid)
    for _ in range(40):
        difo.perform(stats_functions.slow, "stream", 50)
    wait_for(lambda: r.llen("results:stream") >= 3)
    Queue("default", backend=redis_url).pause()
    time.sleep(1.0)
    ran = r.llen("results:stream")
    time.sleep(1.0)
    # What was claimed before the pause (at most workers + prefetch) may finish; no more.
    assert r.llen("results:stream") == ran
    assert ran < 40 and Queue("default", backend=redis_url).size == 40 - ran
    Queue("default", backend=redis_url).unpause()
    wait_for(lambda: r.llen("results:stream") == 40, timeout=10)
    assert server.stop() == 0


def test_an_idle_server_does_not_spin_on_a_paused_queue(redis_url: str, r: redis.Redis,
                                                        start_server: Any) -> None:
    backend = open_backend(redis_url)
    backend.pause("default")
    for n in range(5):
        difo_unit = f'{{"class":"tests.functions:record","args":["idle",{n}],' \
                    f'"jid":"{n:024x}","queue":"default","retry":true,' \
                    f'"created_at":1.0,"enqueued_at":1.0}}'
        backend.push("default", [difo_unit.encode()])
    server = start_server(*EXTRA, env=FAST)
    identity_of(r, server.process.pid)
    claim_sha = hashlib.sha1(scripts.source("claim").encode()).hexdigest()
    calls = monitor(r, seconds=3.0)
    claims = sum(1 for command in calls if command.startswith(f"EVALSHA {claim_sha}"))
    waits = sum(1 for command in calls if command.startswith("BLPOP"))
    # About one claim and one blocking wait per second (IDLE_WAIT); spinning would be 1000s.
    assert claims <= 8, calls
    assert waits <= 8, calls
    assert r.llen("queue:default") == 5
    assert r.llen("results:idle") == 0
    assert server.stop() == 0


def monitor(r: redis.Redis, seconds: float) -> list[str]:
    """The commands clients sent over `seconds` (MONITOR; not those scripts run)."""
    seen: list[str] = []
    stop = time.monotonic() + seconds

    def watch() -> None:
        with r.monitor() as commands:
            while time.monotonic() < stop:
                found = commands.next_command()
                command = found["command"]
                if time.monotonic() < stop and found.get("client_type") != "lua":
                    seen.append(command.split(" ", 1)[0].upper() + " " +
                                command.split(" ", 1)[-1])

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    thread.join(seconds + 3)
    return seen
