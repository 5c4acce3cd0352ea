"""Shared fixtures: a real redis-server on a free loopback port, servers as subprocesses.

Never touches the Redis on 6379: every test talks to the server this file starts, and
flushes only that one.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

import difo
from difo.client import Client

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI") == "true"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_tool(name: str, why: str) -> str:
    """The path of `name`, or a skip (a failure under CI=true, where every tool must be)."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed ({why}); .ci/run installs it"
        if IN_CI:
            pytest.fail(message + " -- under CI=true a missing tool fails the run")
        pytest.skip(message)
    return path


class RedisServer:
    """A private redis-server process."""

    def __init__(self, directory: Path, *extra: str) -> None:
        self.port = free_port()
        self.directory = directory
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = require_tool("redis-server", "the tests need a real Redis")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory),
             "--enable-debug-command", "local", *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The private Redis, emptied for this test."""
    redis.Redis(port=redis_server.port).flushall()
    return redis_server.url


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def client(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Client]:
    """The default client pointed at the private Redis (as REDIS_URL would)."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("DIFO_TEST_REDIS", redis_url)
    yield difo.configure(redis_url)
    difo.client.default().close()


class ServerProcess:
    """`difo server` in a subprocess, as a user would run it."""

    def __init__(self, url: str, *args: str, env: dict[str, str] | None = None,
                 log: Path | None = None) -> None:
        environment = dict(os.environ)
        environment.update({
            "REDIS_URL": url, "DIFO_TEST_REDIS": url, "PYTHONPATH": str(ROOT),
            "DIFO_LOG_LEVEL": "INFO",
        })
        environment.pop("DIFO_URL", None)
        environment.update(env or {})
        self.log_path = log
        self.output = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "difo.cli", "server", "--import", "tests.functions", *args],
            cwd=ROOT, env=environment, stdout=self.output, stderr=subprocess.STDOUT,
        )

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path else ""


@pytest.fixture
def start_server(redis_url: str, tmp_path: Path) -> Iterator[object]:
    """Start `difo server` subprocesses; every one still running is killed at teardown."""
    started: list[ServerProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> ServerProcess:
        log = tmp_path / f"server-{len(started)}.log"
        server = ServerProcess(redis_url, *args, env=env, log=log)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.process.poll() is None:
            server.kill()


def wait_for(condition: object, timeout: float = 10.0, interval: float = 0.02) -> None:
    """Poll `condition()` until true; fail with its description after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():  # type: ignore[operator]
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {condition}")
        time.sleep(interval)
