"""The `difo` command: run a server, enqueue a unit, inspect and manage queues and sets.

Every setting comes from the environment first (REDIS_URL, WORKERS, QUEUES, DIFO_*), and a
flag overrides it. Errors are one line, naming the setting or URL at fault. This module holds
the group, `server` and `enqueue`; the other commands live beside it, one module per topic,
and read through `difo.api`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from difo import __version__, config, logs
from difo.errors import ConfigError, DifoError

F = TypeVar("F", bound=Callable[..., Any])


def url_option(fn: F) -> F:
    return click.option(
        "--url", help="Backend URL (default: DIFO_URL, then REDIS_URL, then "
        "redis://localhost:6379/0).",
    )(fn)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="difo")
def main() -> None:
    """difo: distributed FIFOs, background processing in Sidekiq's Redis format."""


@main.command()
@url_option
@click.option("-w", "--workers", type=int, help="Worker threads (WORKERS, default 10).")
@click.option("-q", "--queues", help='Queues in order, "critical default" or weighted '
              '"critical:3 default:1" (QUEUES, default "default").')
@click.option("-i", "--import", "imports", multiple=True, metavar="MODULE",
              help="Module (and its submodules) whose functions units may call; repeatable "
              "(DIFO_IMPORTS).")
@click.option("-t", "--timeout", type=float,
              help="Seconds running units get to finish at shutdown (DIFO_TIMEOUT, default 25).")
@click.option("--log-format", type=click.Choice(config.LOG_FORMATS),
              help="plain or json lines (DIFO_LOG_FORMAT).")
@click.option("--log-level", type=click.Choice(config.LOG_LEVELS, case_sensitive=False),
              help="DIFO_LOG_LEVEL, default INFO (one line per unit).")
@click.option("--tag", help="A label shown with the process (DIFO_TAG).")
@click.option("--dead-after", type=float,
              help="Seconds without a beat before a server counts as dead and its units are "
              "put back (DIFO_DEAD_AFTER, default 15).")
@click.option("--heartbeat", type=float, help="Seconds between beats (DIFO_HEARTBEAT, default 5).")
@click.option("--poll-interval", type=float,
              help="Average seconds between scheduler polls (DIFO_POLL_INTERVAL, default 0.5).")
@click.option("--prefetch", type=int,
              help="Claimed units that may wait for a free worker (DIFO_PREFETCH; default: "
              "adaptive, about 30 ms of work, between WORKERS and 20 x WORKERS).")
@click.option("--async-workers", type=int,
              help="async def units running at once on the event loop (DIFO_ASYNC_WORKERS, "
              "default 100).")
@click.option("--unit-timeout", type=float,
              help="Seconds a unit may run before it is stopped and counted as a failure "
              "(DIFO_UNIT_TIMEOUT; @difo.job(timeout=...) wins). Runs the server under the "
              "supervisor.")
@click.option("-p", "--processes", type=int,
              help="Server processes, each with WORKERS threads, under one supervisor "
              "(DIFO_PROCESSES, default 1).")
@click.option("--max-units-per-child", type=int,
              help="Recycle a server process after this many units (DIFO_MAX_UNITS_PER_CHILD).")
@click.option("--max-memory", type=str,
              help="Recycle a server process past this resident memory: 512, 512M or 2G "
              "(DIFO_MAX_MEMORY, megabytes).")
@click.option("--setup", metavar="MODULE:FUNCTION",
              help="Call this before the server starts, e.g. a function calling "
              "django.setup() (DIFO_SETUP).")
def server(imports: tuple[str, ...], **flags: Any) -> None:
    """Run a server: WORKERS workers over QUEUES until SIGTERM/SIGINT (twice: at once)."""
    from difo import server as server_module

    try:
        if flags.get("max_memory") is not None:
            flags["max_memory"] = config.parse_megabytes(flags["max_memory"], "--max-memory")
        settings = config.load(**flags)
        # As `python -m` does: modules beside the working folder can be imported.
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())
        from difo import supervisor

        if supervisor.needed(settings):
            if not logging.getLogger("difo").handlers:
                logs.configure(settings.log_level, settings.log_format)
            sys.exit(supervisor.Supervisor(settings, imports).run())
        code = server_module.start(imports=imports, settings=settings)
        if code:
            sys.exit(code)
    except DifoError as exc:
        fail(exc)


@main.command()
@url_option
@click.argument("function")
@click.argument("args_json", default="[]")
@click.option("-q", "--queue", default="default", show_default=True)
@click.option("--in", "delay", type=float, help="Run after this many seconds.")
def enqueue(url: str | None, function: str, args_json: str, queue: str,
            delay: float | None) -> None:
    """Enqueue FUNCTION (module:function) with ARGS_JSON, a JSON array: '[1, 2]'."""
    from difo import unit
    from difo.backends import open_backend

    try:
        settings = config.load(url=url)
        args = json.loads(args_json)
        if not isinstance(args, list):
            raise ConfigError(f"ARGS_JSON must be a JSON array, e.g. '[1, 2]', not {args_json!r}")
        if ":" not in function:
            raise ConfigError(f"FUNCTION must be module:function, not {function!r}")
        config.check_queue_name(queue, "--queue")
        try:
            args = unit.check_args(function, args)
        except DifoError as exc:
            raise ConfigError(f"ARGS_JSON: {exc}") from None
        backend = open_backend(settings.url)
        if delay and delay > 0:
            payload = unit.build(function, args, queue, enqueued=False)
            backend.schedule([(unit.now() + delay, unit.encode(payload))])
        else:
            payload = unit.build(function, args, queue)
            backend.push(queue, [unit.encode(payload)])
        backend.close()
        click.echo(payload["jid"])
    except json.JSONDecodeError as exc:
        fail(ConfigError(f"ARGS_JSON is not JSON: {exc}"))
    except DifoError as exc:
        fail(exc)


def fail(exc: DifoError) -> None:
    """Print a one-line error and exit: 2 for bad configuration, 1 otherwise."""
    click.echo(f"difo: {exc}", err=True)
    sys.exit(2 if isinstance(exc, ConfigError) else 1)




# The other commands register themselves on `main`.
from difo.cli import sets, stats, web  # noqa: E402, F401


@main.command()
@click.option("--url", help="Run on this backend (default: a temporary SQLite file).")
@click.option("--exit", "exit_after", is_flag=True,
              help="Stop after the summary, even on a terminal.")
def demo(url: str | None, exit_after: bool) -> None:
    """A server and a client at work (fast, slow, failing, scheduled and periodic units),
    with the dashboard; on a terminal they keep running until Ctrl-C."""
    from difo import demo as demo_module

    sys.exit(demo_module.main(url, keep=not exit_after))
