"""`difo stats|processes|workers|timings|metrics` to look, `quiet|stop|pause|unpause` to act.

Everything reads and writes through difo.api. Tables are drawn with rich, in colour only on
a terminal; `--json` prints data for scripts. `difo metrics` serves Prometheus's exposition
(prometheus_client is imported by that command only).
"""

from __future__ import annotations

import json
import threading
import time
from typing import TYPE_CHECKING, Any

import click

from difo.cli import fail, main, url_option
from difo.errors import DifoError

if TYPE_CHECKING:  # rich is imported by the commands that draw, not by `difo server`
    from rich.console import Console, RenderableType


def _backend(url: str | None) -> str:
    from difo import config

    return config.load(url=url).url


def _console() -> Console:
    from rich.console import Console

    console = Console(soft_wrap=False)
    if not console.is_terminal:
        console = Console(soft_wrap=False, width=200)
    return console


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


def _ago(epoch: float | None, now: float) -> str:
    if epoch is None:
        return "-"
    return _duration(max(now - epoch, 0.0)) + " ago"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds // 60:.0f} m {seconds % 60:.0f} s"
    if seconds < 86400:
        return f"{seconds // 3600:.0f} h {seconds % 3600 // 60:.0f} m"
    return f"{seconds // 86400:.0f} d {seconds % 86400 // 3600:.0f} h"


def _short(value: Any, width: int = 50) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= width else text[: width - 1] + "…"


# -- stats --------------------------------------------------------------------------------------


