"""Per-function run times, kept in memory by each worker and flushed with the heartbeat.

A worker owns a dict `function -> [count, failures, seconds, bucket counts...]` and is its
only writer, so recording a run takes no lock: a few list increments and one bisect. The
heartbeat sums every worker's dict and sends what grew since its last successful beat (the
totals only grow, so a sum read while a worker writes is corrected by the next beat). The
buckets are a histogram of run times, so the read side (difo.api.Metrics, Prometheus) can
estimate percentiles without keeping every run.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterable, Mapping

from difo.backends import FunctionTimes

# Upper bounds of the run-time buckets in milliseconds (the last bucket is +Inf): roughly
# x1.5 steps, finer below 10 ms, where most Python units end.
BOUNDS_MS: tuple[float, ...] = (
    0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 65, 100, 150, 225, 335, 500, 750,
    1100, 1700, 2500, 3800, 5750, 8500, 13000, 20000, 30000, 45000, 65000, 100000,
    150000, 225000, 335000,
)
BOUNDS: tuple[float, ...] = tuple(ms / 1000 for ms in BOUNDS_MS)  # seconds, for bisect
BUCKETS = len(BOUNDS) + 1
_FIRST_BUCKET = 3
# Distinct names one worker keeps before counting the rest as OTHER: a producer pushing
# endless made-up class names must not grow a server's memory (or Redis hashes) without end.
MAX_FUNCTIONS = 1000
OTHER = "(other)"


def record(functions: dict[str, list[float]], name: str, seconds: float, failed: bool) -> None:
    """Count one run of `name` that took `seconds` (the worker's hot path)."""
    entry = functions.get(name)
    if entry is None:
        if len(functions) >= MAX_FUNCTIONS:
            name = OTHER
        entry = functions.get(name)
        if entry is None:
            entry = functions[name] = [0.0] * (_FIRST_BUCKET + BUCKETS)
    entry[0] += 1
    if failed:
        entry[1] += 1
    entry[2] += seconds
    entry[_FIRST_BUCKET + bisect_left(BOUNDS, seconds)] += 1


def totals(per_worker: Iterable[Mapping[str, list[float]]]) -> dict[str, list[float]]:
    """The sum of every worker's dict (a copy: workers keep writing theirs)."""
    summed: dict[str, list[float]] = {}
    for functions in per_worker:
        # list() copies the items in one C call: no "changed size during iteration".
        for name, entry in list(functions.items()):
            into = summed.get(name)
            if into is None:
                summed[name] = list(entry)
            else:
                for index, value in enumerate(entry):
                    into[index] += value
    return summed


def since(current: Mapping[str, list[float]],
          flushed: Mapping[str, list[float]]) -> dict[str, FunctionTimes]:
    """What grew from `flushed` to `current`, for the functions that ran since."""
    out: dict[str, FunctionTimes] = {}
    for name, entry in current.items():
        before = flushed.get(name)
        delta = entry if before is None else [a - b for a, b in zip(entry, before, strict=True)]
        if not any(delta):
            continue
        buckets = {index: round(value) for index, value in enumerate(delta[_FIRST_BUCKET:])
                   if value >= 1}
        out[name] = FunctionTimes(round(delta[0]), round(delta[1]), max(delta[2], 0.0),
                                  buckets)
    return out


def minute(epoch: float | None = None) -> str:
    """The UTC minute `YYYYMMDD|HH:MM` metrics are stored under."""
    return time.strftime("%Y%m%d|%H:%M", time.gmtime(time.time() if epoch is None else epoch))


def merge(into: FunctionTimes, other: FunctionTimes) -> None:
    """Add `other`'s runs to `into`."""
    into.count += other.count
    into.failures += other.failures
    into.seconds += other.seconds
    for index, count in other.buckets.items():
        into.buckets[index] = into.buckets.get(index, 0) + count


def percentile(buckets: Mapping[int, int], fraction: float) -> float | None:
    """The run time (ms) under which `fraction` of the runs fell, read from the histogram
    by linear interpolation inside the bucket; None with no runs. Runs past the last bound
    read as that bound."""
    total = sum(buckets.values())
    if total <= 0:
        return None
    rank = fraction * total
    seen = 0
    for index in sorted(buckets):
        count = buckets[index]
        if count <= 0:
            continue
        if seen + count >= rank:
            if index >= len(BOUNDS_MS):
                return BOUNDS_MS[-1]
            lower = BOUNDS_MS[index - 1] if index > 0 else 0.0
            upper = BOUNDS_MS[index]
            return lower + (upper - lower) * max(rank - seen, 0.0) / count
        seen += count
    return BOUNDS_MS[-1]
