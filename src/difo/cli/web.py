"""`difo web`: serve the dashboard (difo.web) with uvicorn.

Without auth it listens on loopback only: anyone who reaches the port may retry, delete and
stop. `--auth user:password` (HTTP Basic) or `--token` (bearer) are required for any other
address. starlette, jinja2 and uvicorn (the `web` extra) are imported by this command only.
"""

from __future__ import annotations

import ipaddress

import click

from difo.cli import fail, main, url_option
from difo.errors import ConfigError, DifoError


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@main.command()
@url_option
@click.option("--host", default="127.0.0.1", show_default=True, envvar="DIFO_WEB_HOST",
              help="Address to listen on (DIFO_WEB_HOST); not loopback only with auth.")
@click.option("--port", default=7474, show_default=True, type=int, envvar="DIFO_WEB_PORT",
              help="Port (DIFO_WEB_PORT).")
@click.option("--auth", envvar="DIFO_WEB_AUTH", metavar="USER:PASSWORD",
              help="Require HTTP Basic with this user and password (DIFO_WEB_AUTH).")
@click.option("--token", envvar="DIFO_WEB_TOKEN",
              help="Accept `Authorization: Bearer TOKEN` (DIFO_WEB_TOKEN).")
@click.option("--secret", envvar="DIFO_WEB_SECRET",
              help="Key that signs CSRF tokens (DIFO_WEB_SECRET; default: random per start).")
def web(url: str | None, host: str, port: int, auth: str | None, token: str | None,
        secret: str | None) -> None:
    """Serve the web dashboard (http://127.0.0.1:7474 by default)."""
    from difo import config

    try:
        if auth is not None and ":" not in auth:
            raise ConfigError("--auth must be USER:PASSWORD")
        if not (auth or token) and not is_loopback(host):
            raise ConfigError(
                f"--host {host} is not a loopback address and no --auth or --token is set: "
                "anyone reaching it could delete and stop units. Add --auth USER:PASSWORD "
                "(or --token), or listen on 127.0.0.1")
        settings = config.load(url=url)
        try:
            import uvicorn

            from difo.web import create_app
        except ImportError as exc:
            raise ConfigError(f"the dashboard needs the web extra: pip install 'difo[web]' "
                              f"({exc})") from None
        app = create_app(settings.url, auth=auth, token=token, secret=secret)
        app.backend.ping()
        click.echo(f"difo web: {app.backend.url} on http://{host}:{port}/", err=True)
        uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)
    except DifoError as exc:
        fail(exc)
