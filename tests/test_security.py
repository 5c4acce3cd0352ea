"""Security: the allow rule against hostile payloads on a real server, never pickle, JSON only
in SQLite, Redis AUTH (password and ACL user) and TLS for the client, a server and difo.api,
and no secret in logs, in the process records written to Redis, or in CLI errors.

The threat model these tests pin down is in docs/security.md.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

import difo
from difo import api, unit
from difo.client import Client
from difo.errors import BackendUnavailable
from tests import functions
from tests.conftest import ROOT, RedisServer, ServerProcess, free_port, require_tool, wait_for

SRC = ROOT / "src" / "difo"
PASSWORD = "Sup3r-s3cret-pw-7f3a"
ALICE_PASSWORD = "al1ce-only-pw-91c2"
WRONG = "wr0ng-guess-pw-55e1"


# -- the allow rule, on a real server ---------------------------------------------------------


def _hostile(tmp_path: Path) -> dict[str, list[object]]:
    """class -> args: each would leave a marker file in tmp_path if it ever ran."""
    marker = str(tmp_path / "marker")
    return {
        "os:system": [f"touch {marker}-system"],
        "posix:system": [f"touch {marker}-posix"],
        "builtins:eval": [f"open({marker + '-eval'!r}, 'w').write('x')"],
        "builtins:exec": [f"open({marker + '-exec'!r}, 'w').write('x')"],
        "subprocess:run": [["touch", f"{marker}-run"]],
        "subprocess:check_call": [["touch", f"{marker}-check-call"]],
        "tests.functions:__import__": ["os"],
        "tests.functions:os": [],
        "tests.functions.os:system": [f"touch {marker}-dotted"],
        "tests.functions:record.__globals__": [],
        "importlib:import_module": ["tests.fuzz.evil_import"],
        "tests.fuzz.evil_import:anything": [],
        "pickle:loads": ["cos\nsystem\n(S'touch x'\ntR."],
        "shutil:rmtree": [str(tmp_path)],
        "difo.server:start": [],
    }


def test_hostile_payloads_never_run_and_land_in_dead(
    r: redis.Redis, start_server: object, tmp_path: Path
) -> None:
    hostile = _hostile(tmp_path)
    for class_name, args in hostile.items():
        payload = unit.build(class_name, args, "default")  # type: ignore[arg-type]
        r.lpush("queue:default", unit.encode(payload))
    evil_marker = tmp_path / "marker-imported"
    server = start_server(  # type: ignore[operator]
        env={"DIFO_EVIL_MARKER": str(evil_marker)})
    try:
        wait_for(lambda: r.zcard("dead") + r.zcard("retry") == len(hostile), timeout=20)
        # ...and the server keeps serving.
        r.lpush("queue:default", unit.encode(unit.build("tests.functions:record",
                                                        ["after", 1], "default")))
        wait_for(lambda: r.llen("results:after") == 1)
    finally:
        server.stop()
    assert sorted(path.name for path in tmp_path.iterdir() if path.name.startswith("marker")) == []
    dead = {json.loads(raw)["class"]: json.loads(raw) for raw in r.zrange("dead", 0, -1)}
    retried = {json.loads(raw)["class"]: json.loads(raw) for raw in r.zrange("retry", 0, -1)}
    # Every name is refused: dead at once, never retried.
    assert retried == {}
    assert set(dead) == set(hostile)
    for payload in dead.values():
        assert payload["error_class"] == "difo.errors.UnitRefused", payload
        assert "not allowed" in payload["error_message"] or "not a difo function name" in \
            payload["error_message"], payload["error_message"]
    assert not evil_marker.exists()  # importlib:import_module never imported it


def test_no_pickle_anywhere_in_difo() -> None:
    pattern = re.compile(r"\b(import|from)\s+(c?[Pp]ickle|marshal|shelve|dill|cloudpickle)\b"
                         r"|\bpickle\.|\b__import__\(\s*['\"](pickle|marshal)")
    offenders = []
    for path in SRC.rglob("*"):
        if path.suffix in (".py", ".lua", ".sql", ".html", ".js") and path.is_file():
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []


def test_the_sqlite_backend_stores_json_only(tmp_path: Path) -> None:
    path = tmp_path / "difo.db"
    client = Client(f"sqlite:///{path}")
    try:
        client.push(functions.record, ["t", 1, 2.5, None, [1], {"k": "ü"}])
        client.push_at(time.time() + 3600, functions.record, ["later"])
        client.push_bulk(functions.record, [["bulk", n] for n in range(5)])
    finally:
        client.close()
    with sqlite3.connect(path) as db:
        payloads = [row[0] for row in db.execute("SELECT payload FROM units")]
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = "
                                               "'table'")]
        cells = [value for table in tables
                 for row in db.execute(f"SELECT * FROM {table}")
                 for value in row]
    assert len(payloads) == 7
    for raw in payloads:
        text = raw.decode() if isinstance(raw, bytes) else raw
        assert isinstance(json.loads(text), dict)
    for value in cells:
        if isinstance(value, bytes):
            assert not value.startswith(b"\x80"), value[:40]  # a pickle's first byte
            value.decode("utf-8")


# -- Redis AUTH: a password and an ACL user ----------------------------------------------------


@pytest.fixture(scope="module")
def auth_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private Redis that needs a password (default user) or alice's ACL password."""
    server = RedisServer(tmp_path_factory.mktemp("auth-redis"))
    admin = redis.Redis(port=server.port)
    admin.execute_command("ACL", "SETUSER", "alice", "on", f">{ALICE_PASSWORD}", "~*", "&*",
                          "+@all")
    admin.config_set("requirepass", PASSWORD)
    admin.close()
    yield server
    server.stop()


