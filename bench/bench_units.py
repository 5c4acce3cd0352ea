"""The units bench/throughput.py enqueues: no-ops, so what is measured is difo's own cost.

The bench's server imports this module (`--import bench_units`, with bench/ on PYTHONPATH).
"""

from __future__ import annotations

import difo

QUEUE = "bench"


@difo.job(queue=QUEUE)
def noop(index: int) -> None:
    """Does nothing; `index` only makes each unit's arguments distinct."""
