"""The server's log: one line per unit in plain or JSON form, and its start-up warnings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import redis

import difo
from tests import functions
from tests.conftest import RedisServer, ServerProcess, wait_for


def _lines(server: Any) -> list[str]:
    return [line for line in server.log().splitlines() if line.strip()]


def test_json_log_has_one_object_per_unit(client: Any, start_server: Any) -> None:
    done = difo.perform(functions.add, 1, 2)
    failed = difo.perform(functions.fail_straight_to_dead, "x")
    server = start_server("--log-format", "json")
    wait_for(lambda: sum('"jid"' in line for line in _lines(server)) >= 2)
    assert server.stop() == 0
    records = [json.loads(line) for line in _lines(server)]  # every line is JSON
    units = {record["jid"]: record for record in records if "jid" in record}
    assert units[done]["function"] == "tests.functions:add"
    assert units[done]["queue"] == "default"
    assert units[done]["outcome"] == "done"
    assert units[done]["duration_ms"] >= 0
    assert units[failed]["outcome"] == "dead"
    assert all(record["level"] in ("INFO", "WARNING", "ERROR") for record in records)


def test_plain_log_names_jid_function_queue_and_outcome(client: Any, start_server: Any) -> None:
    jid = difo.perform_on("mail", functions.add, 1, 2)
    server = start_server("-q", "mail")
    wait_for(lambda: any(jid in line for line in _lines(server)))
    assert server.stop() == 0
    line = next(line for line in _lines(server) if jid in line)
    assert "tests.functions:add" in line and "queue=mail" in line and line.endswith("done")


def test_warning_level_writes_no_line_per_unit(client: Any, start_server: Any,
                                               r: redis.Redis) -> None:
    difo.perform_bulk(functions.add, [[i, i] for i in range(50)])
    server = start_server("--log-level", "WARNING")
    wait_for(lambda: r.llen("results:add") == 50)
    assert server.stop() == 0
    assert _lines(server) == []


def test_an_evicting_redis_is_warned_about(tmp_path: Path) -> None:
    evicting = RedisServer(tmp_path, "--maxmemory", "100mb",
                           "--maxmemory-policy", "allkeys-lru")
    try:
        server = ServerProcess(evicting.url, log=tmp_path / "server.log")
        wait_for(lambda: "maxmemory-policy" in server.log())
        assert server.stop() == 0
        warning = next(line for line in server.log().splitlines()
                       if "maxmemory-policy" in line)
        assert "allkeys-lru" in warning and "noeviction" in warning and "WARNING" in warning
    finally:
        evicting.stop()
