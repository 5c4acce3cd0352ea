"""Prometheus exposition: difo's statistics read from the backend at each scrape.

    difo metrics --port 9191            # serve http://127.0.0.1:9191/metrics
    exposition(backend) -> bytes        # the same text, for another server (the dashboard)

Nothing is kept in this process: every scrape reads the backend through difo.api (Stats,
ProcessSet, Metrics.totals), so any number of exporters agree and a restart loses nothing.
This is the only module that imports prometheus_client (the `metrics` extra); servers never
import it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest, make_wsgi_app
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import start_http_server

from difo import stats
from difo.api import Metrics, ProcessSet, Stats
from difo.api.connection import backend_for
from difo.backends import Backend

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class DifoCollector:
    """A prometheus_client collector reading one backend on every `collect()`."""

    def __init__(self, backend: Backend | str | None = None) -> None:
        self.backend = backend_for(backend)

    def collect(self) -> Iterator[Metric]:
        snapshot = Stats(backend=self.backend)
        processes = ProcessSet(backend=self.backend)
        yield _counter("difo_units_processed", "Units finished (failures included).",
                       snapshot.processed)
        yield _counter("difo_units_failed", "Units that raised or were refused.",
                       snapshot.failed)
        size = GaugeMetricFamily("difo_queue_size", "Units waiting in a queue.",
                                 labels=["queue"])
        latency = GaugeMetricFamily("difo_queue_latency_seconds",
                                    "How long the oldest unit of a queue has waited.",
                                    labels=["queue"])
        paused = GaugeMetricFamily("difo_queue_paused", "1 when the queue is paused.",
                                   labels=["queue"])
        for name, count in snapshot.queues.items():
            size.add_metric([name], count)
            latency.add_metric([name], snapshot.latencies[name])
            paused.add_metric([name], 1 if name in snapshot.paused_queues else 0)
        yield from (size, latency, paused)
        for name, value, text in (
            ("difo_enqueued_units", snapshot.enqueued, "Units waiting in all queues."),
            ("difo_scheduled_units", snapshot.scheduled_size, "Units in the schedule."),
            ("difo_retry_units", snapshot.retry_size, "Units waiting for a retry."),
            ("difo_dead_units", snapshot.dead_size, "Units in the dead set."),
            ("difo_processes", processes.size, "Live server processes."),
            ("difo_busy_workers", sum(p.busy for p in processes), "Workers running a unit."),
            ("difo_concurrency", processes.total_concurrency, "Workers of the live servers."),
        ):
            yield GaugeMetricFamily(name, text, value=value)
        yield from _function_families(Metrics(backend=self.backend))


def registry(backend: Backend | str | None = None) -> CollectorRegistry:
    """A registry holding only difo's collector for `backend`."""
    chosen = CollectorRegistry(auto_describe=False)
    chosen.register(DifoCollector(backend))
    return chosen


def exposition(backend: Backend | str | None = None) -> bytes:
    """The Prometheus text exposition (CONTENT_TYPE) of `backend`'s statistics now."""
    return generate_latest(registry(backend))


def wsgi_app(backend: Backend | str | None = None) -> Callable[..., Any]:
    """A WSGI app serving the exposition (content negotiation and gzip included)."""
    return make_wsgi_app(registry(backend))


def serve(backend: Backend | str | None, host: str, port: int,
          ready: Callable[[str, int], None] | None = None,
          stop: threading.Event | None = None) -> None:
    """Serve /metrics on host:port until `stop` is set (or KeyboardInterrupt)."""
    server, thread = start_http_server(port, addr=host, registry=registry(backend))
    if ready:
        ready(host, int(server.server_port))
    try:
        (stop or threading.Event()).wait()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _counter(name: str, text: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, text, value=value)


def _function_families(metrics: Metrics) -> Iterator[Metric]:
    totals = metrics.backend.function_totals()
    runs = CounterMetricFamily("difo_function_units", "Units run, per function.",
                               labels=["function"])
    failures = CounterMetricFamily("difo_function_failures", "Units failed, per function.",
                                   labels=["function"])
    seconds = HistogramMetricFamily("difo_function_run_seconds", "Run time, per function.",
                                    labels=["function"])
    bounds = [*(repr(bound) for bound in stats.BOUNDS), "+Inf"]
    for name in sorted(totals):
        times = totals[name]
        runs.add_metric([name], times.count)
        failures.add_metric([name], times.failures)
        cumulative = 0
        buckets = []
        for index, bound in enumerate(bounds):
            cumulative += times.buckets.get(index, 0)
            buckets.append((bound, cumulative))
        seconds.add_metric([name], buckets, times.seconds)
    yield from (runs, failures, seconds)
