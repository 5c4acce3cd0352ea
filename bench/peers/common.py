"""What every system's bench app shares: the Redis the units write to, and their work.

Each app_<system>.py imports this in the system's own virtual environment (bench/.peers/).
The unit is the same everywhere: one INCR of `bench:count` (the drain's finish line); a unit
sent with a time also RPUSHes its latency, for the latency run only.
"""

from __future__ import annotations

import os
import time

import redis

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:1/0")  # never the default port
COUNT = "bench:count"
LATENCY = "bench:latency"
R = redis.Redis.from_url(URL)


def work(sent_at: float) -> None:
    """The no-op unit's body: one INCR (and, when timed, one RPUSH of its latency)."""
    if sent_at:
        R.rpush(LATENCY, repr(time.time() - sent_at))
    R.incr(COUNT)


def paced(send: object, rate: float, count: int) -> None:
    """Call send(time.time()) `count` times, `rate` per second, on a fixed schedule, after
    one untimed send(0): the client's connection (and whatever a first call sets up) is not
    charged to the first timed unit."""
    assert callable(send)
    send(0)
    start = time.perf_counter()
    for index in range(count):
        delay = start + index / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        send(time.time())
