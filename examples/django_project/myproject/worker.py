"""The server's setup hook: `difo server --setup myproject.worker:setup --import myproject.tasks`.

difo calls it in each server process before the server imports myproject.tasks, whose models
need the app registry ready. Around every unit it does what Django does around every request:
drop unusable or expired database connections, and reset the DEBUG query log.
"""

import os
from collections.abc import Callable
from typing import Any

import django
from django.db import close_old_connections, reset_queries

import difo
from difo.unit import Unit


def setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "myproject.settings")
    django.setup()
    difo.server_middleware(like_a_request)


def like_a_request(unit: Unit, call_next: Callable[[], Any]) -> Any:
    reset_queries()
    close_old_connections()
    try:
        return call_next()
    finally:
        close_old_connections()
