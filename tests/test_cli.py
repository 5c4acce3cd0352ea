"""The `difo` command: --version, --help, `enqueue` into the private Redis, and one-line errors
(exit 2 for bad input or settings, 1 for an unreachable Redis, its password masked)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import click
import pytest
import redis
from click.testing import CliRunner, Result

import difo
from difo import unit
from difo.cli import main
from tests.conftest import ROOT, free_port

JID = re.compile(r"^[0-9a-f]{24}$")
CLEAN_ENV = ("DIFO_URL", "REDIS_URL", "WORKERS", "QUEUES", "DIFO_IMPORTS")


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Invoke `difo ...` in-process with only the settings a test gives."""
    for name in CLEAN_ENV:
        monkeypatch.delenv(name, raising=False)
    runner = CliRunner()

    def invoke(*args: str, **env: str) -> Result:
        return runner.invoke(main, list(args), env=env or None)

    return invoke


def one_line_error(result: Result) -> str:
    """The error a failed command printed: exactly one line on stderr, no traceback."""
    assert isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("difo: ")
    assert "Traceback" not in result.output
    return lines[0]


def dead_url(password: str | None = None) -> str:
    port = free_port()  # bound and closed again: nothing listens there
    auth = f":{password}@" if password else ""
    return f"redis://{auth}127.0.0.1:{port}/0"


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


# -- version and help ------------------------------------------------------------------------


def test_version(run: Any) -> None:
    for flag in ("--version", "-V"):
        result = run(flag)
        assert result.exit_code == 0
        assert difo.__version__ in result.stdout
        assert "difo" in result.stdout


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in group.commands.items():
        yield (*prefix, name)
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))


def test_help_of_the_group_and_of_every_command(run: Any) -> None:
    result = run("--help")
    assert result.exit_code == 0
    names = list(_commands(main))
    assert ("server",) in names and ("enqueue",) in names
    for name in names:
        assert name[-1] in result.stdout or len(name) > 1
        for flag in ("--help", "-h"):
            sub = run(*name, flag)
            assert sub.exit_code == 0, (name, sub.output)
            assert "Usage:" in sub.stdout
            assert " ".join(name) in sub.stdout


def test_help_names_the_settings(run: Any) -> None:
    server_help = run("server", "--help").stdout
    for setting in ("WORKERS", "QUEUES", "DIFO_IMPORTS", "DIFO_TIMEOUT", "--url"):
        assert setting in server_help
    assert "ARGS_JSON" in run("enqueue", "--help").stdout


# -- enqueue -----------------------------------------------------------------------------------


def test_enqueue_stores_a_valid_payload_and_prints_the_jid(
    run: Any, redis_url: str, r: redis.Redis
) -> None:
    before = unit.now()
    result = run("enqueue", "tests.functions:add", "[1, 2]", "--queue", "q",
                 REDIS_URL=redis_url)
    assert result.exit_code == 0, result.output
    jid = result.stdout.strip()
    assert JID.match(jid)
    [raw] = r.lrange("queue:q", 0, -1)  # type: ignore[misc]
    decoded = unit.decode(raw)
    assert decoded.jid == jid
    assert decoded.class_name == "tests.functions:add"
    assert decoded.args == [1, 2]
    assert decoded.queue == "q"
    assert decoded.payload["retry"] is True
    assert before <= decoded.payload["created_at"] <= unit.now()
    assert isinstance(decoded.payload["enqueued_at"], float)
    assert re.search(rb'"enqueued_at":\d+\.\d+', raw)
    assert r.smembers("queues") == {b"q"}


def test_enqueue_defaults_to_the_default_queue_and_no_args(
    run: Any, redis_url: str, r: redis.Redis
) -> None:
    result = run("enqueue", "tests.functions:noop", DIFO_URL=redis_url,
                 REDIS_URL=dead_url())
    assert result.exit_code == 0, result.output
    [payload] = [json.loads(x) for x in r.lrange("queue:default", 0, -1)]  # type: ignore[union-attr]
    assert payload["jid"] == result.stdout.strip()
    assert payload["args"] == []