def render_stats(stats: Any, history: list[Any] | None = None) -> RenderableType:
    """The `difo stats` view of a difo.api.Stats (and optionally its history): the totals,
    then one row per queue. `--watch` redraws it every second."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    totals = Table(title="difo", show_header=True)
    for column in ("processed", "failed", "enqueued", "scheduled", "retries", "dead",
                   "processes", "busy"):
        totals.add_column(column, justify="right")
    totals.add_row(*(str(value) for value in (
        stats.processed, stats.failed, stats.enqueued, stats.scheduled_size, stats.retry_size,
        stats.dead_size, stats.processes_size, stats.workers_size)))
    queues = Table(title="queues")
    queues.add_column("queue")
    queues.add_column("size", justify="right")
    queues.add_column("latency (s)", justify="right")
    queues.add_column("state")
    for name, size in stats.queues.items():
        queues.add_row(name, str(size), f"{stats.latencies[name]:.3f}",
                       "paused" if name in stats.paused_queues else "")
    parts: list[RenderableType] = [totals, queues]
    if history:
        days = Table(title="history (UTC days)")
        for column in ("day", "processed", "failed"):
            days.add_column(column, justify="right" if column != "day" else "left")
        for day in history:
            days.add_row(day.date, str(day.processed), str(day.failed))
        parts.append(days)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stats.fetched_at))
    parts.append(Text(f"as of {stamp}", style="dim"))
    return Group(*parts)


@main.command()
@url_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.option("--days", default=0, show_default=True,
              help="Also show per-day processed/failed for this many UTC days.")
@click.option("--watch", is_flag=True, help="Redraw every --interval seconds until Ctrl-C.")
@click.option("--interval", default=1.0, show_default=True, help="Seconds between redraws.")
def stats(url: str | None, as_json: bool, days: int, watch: bool, interval: float) -> None:
    """Totals, queue sizes and latencies, set sizes, servers and busy workers."""
    from difo.api import Stats

    try:
        backend = _backend(url)

        def snapshot() -> tuple[Any, list[Any]]:
            current = Stats(backend=backend)
            return current, current.history(days) if days > 0 else []

        if as_json:
            while True:
                current, history = snapshot()
                data = current.to_dict()
                if days > 0:
                    data["history"] = [vars(day) for day in history]
                if not watch:
                    _echo_json(data)
                    return
                click.echo(json.dumps(data), nl=True)
                time.sleep(interval)
        console = _console()
        if not watch:
            console.print(render_stats(*snapshot()))
            return
        _watch(console, lambda: render_stats(*snapshot()), interval)
    except KeyboardInterrupt:
        return
    except DifoError as exc:
        fail(exc)


def _watch(console: Console, render: Any, interval: float) -> None:
    """Redraw in place on a terminal; print one view after another when piped."""
    if not console.is_terminal:
        while True:
            console.print(render())
            console.file.flush()
            time.sleep(interval)
    from rich.live import Live

    with Live(render(), console=console, auto_refresh=False, screen=False) as live:
        while True:
            time.sleep(interval)
            live.update(render(), refresh=True)


# -- processes and workers ----------------------------------------------------------------------


@main.command()
@url_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def processes(url: str | None, as_json: bool) -> None:
    """Live servers (difo's and Sidekiq's): identity, busy/concurrency, queues, memory."""
    from difo.api import ProcessSet

    try:
        found = ProcessSet(backend=_backend(url))
    except DifoError as exc:
        fail(exc)
        return
    if as_json:
        _echo_json([process.to_dict() for process in found])
        return
    from rich.table import Table

    now = time.time()
    table = Table(title=f"processes: {found.size}, {found.total_concurrency} workers")
    for column in ("identity", "tag", "started", "busy", "queues", "rss", "version",
                   "beat", "state"):
        table.add_column(column, overflow="fold")
    for process in found:
        weights = process.weights
        queues = " ".join(f"{q}:{weights[q]}" if weights.get(q, 1) != 1 else q
                          for q in process.queues)
        state = ("stopping" if process.is_stopping else "quiet" if process.is_quiet
                 else "running")
        table.add_row(process.identity, process.tag, _ago(process.started_at, now),
                      f"{process.busy}/{process.concurrency}", queues,
                      f"{process.rss / 1024:.0f} MB", process.version,
                      _ago(process.beat, now), state)
    _console().print(table)


@main.command()
@url_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def workers(url: str | None, as_json: bool) -> None:
    """What each busy worker runs now (as of its server's last heartbeat)."""
    from difo.api import Workers

    try:
        found = Workers(backend=_backend(url))
    except DifoError as exc:
        fail(exc)
        return
    if as_json:
        _echo_json([work.to_dict() for work in found])
        return
    from rich.table import Table

    now = time.time()
    table = Table(title=f"workers: {found.size} busy")
    for column in ("process", "thread", "queue", "jid", "function", "args", "started"):
        table.add_column(column, overflow="fold")
    for work in found:
        table.add_row(work.process, work.thread, work.queue, work.jid, work.function,
                      _short(work.args), _ago(work.run_at, now))
    _console().print(table)


# -- per-function timings ---------------------------------------------------------------------


@main.command()
@url_option
@click.argument("function", required=False)
@click.option("--minutes", default=60, show_default=True, help="The window, in minutes.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def timings(url: str | None, function: str | None, minutes: int, as_json: bool) -> None:
    """Per-function runs, failures and run times (p50/p95) over the last --minutes; with
    FUNCTION, that function minute by minute."""
    from rich.table import Table

    from difo.api import Metrics

    try:
        metrics = Metrics(backend=_backend(url))
        if function:
            series = metrics.series(function, minutes)
            if as_json:
                _echo_json([minute.to_dict() for minute in series])
                return
            table = Table(title=f"{function}: last {minutes} minutes")
            for column in ("minute", "runs", "failures", "total ms", "p50 ms", "p95 ms"):
                table.add_column(column, justify="left" if column == "minute" else "right")
            for minute in series:
                if minute.metrics.count:
                    table.add_row(time.strftime("%H:%M", time.localtime(minute.minute)),
                                  *_timing_cells(minute.metrics)[1:])
            _console().print(table)
            return
        found = metrics.functions(minutes)
        if as_json:
            _echo_json([item.to_dict() for item in found])
            return
        table = Table(title=f"functions: last {minutes} minutes")
        for column in ("function", "runs", "failures", "total ms", "p50 ms", "p95 ms"):
            table.add_column(column, justify="left" if column == "function" else "right")
        for item in found:
            table.add_row(*_timing_cells(item))
        _console().print(table)
    except DifoError as exc:
        fail(exc)


def _timing_cells(item: Any) -> list[str]:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    return [item.function, str(item.count), str(item.failures), ms(item.total_ms),
            ms(item.p50_ms), ms(item.p95_ms)]


# -- control ------------------------------------------------------------------------------------


def _signal_command(name: str, doing: str) -> click.Command:
    @click.command(name=name, help=f"Ask servers to {doing}, through the backend (as "
                   f"Sidekiq's Process#{name}! does): each acts at its next heartbeat.")
    @url_option
    @click.argument("identities", nargs=-1, metavar="IDENTITY...")
    @click.option("--all", "every", is_flag=True, help="Every live server.")
    def command(url: str | None, identities: tuple[str, ...], every: bool) -> None:
        from difo.api import ProcessSet

        if not identities and not every:
            raise click.UsageError(f"name a server (see difo processes) or pass --all, "
                                   f"e.g. difo {name} --all")
        try:
            found = ProcessSet(backend=_backend(url))
            targets = list(found) if every else []
            missing = []
            for identity in identities:
                process = found.get(identity)
                if process is None:
                    missing.append(identity)
                else:
                    targets.append(process)
            for process in targets:
                getattr(process, name)()
                click.echo(f"{name}: {process.identity}")
            if missing:
                click.echo(f"difo: no live server {', '.join(missing)} (difo processes lists "
                           "them)", err=True)
                raise SystemExit(1)
            if every and not targets:
                click.echo("no live server")
        except DifoError as exc:
            fail(exc)

    return command


main.add_command(_signal_command("quiet", "take no new units and finish those they have"))
main.add_command(_signal_command("stop", "stop gracefully"))


@main.command()
@url_option
@click.argument("queues", nargs=-1, required=True, metavar="QUEUE...")
def pause(url: str | None, queues: tuple[str, ...]) -> None:
    """Stop every server taking units from QUEUE (within a second); units stay queued."""
    from difo.api import Queue

    try:
        backend = _backend(url)
        for name in queues:
            Queue(name, backend=backend).pause()
            click.echo(f"paused: {name}")
    except DifoError as exc:
        fail(exc)


@main.command()
@url_option
@click.argument("queues", nargs=-1, required=True, metavar="QUEUE...")
def unpause(url: str | None, queues: tuple[str, ...]) -> None:
    """Let servers take units from QUEUE again."""
    from difo.api import Queue

    try:
        backend = _backend(url)
        for name in queues:
            Queue(name, backend=backend).unpause()
            click.echo(f"unpaused: {name}")
    except DifoError as exc:
        fail(exc)


# -- Prometheus ---------------------------------------------------------------------------------


@main.command()
@url_option
@click.option("--port", default=9191, show_default=True, help="Port to serve /metrics on.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0 for every interface).")
def metrics(url: str | None, port: int, host: str) -> None:
    """Serve Prometheus metrics (read from the backend at each scrape) until Ctrl-C."""
    try:
        from difo import metrics as exporter
    except ImportError as exc:
        click.echo(f"difo: {exc}; install the extra: pip install 'difo[metrics]'", err=True)
        raise SystemExit(2) from exc
    try:
        backend = _backend(url)

        def ready(bound_host: str, bound_port: int) -> None:
            click.echo(f"serving Prometheus metrics on http://{bound_host}:{bound_port}/metrics")

        stop = threading.Event()
        try:
            exporter.serve(backend, host, port, ready=ready, stop=stop)
        except KeyboardInterrupt:
            stop.set()
    except OSError as exc:
        click.echo(f"difo: cannot listen on {host}:{port}: {exc}", err=True)
        raise SystemExit(1) from exc
    except DifoError as exc:
        fail(exc)