def _auth_url(server: RedisServer, user: str) -> str:
    if user == "alice":
        return f"redis://alice:{ALICE_PASSWORD}@127.0.0.1:{server.port}/0"
    return f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0"


@pytest.mark.parametrize("user", ["default", "alice"])
def test_auth_works_for_client_server_and_api_and_no_secret_leaks(
    auth_redis: RedisServer, user: str, tmp_path: Path
) -> None:
    url = _auth_url(auth_redis, user)
    admin = redis.Redis.from_url(url)
    admin.flushall()
    client = Client(url)
    server = ServerProcess(url, "-w", "2", "--log-level", "debug", log=tmp_path / "server.log",
                           env={"DIFO_LOG_LEVEL": "DEBUG"})
    try:
        client.push(functions.record, ["auth", user])
        client.push(functions.fail_straight_to_dead, ["boom"])
        wait_for(lambda: admin.llen("results:auth") == 1, timeout=15)
        wait_for(lambda: admin.zcard("dead") == 1, timeout=15)
        wait_for(lambda: admin.scard("processes") == 1, timeout=15)
        assert api.Queue("default", backend=url).size == 0
        assert api.DeadSet(backend=url).size == 1
        assert len(list(api.ProcessSet(backend=url))) == 1
        dumped = _dump_everything(admin)
    finally:
        client.close()
        server.stop()
    log = server.log()
    assert "dead at once" in log  # the failing unit was logged...
    assert "redis://" in log  # ...and so was the URL, masked
    for secret in (PASSWORD, ALICE_PASSWORD):
        assert secret not in log
        assert secret.encode() not in dumped
    admin.close()


def test_a_password_only_url_means_a_password(auth_redis: RedisServer) -> None:
    url = f"redis://{PASSWORD}@127.0.0.1:{auth_redis.port}/0"
    client = Client(url)
    try:
        client.push(functions.noop, [])
        assert api.Queue("default", backend=url).size >= 1
    finally:
        client.close()


@pytest.mark.parametrize("form", ["password", "user"])
def test_a_wrong_password_is_a_clear_error_with_the_url_masked(
    auth_redis: RedisServer, form: str
) -> None:
    user = "" if form == "password" else "alice"
    url = f"redis://{user}:{WRONG}@127.0.0.1:{auth_redis.port}/0"
    client = Client(url)
    try:
        with pytest.raises(BackendUnavailable) as caught:
            client.push(functions.noop, [])
    finally:
        client.close()
    message = str(caught.value)
    assert re.search("password|auth", message, re.IGNORECASE), message
    assert WRONG not in message and "***" in message, message
    assert f"127.0.0.1:{auth_redis.port}" in message
    with pytest.raises(BackendUnavailable) as caught:
        api.Queue("default", backend=url).size  # noqa: B018
    assert WRONG not in str(caught.value)


@pytest.mark.parametrize(
    "command",
    [
        ["enqueue", "tests.functions:noop"],
        ["stats"],
        ["queues"],
        ["dead"],
        ["server", "--import", "tests.functions"],
    ],
)
def test_cli_errors_never_show_the_password(auth_redis: RedisServer, command: list[str]) -> None:
    for url in (f"redis://:{WRONG}@127.0.0.1:{auth_redis.port}/0",
                f"redis://:{WRONG}@127.0.0.1:{free_port()}/0",  # nothing listens there
                f"redis://:{WRONG}@127.0.0.1:notaport/0"):
        env = {key: value for key, value in os.environ.items()
               if key not in ("DIFO_URL", "REDIS_URL")}
        env["REDIS_URL"] = url
        done = subprocess.run([sys.executable, "-m", "difo.cli", *command], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=30)
        assert done.returncode != 0, (url, done.stdout, done.stderr)
        assert WRONG not in done.stdout + done.stderr, done.stderr
        assert done.stderr.strip(), "no error was printed"
        assert "Traceback" not in done.stderr, done.stderr


