"""The server's setup hook: `difo server --setup flask_app.worker:setup --import flask_app.tasks`.

A unit runs outside any request, so Flask has no app context for it; this hook builds the app
once per server process and pushes its context around every unit, as Flask does around every
request: `current_app`, `current_app.config` and extensions bound to the app all work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask

import difo
from difo.unit import Unit

from . import create_app


def setup() -> None:
    app = create_app()
    difo.server_middleware(in_app_context(app))


def in_app_context(app: Flask) -> Callable[[Unit, Callable[[], Any]], Any]:
    """A server middleware running each unit inside a fresh context of `app`."""

    def middleware(unit: Unit, call_next: Callable[[], Any]) -> Any:
        with app.app_context():
            return call_next()

    return middleware