def test_enqueue_url_flag_wins_over_the_environment(
    run: Any, redis_url: str, r: redis.Redis
) -> None:
    result = run("enqueue", "tests.functions:add", "[3, 4]", "--url", redis_url,
                 REDIS_URL=dead_url(), DIFO_URL=dead_url())
    assert result.exit_code == 0, result.output
    assert r.llen("queue:default") == 1


def test_enqueue_json_values_are_kept_exactly(run: Any, redis_url: str, r: redis.Redis) -> None:
    args = '["ünï", 1.0, [], {}, 1180591620717411303424, null, true, {"a": [1e-300]}]'
    result = run("enqueue", "tests.functions:record", args, REDIS_URL=redis_url)
    assert result.exit_code == 0, result.output
    [raw] = r.lrange("queue:default", 0, -1)  # type: ignore[misc]
    assert '"args":["ünï",1.0,[],{},1180591620717411303424,null,true,{"a":[1e-300]}]' \
        in raw.decode()


def test_enqueue_in_seconds_writes_the_schedule(run: Any, redis_url: str, r: redis.Redis) -> None:
    before = unit.now()
    result = run("enqueue", "tests.functions:add", "[1, 2]", "--in", "120",
                 REDIS_URL=redis_url)
    assert result.exit_code == 0, result.output
    [(raw, score)] = r.zrange("schedule", 0, -1, withscores=True)  # type: ignore[misc]
    payload = json.loads(raw)
    assert payload["jid"] == result.stdout.strip()
    assert "enqueued_at" not in payload
    assert before + 120 <= score <= unit.now() + 120
    assert r.llen("queue:default") == 0


@pytest.mark.parametrize(
    ("args_json", "words"),
    [
        ("[1, 2", "ARGS_JSON is not JSON"),
        ("not json", "ARGS_JSON is not JSON"),
        ("", "ARGS_JSON is not JSON"),
        ('{"a": 1}', "JSON array"),
        ("5", "JSON array"),
        ('"text"', "JSON array"),
        ("null", "JSON array"),
    ],
)
def test_enqueue_bad_args_json_is_a_one_line_error_exit_2(
    run: Any, redis_url: str, r: redis.Redis, args_json: str, words: str
) -> None:
    result = run("enqueue", "tests.functions:add", args_json, REDIS_URL=redis_url)
    assert result.exit_code == 2
    assert words in one_line_error(result)
    assert r.dbsize() == 0


def test_enqueue_arguments_json_cannot_carry_are_refused(
    run: Any, redis_url: str, r: redis.Redis
) -> None:
    for args_json in ("[NaN]", "[1, Infinity]", '[{"a": -Infinity}]'):
        result = run("enqueue", "tests.functions:record", args_json, REDIS_URL=redis_url)
        assert result.exit_code != 0
        one_line_error(result)
    assert r.dbsize() == 0


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (("enqueue", "tests.functions.add", "[]"), "module:function"),
        (("enqueue", "tests.functions:add", "[]", "--queue", "bad/queue"), "--queue"),
        (("enqueue", "tests.functions:add", "[]", "--queue", ""), "--queue"),
        (("enqueue", "tests.functions:add", "[]", "--url", "http://h"), "scheme"),
    ],
)
def test_enqueue_bad_input_is_a_one_line_error_exit_2(
    run: Any, redis_url: str, r: redis.Redis, argv: tuple[str, ...], words: str
) -> None:
    result = run(*argv, REDIS_URL=redis_url)
    assert result.exit_code == 2
    assert words in one_line_error(result)
    assert r.dbsize() == 0


def test_enqueue_refuses_a_queue_option_naming_two_queues(
    run: Any, redis_url: str, r: redis.Redis
) -> None:
    result = run("enqueue", "tests.functions:add", "[1, 2]", "--queue", "a b",
                 REDIS_URL=redis_url)
    assert result.exit_code == 2
    assert r.dbsize() == 0


