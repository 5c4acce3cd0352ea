"""The framework examples under examples/, end to end against the private Redis.

Each test calls an endpoint through the framework's own test client, checks the unit it
enqueued, then starts a real `difo server` subprocess with the example's command line and
waits for the unit's effect. FastAPI, Flask and Django come with the `dev` extra: without them
these tests skip, and under CI=true they fail.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import redis

import difo.aio
from tests.conftest import IN_CI, ROOT, wait_for

EXAMPLES = ROOT / "examples"
DJANGO_PROJECT = EXAMPLES / "django_project"
OUTBOX = "examples:outbox"  # where the FastAPI and Flask units "send" their mail

StartServer = Callable[..., Any]


def need(module: str) -> ModuleType:
    """Import `module`, or skip; under CI=true, where the dev extra installs it, fail."""
    message = f"{module} is not installed (pip install -e '.[dev]' installs it)"
    if IN_CI:
        try:
            return importlib.import_module(module)
        except ImportError:
            pytest.fail(message + " -- under CI=true a missing package fails the run")
    return pytest.importorskip(module, reason=message)


def queued(r: redis.Redis, queue: str = "default") -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in r.lrange(f"queue:{queue}", 0, -1)]


def outbox(r: redis.Redis) -> list[str]:
    return [entry.decode() for entry in r.lrange(OUTBOX, 0, -1)]


def python_path(*folders: Path) -> dict[str, str]:
    """The server's PYTHONPATH: the repository (for tests.functions) and the example."""
    return {"PYTHONPATH": os.pathsep.join(str(folder) for folder in (ROOT, *folders))}


# -- FastAPI -------------------------------------------------------------------------------


def test_fastapi_endpoint_enqueues_with_the_async_client_and_mounts_the_dashboard(
    client: object, redis_url: str, r: redis.Redis, start_server: StartServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    need("fastapi")
    need("httpx")
    from fastapi.testclient import TestClient

    monkeypatch.setenv("DIFO_WEB_AUTH", "admin:s3cret")
    monkeypatch.syspath_prepend(str(EXAMPLES))
    difo.aio.configure(redis_url)
    from fastapi_app.main import app

    with TestClient(app) as http:
        response = http.post("/signup", json={"email": "ada@example.com"})
        assert response.status_code == 202, response.text
        jid = response.json()["jid"]
        assert http.get("/difo/").status_code == 401
        dashboard = http.get("/difo/", auth=("admin", "s3cret"))
        assert dashboard.status_code == 200
        assert 'href="/difo/queues"' in dashboard.text  # links follow the mount point

    [payload] = queued(r)
    assert payload["jid"] == jid
    assert payload["class"] == "fastapi_app.tasks:send_welcome"
    assert payload["args"] == ["ada@example.com"]

    start_server("--import", "fastapi_app.tasks", env=python_path(EXAMPLES))
    wait_for(lambda: outbox(r) == ["Welcome, ada@example.com!"], timeout=20)


# -- Flask ---------------------------------------------------------------------------------


def test_flask_view_enqueues_and_the_unit_runs_in_the_app_context(
    client: object, r: redis.Redis, start_server: StartServer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    need("flask")
    monkeypatch.syspath_prepend(str(EXAMPLES))
    from flask_app import create_app

    http = create_app(TESTING=True).test_client()
    assert http.post("/signup", data={}).status_code == 400
    response = http.post("/signup", data={"email": "ada@example.com"})
    assert response.status_code == 202
    [payload] = queued(r)
    assert payload["jid"] == response.get_json()["jid"]
    assert payload["class"] == "flask_app.tasks:send_welcome"

    # The unit reads current_app.config in the server: the sender set here proves the app
    # context the setup hook pushed is the server's own app.
    env = {**python_path(EXAMPLES), "FLASK_MAIL_SENDER": "team@example.org"}
    start_server("--setup", "flask_app.worker:setup", "--import", "flask_app.tasks", env=env)
    wait_for(lambda: outbox(r) == ["From team@example.org: welcome, ada@example.com!"],
             timeout=20)


# -- Django --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def django_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The example project set up in this process, on a migrated temporary SQLite file.

    django.setup() runs once per process, so every Django test shares this module's setup.
    """
    django = need("django")
    database = tmp_path_factory.mktemp("django") / "db.sqlite3"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_SETTINGS_MODULE", "myproject.settings")
        patch.setenv("DJANGO_SQLITE_PATH", str(database))
        patch.syspath_prepend(str(DJANGO_PROJECT))
        django.setup()
        from django.core.management import call_command
        from django.test.utils import setup_test_environment, teardown_test_environment

        call_command("migrate", verbosity=0)
        setup_test_environment()
        try:
            yield database
        finally:
            teardown_test_environment()


def test_django_view_enqueues_on_commit_and_a_set_up_server_runs_it(
    django_database: Path, client: object, r: redis.Redis, start_server: StartServer,
) -> None:
    from django.test import Client
    from myproject.models import Signup

    response = Client().post("/signup/", {"email": "ada@example.com"})
    assert response.status_code == 201
    signup_id = response.json()["id"]
    [payload] = queued(r)
    assert payload["class"] == "myproject.tasks:send_welcome"
    assert payload["args"] == [signup_id]

    # The units use the ORM, so the server must run django.setup() before importing them:
    # the example's command line, with its --setup hook.
    env = {**python_path(DJANGO_PROJECT), "DJANGO_SQLITE_PATH": str(django_database)}
    server = start_server("--setup", "myproject.worker:setup", "--import", "myproject.tasks",
                          env=env)
    wait_for(lambda: Signup.objects.get(pk=signup_id).welcomed_at is not None, timeout=20)
    assert server.stop() == 0
    assert "Welcome aboard, ada@example.com!" in server.log()  # the console mail backend


def test_django_signup_rolled_back_enqueues_nothing(
    django_database: Path, client: object, r: redis.Redis,
) -> None:
    from django.db import transaction
    from django.test import Client
    from myproject.models import Signup

    class Rollback(Exception):
        pass

    with pytest.raises(Rollback), transaction.atomic():
        assert Client().post("/signup/", {"email": "bob@example.com"}).status_code == 201
        assert queued(r) == []  # the row is not committed yet, so no unit either
        raise Rollback
    assert queued(r) == []
    assert not Signup.objects.filter(email="bob@example.com").exists()
