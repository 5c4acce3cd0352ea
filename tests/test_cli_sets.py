"""`difo scheduled|retries|dead` and `difo queues`, run through click's CliRunner against
the private Redis; every change is checked in Redis itself."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
from click.testing import CliRunner, Result

from difo import unit
from difo.cli import main

NOW = unit.now()


def run(redis_url: str, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, [*args, "--url", redis_url], input=input)


def entry(n: int, queue: str = "default", **fields: Any) -> dict[str, Any]:
    return unit.build("tests.functions:record", ["cli", n], queue, fields or None)


def add(r: redis.Redis, key: str, *made: dict[str, Any]) -> list[bytes]:
    raws = [unit.encode(m) for m in made]
    r.zadd(key, {raw: NOW + n for n, raw in enumerate(raws)})
    return raws


@pytest.mark.parametrize(("command", "key"), [
    ("scheduled", "schedule"), ("retries", "retry"), ("dead", "dead"),
])
def test_list_as_json_and_as_a_table(redis_url: str, r: redis.Redis, command: str,
                                     key: str) -> None:
    made = [entry(n, retry_count=n, error_class="ValueError", error_message=f"bad {n}")
            for n in range(3)]
    add(r, key, *made)
    result = run(redis_url, command, "--json")
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    jids = [m["jid"] for m in made]
    assert [item["jid"] for item in listed] == (jids[::-1] if key == "dead" else jids)
    first = next(item for item in listed if item["jid"] == jids[1])
    assert first["args"] == ["cli", 1] and first["retry_count"] == 1
    assert first["error_class"] == "ValueError" and first["where"] == key
    paged = json.loads(run(redis_url, command, "list", "--page", "2", "--size", "2",
                           "--json").stdout)
    assert len(paged) == 1
    table = run(redis_url, command)
    assert table.exit_code == 0, table.output
    assert f"{command}: 3 units" in table.stdout
    for jid in jids:
        assert jid in table.stdout
    assert "ValueError: bad 2" in table.stdout


def test_retry_delete_and_kill_one_unit(redis_url: str, r: redis.Redis) -> None:
    first, second, third = (entry(n, "mail", retry_count=2) for n in range(3))
    raws = add(r, "retry", first, second, third)

    before = unit.now()
    result = run(redis_url, "retries", "retry", first["jid"])
    assert result.exit_code == 0 and first["jid"] in result.stdout
    [moved] = [json.loads(raw) for raw in r.lrange("queue:mail", 0, -1)]
    assert moved["jid"] == first["jid"] and moved["retry_count"] == 1
    assert before <= moved["enqueued_at"] <= unit.now()

    assert run(redis_url, "retries", "delete", second["jid"]).exit_code == 0
    assert r.zscore("retry", raws[1]) is None and r.zscore("dead", raws[1]) is None

    assert run(redis_url, "retries", "kill", third["jid"]).exit_code == 0
    assert r.zcard("retry") == 0
    assert r.zscore("dead", raws[2]) is not None

    assert run(redis_url, "dead", "retry", third["jid"]).exit_code == 0
    assert r.zcard("dead") == 0 and r.llen("queue:mail") == 2


def test_an_unknown_or_missing_jid_is_an_error(redis_url: str, r: redis.Redis) -> None:
    add(r, "schedule", entry(1))
    result = run(redis_url, "scheduled", "delete", "0" * 24)
    assert result.exit_code == 1
    assert f"no unit {'0' * 24} in scheduled" in result.stderr
    result = run(redis_url, "dead", "kill")
    assert result.exit_code == 2 and "needs a JID" in result.output
    assert run(redis_url, "dead", "explode").exit_code == 2
    assert r.zcard("schedule") == 1


def test_retry_all_and_clear(redis_url: str, r: redis.Redis) -> None:
    add(r, "dead", *(entry(n, "q1" if n % 2 else "q2") for n in range(80)))
    result = run(redis_url, "dead", "retry-all")
    assert result.exit_code == 0 and "enqueued 80 units" in result.stdout
    assert r.zcard("dead") == 0 and r.llen("queue:q1") == r.llen("queue:q2") == 40

    add(r, "schedule", *(entry(n) for n in range(5)))
    refused = run(redis_url, "scheduled", "clear", input="n\n")
    assert refused.exit_code == 1 and "Delete all 5 scheduled units?" in refused.output
    assert r.zcard("schedule") == 5
    confirmed = run(redis_url, "scheduled", "clear", input="y\n")
    assert confirmed.exit_code == 0 and r.zcard("schedule") == 0

    add(r, "retry", *(entry(n) for n in range(4)))
    result = run(redis_url, "retries", "clear", "--yes")
    assert result.exit_code == 0 and "deleted 4 units" in result.stdout
    assert not r.exists("retry")


def push(r: redis.Redis, queue: str, *made: dict[str, Any]) -> None:
    for one in made:
        r.lpush(f"queue:{queue}", unit.encode(one))
    r.sadd("queues", queue)


def test_queues_list_and_one_queue(redis_url: str, r: redis.Redis) -> None:
    old = entry(0, "work")
    old["enqueued_at"] = unit.now() - 20
    push(r, "work", old, entry(1, "work"), entry(2, "work"))
    push(r, "other", entry(9, "other"))
    listed = json.loads(run(redis_url, "queues", "--json").stdout)
    by_name = {item["queue"]: item for item in listed}
    assert set(by_name) == {"work", "other"}
    assert by_name["work"]["size"] == 3
    assert 20 <= by_name["work"]["latency"] < 30
    table = run(redis_url, "queues")
    assert table.exit_code == 0 and "work" in table.stdout and "other" in table.stdout
    units = json.loads(run(redis_url, "queues", "work", "--json").stdout)
    assert [u["args"] for u in units] == [["cli", 2], ["cli", 1], ["cli", 0]]  # newest first
    one = run(redis_url, "queues", "work")
    assert one.exit_code == 0 and "queue work: 3 units" in one.stdout


def test_queues_delete_and_clear(redis_url: str, r: redis.Redis) -> None:
    made = [entry(n, "work") for n in range(3)]
    push(r, "work", *made)
    result = run(redis_url, "queues", "work", "--delete", made[1]["jid"])
    assert result.exit_code == 0
    left = [json.loads(raw)["jid"] for raw in r.lrange("queue:work", 0, -1)]
    assert left == [made[2]["jid"], made[0]["jid"]]
    missing = run(redis_url, "queues", "work", "--delete", made[1]["jid"])
    assert missing.exit_code == 1 and "no unit" in missing.stderr

    refused = run(redis_url, "queues", "work", "--clear", input="n\n")
    assert refused.exit_code == 1 and r.llen("queue:work") == 2
    nameless = run(redis_url, "queues", "--clear", "--yes")
    assert nameless.exit_code == 2 and "NAME" in nameless.output
    assert r.llen("queue:work") == 2
    result = run(redis_url, "queues", "work", "--clear", "--yes")
    assert result.exit_code == 0 and "deleted 2 units" in result.stdout
    assert not r.exists("queue:work") and not r.sismember("queues", "work")


def test_an_unreachable_redis_is_a_one_line_error() -> None:
    result = CliRunner().invoke(main, ["dead", "--url", "redis://127.0.0.1:1/0"])
    assert result.exit_code == 1
    assert "127.0.0.1:1" in result.stderr
    assert "Traceback" not in result.output
