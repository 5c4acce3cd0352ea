"""`difo scheduled|retries|dead` and `difo queues`: list and manage units, through difo.api."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from difo.cli import fail, main, url_option
from difo.errors import DifoError

SETS = {"scheduled": "ScheduledSet", "retries": "RetrySet", "dead": "DeadSet"}


def _sorted_set(kind: str, url: str | None) -> Any:
    from difo import api, config

    return getattr(api, SETS[kind])(backend=config.load(url=url).url)


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def _short(value: Any, width: int = 60) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= width else text[: width - 1] + "…"


def _table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    console = Console(soft_wrap=False)
    if not console.is_terminal:
        console = Console(soft_wrap=False, width=200)
    console.print(table)


def _set_command(kind: str) -> click.Command:
    @click.command(name=kind, help=f"List or manage the {kind} units: ACTION is list (default), "
                   "retry JID, delete JID, kill JID, retry-all or clear.")
    @url_option
    @click.argument("action", default="list",
                    type=click.Choice(["list", "retry", "delete", "kill", "retry-all", "clear"]))
    @click.argument("jid", required=False)
    @click.option("--page", default=1, show_default=True, help="Page of the listing (from 1).")
    @click.option("--size", default=25, show_default=True, help="Entries per page.")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
    @click.option("--yes", is_flag=True, help="Do not ask before clear.")
    def command(url: str | None, action: str, jid: str | None, page: int, size: int,
                as_json: bool, yes: bool) -> None:
        try:
            sorted_set = _sorted_set(kind, url)
            if action == "list":
                _list(kind, sorted_set, page, size, as_json)
            elif action in ("retry", "delete", "kill"):
                if not jid:
                    raise click.UsageError(f"{action} needs a JID")
                if not getattr(sorted_set, action)(jid):
                    click.echo(f"difo: no unit {jid} in {kind}", err=True)
                    raise SystemExit(1)
                click.echo(f"{action}: {jid}")
            elif action == "retry-all":
                click.echo(f"enqueued {sorted_set.retry_all()} units")
            elif action == "clear":
                if not yes:
                    click.confirm(f"Delete all {sorted_set.size} {kind} units?", abort=True)
                click.echo(f"deleted {sorted_set.clear()} units")
        except DifoError as exc:
            fail(exc)

    return command


def _list(kind: str, sorted_set: Any, page: int, size: int, as_json: bool) -> None:
    entries = sorted_set.page(page, size)
    if as_json:
        click.echo(json.dumps([entry.to_dict() for entry in entries], indent=2))
        return
    label = {"scheduled": "due", "retries": "next retry", "dead": "died"}[kind]
    rows = []
    for entry in entries:
        error = f"{entry.error_class}: {entry.error_message}" if entry.error_class else ""
        rows.append([_when(entry.at), entry.jid, entry.function, _short(entry.args),
                     entry.queue, str(entry.retry_count if entry.retry_count is not None
                                      else ""), _short(error)])
    _table(f"{kind}: {sorted_set.size} units (page {page})",
           [label, "jid", "function", "args", "queue", "retries", "error"], rows)


for _kind in SETS:
    main.add_command(_set_command(_kind))


@main.command()
@url_option
@click.argument("name", required=False)
@click.option("--page", default=1, show_default=True)
@click.option("--size", default=25, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--clear", is_flag=True, help="Delete every unit of queue NAME (asks first).")
@click.option("--delete", "delete_jid", metavar="JID", help="Delete one unit of queue NAME.")
@click.option("--yes", is_flag=True, help="Do not ask before --clear.")
def queues(url: str | None, name: str | None, page: int, size: int, as_json: bool,
           clear: bool, delete_jid: str | None, yes: bool) -> None:
    """List queues with size and latency, or the units of queue NAME (newest first)."""
    from difo import api, config

    if name is None and (clear or delete_jid):
        raise click.UsageError("--clear and --delete act on one queue: give its NAME, "
                               "e.g. difo queues default --clear")
    try:
        backend = config.load(url=url).url
        if name is None:
            rows = [(q.name, q.size, q.latency()) for q in api.Queue.all(backend=backend)]
            if as_json:
                click.echo(json.dumps([{"queue": n, "size": s, "latency": round(lat, 3)}
                                       for n, s, lat in rows], indent=2))
            else:
                _table("queues", ["queue", "size", "latency (s)"],
                       [[n, str(s), f"{lat:.3f}"] for n, s, lat in rows])
            return
        queue = api.Queue(name, backend=backend)
        if clear:
            if not yes:
                click.confirm(f"Delete all {queue.size} units of queue {name}?", abort=True)
            click.echo(f"deleted {queue.clear()} units")
            return
        if delete_jid:
            if not queue.delete(delete_jid):
                click.echo(f"difo: no unit {delete_jid} in queue {name}", err=True)
                raise SystemExit(1)
            click.echo(f"delete: {delete_jid}")
            return
        entries = queue.page(page, size)
        if as_json:
            click.echo(json.dumps([entry.to_dict() for entry in entries], indent=2))
            return
        _table(f"queue {name}: {queue.size} units (page {page})",
               ["enqueued", "jid", "function", "args"],
               [[_when(e.enqueued_at), e.jid, e.function, _short(e.args)] for e in entries])
    except DifoError as exc:
        fail(exc)