def _dump_everything(client: redis.Redis) -> bytes:
    """Every key and value in the database, as bytes."""
    out = []
    for key in client.scan_iter(count=1000):
        out.append(key)
        kind = client.type(key)
        if kind == b"string":
            out.append(client.get(key) or b"")
        elif kind == b"hash":
            for field, value in client.hgetall(key).items():
                out += [field, value]
        elif kind == b"list":
            out += client.lrange(key, 0, -1)
        elif kind == b"set":
            out += list(client.smembers(key))
        elif kind == b"zset":
            out += [member for member, _ in client.zrange(key, 0, -1, withscores=True)]
    return b"\n".join(out)


# -- TLS -----------------------------------------------------------------------------------------


class TLSRedis:
    """A redis-server that speaks TLS only (--port 0), with a CA the test made."""

    def __init__(self, directory: Path) -> None:
        openssl = require_tool("openssl", "the TLS tests make a self-signed CA")
        binary = require_tool("redis-server", "the tests need a real Redis")
        self.ca = directory / "ca.crt"
        key, cert = directory / "server.key", directory / "server.crt"
        ext = directory / "san.ext"
        ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        steps = [
            [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-keyout", str(directory / "ca.key"), "-out", str(self.ca),
             "-subj", "/CN=difo test CA"],
            [openssl, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
             "-out", str(directory / "server.csr"), "-subj", "/CN=127.0.0.1"],
            [openssl, "x509", "-req", "-in", str(directory / "server.csr"), "-CA", str(self.ca),
             "-CAkey", str(directory / "ca.key"), "-CAcreateserial", "-days", "2",
             "-out", str(cert), "-extfile", str(ext)],
        ]
        for step in steps:
            subprocess.run(step, check=True, capture_output=True, timeout=60)
        self.port = free_port()
        self.process = subprocess.Popen(
            [binary, "--port", "0", "--tls-port", str(self.port), "--bind", "127.0.0.1",
             "--tls-cert-file", str(cert), "--tls-key-file", str(key),
             "--tls-ca-cert-file", str(self.ca), "--tls-auth-clients", "no",
             "--requirepass", PASSWORD, "--save", "", "--appendonly", "no",
             "--dir", str(directory)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        probe = redis.Redis(port=self.port, ssl=True, ssl_ca_certs=str(self.ca),
                            password=PASSWORD)
        deadline = time.monotonic() + 10
        while True:
            if self.process.poll() is not None:
                output = self.process.stdout.read().decode() if self.process.stdout else ""
                pytest.skip(f"redis-server would not start with TLS (built without it?): "
                            f"{output.strip()[-300:]}")
            try:
                probe.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    self.stop()
                    pytest.skip("redis-server with TLS did not answer within 10 s")
                time.sleep(0.05)
        probe.close()

    @property
    def url(self) -> str:
        return f"rediss://:{PASSWORD}@127.0.0.1:{self.port}/0?ssl_ca_certs={self.ca}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSRedis]:
    server = TLSRedis(tmp_path_factory.mktemp("tls-redis"))
    yield server
    server.stop()


def test_tls_works_for_client_server_and_api(tls_redis: TLSRedis, tmp_path: Path) -> None:
    url = tls_redis.url
    admin = redis.Redis.from_url(url)
    admin.flushall()
    client = Client(url)
    server = ServerProcess(url, "-w", "2", log=tmp_path / "server.log")
    try:
        client.push(functions.record, ["tls", 1])
        difo.configure(url)
        difo.perform(functions.record, "tls", 2)
        wait_for(lambda: admin.llen("results:tls") == 2, timeout=15)
        assert api.Queue("default", backend=url).size == 0
        assert api.Stats(backend=url).processed >= 0
    finally:
        difo.client.default().close()
        client.close()
        server.stop()
    assert PASSWORD not in server.log()
    admin.close()


def test_tls_with_an_unknown_ca_is_refused_clearly(tls_redis: TLSRedis, tmp_path: Path) -> None:
    # Without the CA the server's certificate cannot be verified: an error, not plain text.
    url = f"rediss://:{PASSWORD}@127.0.0.1:{tls_redis.port}/0"
    client = Client(url)
    try:
        with pytest.raises(BackendUnavailable) as caught:
            client.push(functions.noop, [])
    finally:
        client.close()
    assert PASSWORD not in str(caught.value)
    assert "rediss://" in str(caught.value)


def test_plain_redis_to_a_tls_port_fails_clearly(tls_redis: TLSRedis) -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:{tls_redis.port}/0"
    client = Client(url)
    try:
        with pytest.raises(BackendUnavailable) as caught:
            client.push(functions.noop, [])
    finally:
        client.close()
    assert PASSWORD not in str(caught.value)