def test_enqueue_to_an_unreachable_redis_names_the_url(run: Any) -> None:
    url = dead_url()
    result = run("enqueue", "tests.functions:add", "[1, 2]", REDIS_URL=url)
    assert result.exit_code == 1
    message = one_line_error(result)
    assert url in message
    assert "unreachable" in message


def test_enqueue_to_an_unreachable_redis_masks_the_password(run: Any) -> None:
    secret = f"pw-{uuid.uuid4().hex}"
    url = dead_url(secret)
    for env in ({"REDIS_URL": url}, {"DIFO_URL": url}):
        result = run("enqueue", "tests.functions:add", "[1, 2]", **env)
        assert result.exit_code == 1
        message = one_line_error(result)
        assert url.replace(secret, "***") in message
        assert secret not in result.output
    result = run("enqueue", "tests.functions:add", "[1, 2]", "--url", url)
    assert secret not in result.output
    assert url.replace(secret, "***") in one_line_error(result)


# -- server settings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "flags", "words"),
    [
        ({"WORKERS": "abc"}, (), "WORKERS"),
        ({"WORKERS": "0"}, (), "WORKERS"),
        ({}, ("--workers", "0"), "WORKERS"),
        ({"QUEUES": ""}, (), "QUEUES"),
        ({"QUEUES": "bad/name"}, (), "QUEUES"),
        ({}, ("--queues", "a:0"), "--queues"),
        ({"REDIS_URL": "http://h"}, (), "REDIS_URL"),
        ({"DIFO_URL": "redis://h/abc"}, (), "DIFO_URL"),
        ({"DIFO_TIMEOUT": "soon"}, (), "DIFO_TIMEOUT"),
    ],
)
def test_server_bad_settings_are_a_one_line_error_exit_2(
    run: Any, env: dict[str, str], flags: tuple[str, ...], words: str
) -> None:
    result = run("server", *flags, **env)
    assert result.exit_code == 2
    assert words in one_line_error(result)


def test_server_with_a_bad_flag_type_is_a_usage_error(run: Any) -> None:
    result = run("server", "--workers", "many")
    assert result.exit_code == 2
    assert "--workers" in result.output


# -- the real command, as a subprocess ---------------------------------------------------------


def test_python_m_difo_cli_enqueues(redis_url: str, r: redis.Redis) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "difo.cli", "enqueue", "tests.functions:add", "[1, 2]",
         "--queue", "q"],
        cwd=ROOT, env=subprocess_env(REDIS_URL=redis_url), capture_output=True, text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    jid = done.stdout.strip()
    assert JID.match(jid)
    [raw] = r.lrange("queue:q", 0, -1)  # type: ignore[misc]
    assert unit.decode(raw).jid == jid
    version = subprocess.run(
        [sys.executable, "-m", "difo.cli", "--version"], cwd=ROOT, env=subprocess_env(),
        capture_output=True, text=True, timeout=60,
    )
    assert version.returncode == 0
    assert difo.__version__ in version.stdout


@pytest.mark.parametrize(
    ("env", "code", "words"),
    [
        ({"WORKERS": "abc"}, 2, "WORKERS"),
        ({"REDIS_URL": "redis://:s3cr3tpw@127.0.0.1:{port}/0"}, 1, "redis://:***@127.0.0.1"),
    ],
)
def test_python_m_difo_cli_server_fails_in_one_line(
    env: dict[str, str], code: int, words: str
) -> None:
    env = {k: v.format(port=free_port()) for k, v in env.items()}
    done = subprocess.run(
        [sys.executable, "-m", "difo.cli", "server", "--import", "tests.functions"],
        cwd=ROOT, env=subprocess_env(**env), capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == code, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("difo: ")
    assert words in lines[0]
    assert "s3cr3tpw" not in done.stderr + done.stdout
