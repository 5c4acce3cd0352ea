"""difo.aio: the asyncio client writes what the sync client writes, without blocking the loop."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import redis

import difo
import difo.aio
from difo.backends import open_backend
from tests import functions
from tests.conftest import free_port


@pytest.fixture
def aclient(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> difo.aio.AsyncClient:
    monkeypatch.setenv("DIFO_TEST_REDIS", redis_url)
    return difo.aio.configure(redis_url)


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_perform_writes_a_sidekiq_payload_and_a_wake_up(aclient, r: redis.Redis) -> None:
    async def main() -> str:
        jid = await difo.aio.perform(functions.add, 1, 2)
        await difo.aio.close()
        return jid

    jid = run(main())
    raw = r.lrange("queue:default", 0, -1)
    assert len(raw) == 1
    payload = json.loads(raw[0])
    assert payload["jid"] == jid and payload["class"] == "tests.functions:add"
    assert payload["args"] == [1, 2] and payload["queue"] == "default"
    assert isinstance(payload["enqueued_at"], float)
    assert r.smembers("queues") == {b"default"}
    assert r.llen("difo:wake:default") == 1


def test_same_fields_as_the_sync_client(aclient, client, r: redis.Redis) -> None:
    difo.perform(functions.send_welcome, 7)
    run(difo.aio.perform(functions.send_welcome, 8))
    first, second = (json.loads(x) for x in r.lrange("queue:mail", 0, -1))
    assert set(first) == set(second)
    assert first["retry"] == second["retry"] == 3


def test_perform_on_in_at_and_bulk(aclient, r: redis.Redis) -> None:
    async def main() -> list[str]:
        jids = [await difo.aio.perform_on("other", functions.add, 1, 1)]
        jids.append(await difo.aio.perform_in(60, functions.add, 2, 2))
        jids.append(await difo.aio.perform_in(timedelta(seconds=30), functions.add, 3, 3))
        past = datetime.now(timezone.utc) - timedelta(seconds=5)
        jids.append(await difo.aio.perform_at(past, functions.add, 4, 4, queue="other"))
        jids += await difo.aio.perform_bulk(functions.add, [[5, 5], [6, 6]], queue="bulk")
        jids += await difo.aio.perform_bulk(functions.add, ([i, i] for i in range(2500)))
        return jids

    jids = run(main())
    assert len(jids) == 4 + 2 + 2500 and len(set(jids)) == len(jids)
    assert r.llen("queue:other") == 2
    assert r.zcard("schedule") == 2
    assert r.llen("queue:bulk") == 2
    assert r.llen("queue:default") == 2500


def test_refused_arguments_write_nothing_with_the_sync_message(aclient, r: redis.Redis) -> None:
    with pytest.raises(difo.ArgumentError) as sync_error:
        difo.client.Client("redis://127.0.0.1:1/0").prepare(functions.add, (1, {1, 2}))
    with pytest.raises(difo.ArgumentError) as async_error:
        run(difo.aio.perform(functions.add, 1, {1, 2}))
    assert str(async_error.value) == str(sync_error.value)
    with pytest.raises(difo.ArgumentError, match="perform_bulk item 1"):
        run(difo.aio.perform_bulk(functions.add, [[1, 2], [1, datetime.now()]]))
    with pytest.raises(difo.ConfigError):
        run(difo.aio.perform_on("bad queue", functions.add, 1, 2))
    assert r.keys("*") == []


def test_one_pool_per_event_loop(aclient, r: redis.Redis) -> None:
    for n in range(3):  # asyncio.run makes a new loop each time
        run(difo.aio.perform(functions.add, n, n))
    assert r.llen("queue:default") == 3


def test_concurrent_enqueues_from_one_loop(aclient, r: redis.Redis) -> None:
    async def main() -> list[str]:
        return list(await asyncio.gather(*(difo.aio.perform(functions.add, i, i)
                                           for i in range(200))))

    assert len(set(run(main()))) == 200  # type: ignore[arg-type]
    assert r.llen("queue:default") == 200


def test_unreachable_redis_names_the_url() -> None:
    url = f"redis://:secret@127.0.0.1:{free_port()}/0"
    client = difo.aio.AsyncClient(url)
    with pytest.raises(difo.BackendUnavailable) as error:
        run(client.push(functions.add, (1, 2)))
    assert "127.0.0.1" in str(error.value) and "secret" not in str(error.value)


def test_sqlite_runs_the_sync_backend_in_a_thread(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'difo.db'}"
    client = difo.aio.AsyncClient(url)

    async def main() -> None:
        await client.push(functions.add, (1, 2))
        await client.push_at(difo.client.when_from(60, relative=True), functions.add, (3, 4))
        await client.push_bulk(functions.add, [[5, 6], [7, 8]])
        await client.close()

    run(main())
    backend = open_backend(url)
    try:
        assert backend.queue_sizes(["default"]) == {"default": 3}
        assert backend.set_size("schedule") == 1
    finally:
        backend.close()
