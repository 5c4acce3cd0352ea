"""Fixtures for the Sidekiq interop tests: the real Sidekiq 6.4.1 gem, run beside difo.

Each test gets the private Redis of tests/conftest.py, emptied, and never the one on 6379.
Tests that need Ruby skip when it is missing, and fail under CI=true (see ruby.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.interop.ruby import RubyServer, Sidekiq, WebUI


@pytest.fixture
def sidekiq(redis_url: str) -> Sidekiq:
    return Sidekiq(redis_url)


@pytest.fixture
def web_ui(redis_url: str, tmp_path: Path) -> Iterator[WebUI]:
    web = WebUI(redis_url, tmp_path / "web.log")
    yield web
    web.stop()


@pytest.fixture
def start_ruby_server(redis_url: str, tmp_path: Path) -> Iterator[Any]:
    """Start `sidekiq` processes; every one still running is killed at teardown."""
    started: list[RubyServer] = []

    def start(*args: str) -> RubyServer:
        server = RubyServer(redis_url, tmp_path / f"sidekiq-{len(started)}.log", *args)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()
