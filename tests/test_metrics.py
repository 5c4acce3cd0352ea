"""Per-function metrics (kept per worker, merged and flushed by the heartbeat, read by
`Metrics`), and the Prometheus exposition (`difo.metrics`, `difo metrics`)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import timeit
import urllib.request
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

import difo
from difo import stats
from difo.api import Metrics
from difo.backends import open_backend
from difo.backends.redis import keys
from difo.cli import main
from difo.config import Settings
from difo.heartbeat import Heartbeat
from difo.metrics import exposition
from difo.worker import WorkerState
from tests import stats_functions
from tests.conftest import ROOT, free_port, wait_for

EXTRA = ("--import", "tests.stats_functions")


# -- recording and percentiles (no I/O) -----------------------------------------------------


def test_record_counts_runs_failures_time_and_buckets() -> None:
    functions: dict[str, list[float]] = {}
    stats.record(functions, "app:f", 0.004, False)  # 4 ms: the (3, 5] ms bucket
    stats.record(functions, "app:f", 0.004, True)
    stats.record(functions, "app:f", 1000.0, False)  # past the last bound: +Inf
    entry = functions["app:f"]
    assert entry[:3] == [3, 1, pytest.approx(1000.008)]
    buckets = entry[3:]
    assert len(buckets) == stats.BUCKETS
    assert buckets[stats.BOUNDS_MS.index(5)] == 2
    assert buckets[-1] == 1
    assert sum(buckets) == 3


def test_percentiles_read_from_the_histogram() -> None:
    functions: dict[str, list[float]] = {}
    for _ in range(90):
        stats.record(functions, "f", 0.002, False)  # (1, 2] ms
    for _ in range(10):
        stats.record(functions, "f", 0.400, False)  # (335, 500] ms
    times = stats.since(functions, {})["f"]
    p50 = stats.percentile(times.buckets, 0.5)
    p95 = stats.percentile(times.buckets, 0.95)
    assert p50 is not None and 1 < p50 <= 2
    assert p95 is not None and 335 < p95 <= 500
    assert stats.percentile({}, 0.5) is None


def test_since_sends_only_what_grew() -> None:
    functions: dict[str, list[float]] = {}
    stats.record(functions, "a", 0.01, False)
    stats.record(functions, "b", 0.01, True)
    flushed = stats.totals([functions])
    stats.record(functions, "a", 0.02, False)
    delta = stats.since(stats.totals([functions]), flushed)
    assert set(delta) == {"a"}
    assert (delta["a"].count, delta["a"].failures) == (1, 0)
    assert delta["a"].seconds == pytest.approx(0.02)
    assert sum(delta["a"].buckets.values()) == 1


def test_the_hot_path_costs_about_a_microsecond() -> None:
    functions: dict[str, list[float]] = {}
    stats.record(functions, "app.mail:send", 0.003, False)
    runs = 200_000
    seconds = min(timeit.repeat(
        lambda: stats.record(functions, "app.mail:send", 0.003, False),
        number=runs, repeat=3))
    per_run_us = seconds / runs * 1e6
    print(f"stats.record: {per_run_us:.3f} us per unit")
    assert per_run_us < 5  # a unit's own cost is 100s of us: this stays noise


# -- merged by the heartbeat, flushed with the stats ----------------------------------------


def test_the_heartbeat_merges_workers_and_flushes_deltas(redis_url: str,
                                                        r: redis.Redis) -> None:
    backend = open_backend(redis_url)
    states = [WorkerState(0), WorkerState(1)]
    beat = Heartbeat(backend, "host:1:abcdefabcdef", Settings(url=redis_url, workers=2),
                     states, on_signal=lambda name: None, is_quiet=lambda: False)
    stats.record(states[0].functions, "app:a", 0.010, False)
    stats.record(states[1].functions, "app:a", 0.030, True)
    stats.record(states[1].functions, "app:b", 0.001, False)
    assert beat.step()
    minute = keys.metrics(stats.minute())
    fields = {k.decode(): float(v) for k, v in r.hgetall(minute).items()}
    assert fields["app:a|count"] == 2 and fields["app:a|failures"] == 1
    assert fields["app:a|ms"] == pytest.approx(40, abs=0.01)
    assert fields["app:b|count"] == 1 and "app:b|failures" not in fields
    assert 0 < r.ttl(minute) <= keys.METRICS_TTL
    assert beat.step()  # nothing new: nothing added
    assert float(r.hget(minute, "app:a|count") or 0) == 2
    stats.record(states[0].functions, "app:a", 0.010, False)
    assert beat.step()
    assert float(r.hget(minute, "app:a|count") or 0) == 3
    totals = {k.decode(): float(v) for k, v in r.hgetall(keys.METRICS_TOTAL).items()}
    assert totals["app:a|count"] == 3 and totals["app:b|count"] == 1
    [a, b] = Metrics(backend=backend).functions(5)
    assert (a.function, a.count, a.failures) == ("app:a", 3, 1)
    assert a.total_ms == pytest.approx(50, abs=0.01)
    assert a.p50_ms is not None and 7.5 < a.p50_ms <= 15
    assert b.function == "app:b" and b.p95_ms is not None and b.p95_ms <= 1


# -- end to end: a server runs units -------------------------------------------------------


def run_units(client: Any, r: redis.Redis, start_server: Any) -> None:
    server = start_server(*EXTRA, "-w", "4",
                          env={"DIFO_HEARTBEAT": "30", "DIFO_DEAD_AFTER": "60"})
    for _ in range(12):
        difo.perform(stats_functions.quick, "fast")
    for _ in range(4):
        difo.perform(stats_functions.slow, "slow", 40)
    for _ in range(3):
        difo.perform(stats_functions.boom, "bad")
    difo.perform_on("waiting", stats_functions.quick, "never")  # no server on "waiting"
    wait_for(lambda: (r.llen("results:fast"), r.llen("results:slow"),
                      r.llen("results:bad")) == (12, 4, 3))
    time.sleep(0.3)
    assert server.stop() == 0  # the final beat flushes the metrics


def test_per_function_metrics_after_running_units(client: Any, redis_url: str,
                                                  r: redis.Redis, start_server: Any) -> None:
    run_units(client, r, start_server)
    found = {m.function: m for m in Metrics(backend=redis_url).functions(10)}
    quick = found["tests.stats_functions:quick"]
    slow = found["tests.stats_functions:slow"]
    boom = found["tests.stats_functions:boom"]
    assert (quick.count, quick.failures) == (12, 0)
    assert (slow.count, slow.failures) == (4, 0)
    assert (boom.count, boom.failures) == (3, 3)
    assert slow.total_ms >= 4 * 40
    assert slow.p50_ms is not None and 30 < slow.p50_ms <= 100
    assert quick.p95_ms is not None and quick.p95_ms < 40
    assert next(iter(found)) == "tests.stats_functions:slow"  # the largest total first
    series = Metrics(backend=redis_url).series("tests.stats_functions:slow", 10)
    assert len(series) == 10
    assert series[-1].minute <= time.time() < series[-1].minute + 60  # the current minute last
    assert sum(m.metrics.count for m in series) == 4
    assert Metrics(backend=redis_url).totals()[0].function == "tests.stats_functions:slow"
    result = CliRunner().invoke(main, ["timings", "--json", "--url", redis_url])
    assert result.exit_code == 0, result.output
    listed = {item["function"]: item for item in json.loads(result.stdout)}
    assert listed["tests.stats_functions:boom"]["failures"] == 3
    table = CliRunner().invoke(main, ["timings", "--url", redis_url])
    assert "tests.stats_functions:quick" in table.stdout
    one = CliRunner().invoke(main, ["timings", "tests.stats_functions:slow",
                                    "--url", redis_url])
    assert one.exit_code == 0 and "p95 ms" in one.stdout


def families(text: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def sample(found: dict[str, Any], family: str, name: str, **labels: str) -> float:
    for item in found[family].samples:
        if item.name == name and all(item.labels.get(k) == v for k, v in labels.items()):
            return float(item.value)
    raise AssertionError(f"no sample {name} {labels} in {family}")


def test_the_prometheus_exposition_parses(client: Any, redis_url: str, r: redis.Redis,
                                          start_server: Any) -> None:
    run_units(client, r, start_server)
    open_backend(redis_url).pause("waiting")
    found = families(exposition(redis_url).decode())
    assert found["difo_units_processed"].type == "counter"
    assert sample(found, "difo_units_processed", "difo_units_processed_total") == 19
    assert sample(found, "difo_units_failed", "difo_units_failed_total") == 3
    assert sample(found, "difo_queue_size", "difo_queue_size", queue="waiting") == 1
    assert sample(found, "difo_queue_size", "difo_queue_size", queue="default") == 0
    assert sample(found, "difo_queue_latency_seconds", "difo_queue_latency_seconds",
                  queue="waiting") > 0
    assert sample(found, "difo_queue_paused", "difo_queue_paused", queue="waiting") == 1
    for gauge, value in (("difo_scheduled_units", 0), ("difo_retry_units", 0),
                         ("difo_dead_units", 0), ("difo_processes", 0),
                         ("difo_busy_workers", 0), ("difo_enqueued_units", 1)):
        assert sample(found, gauge, gauge) == value, gauge
    slow = "tests.stats_functions:slow"
    assert sample(found, "difo_function_units", "difo_function_units_total",
                  function=slow) == 4
    assert sample(found, "difo_function_failures", "difo_function_failures_total",
                  function="tests.stats_functions:boom") == 3
    assert found["difo_function_run_seconds"].type == "histogram"
    assert sample(found, "difo_function_run_seconds", "difo_function_run_seconds_count",
                  function=slow) == 4
    assert sample(found, "difo_function_run_seconds", "difo_function_run_seconds_bucket",
                  function=slow, le="+Inf") == 4
    assert sample(found, "difo_function_run_seconds", "difo_function_run_seconds_bucket",
                  function=slow, le="0.01") == 0  # none ran under 10 ms
    assert sample(found, "difo_function_run_seconds", "difo_function_run_seconds_sum",
                  function=slow) >= 0.16


def test_difo_metrics_serves_the_exposition_over_http(redis_url: str,
                                                      r: redis.Redis) -> None:
    r.set("stat:processed", 5)
    port = free_port()
    exporter = subprocess.Popen(
        [sys.executable, "-m", "difo.cli", "metrics", "--port", str(port), "--url", redis_url],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        body = b""

        def served() -> bool:
            nonlocal body
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as rsp:
                    body = rsp.read()
                return True
            except OSError:
                return False

        wait_for(served, timeout=10, interval=0.1)
        assert sample(families(body.decode()), "difo_units_processed",
                      "difo_units_processed_total") == 5
        r.set("stat:processed", 6)  # read at each scrape
        assert served()
        assert sample(families(body.decode()), "difo_units_processed",
                      "difo_units_processed_total") == 6
    finally:
        exporter.terminate()
        exporter.wait(10)


def test_a_flood_of_made_up_names_is_capped() -> None:
    functions: dict[str, list[float]] = {}
    for n in range(stats.MAX_FUNCTIONS + 50):
        stats.record(functions, f"made.up:name{n}", 0.001, True)
    assert len(functions) == stats.MAX_FUNCTIONS + 1
    assert functions[stats.OTHER][0] == 50
