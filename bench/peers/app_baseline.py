"""The floors: bare redis-py loops, one round trip each, run by driver.py in a fresh process
like every system's enqueue (`driver.py baseline send N`, `driver.py baseline incr N`)."""

from __future__ import annotations

import common

# A payload of difo's size and shape (Sidekiq's format).
PAYLOAD = (b'{"retry":true,"queue":"bench","class":"app_difo:incr","args":[0],'
           b'"jid":"0123456789abcdef01234567","created_at":1700000000.123456,'
           b'"enqueued_at":1700000000.123456}')


def send(count: int) -> None:
    """LPUSH one payload at a time: what any enqueue costs at least."""
    for _ in range(count):
        common.R.execute_command("LPUSH", "baseline", PAYLOAD)


def incr(count: int) -> None:
    """INCR one at a time: what any drain of the INCR unit costs at least."""
    for _ in range(count):
        common.R.execute_command("INCR", "baseline:n")
