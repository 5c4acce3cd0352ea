"""The Redis backend: Sidekiq's layout and payloads, plus difo's reliable-fetch records.

Every write that moves a unit is one Lua script (lua/), so a unit is always in exactly one
place. Scripts move payload bytes and never re-encode them: cjson would turn `[]` into `{}`
and drop the `.0` of float times. Redis errors become BackendError / BackendUnavailable.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from difo.backends import (
    BeatReply,
    Claimed,
    FunctionTimes,
    Placement,
    ProcessBeat,
    ProcessRecord,
    Staged,
    StatsSnapshot,
)
from difo.backends.redis import keys, scripts
from difo.config import BackendURL
from difo.errors import BackendError, BackendUnavailable

# A claim blocks for a wake-up at most this long, so the socket must wait longer.
SOCKET_TIMEOUT = 10.0


def connect(url: BackendURL, **extra: Any) -> redis.Redis:
    """A client for `url`; redis-py's own retries are off (a retried claim could run twice)."""
    return redis.Redis(**connection_options(url, retry=Retry(NoBackoff(), 0), **extra))


def connection_options(url: BackendURL, **extra: Any) -> dict[str, Any]:
    """redis-py's keyword arguments for `url` (shared by the sync and asyncio clients)."""
    options: dict[str, Any] = {
        "db": url.db,
        "username": url.username,
        "password": url.password,
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_connect_timeout": 5.0,
        "health_check_interval": 30,
    }
    if url.scheme == "unix":
        options["unix_socket_path"] = url.path
    else:
        options["host"] = url.host
        options["port"] = url.port
    if url.scheme == "rediss":
        options["ssl"] = True
        tls = dict(url.options)
        for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs"):
            if name in tls:
                options[name] = tls[name]
        if "ssl_check_hostname" in tls:
            options["ssl_check_hostname"] = tls["ssl_check_hostname"].lower() in ("1", "true",
                                                                                 "yes")
    options.update(extra)
    return options


class RedisBackend:
    """The Backend protocol over one Redis (or Valkey) database."""

    def __init__(self, url: BackendURL) -> None:
        self.url = url.masked
        self._parsed = url
        self._pid = os.getpid()
        self._client = connect(url)
        self._scripts = scripts.load(self._client)
        self._stage_seq = itertools.count()

    @property
    def client(self) -> redis.Redis:
        """The redis-py client (reopened after a fork: connections are not shared)."""
        if os.getpid() != self._pid:
            self._pid = os.getpid()
            self._client = connect(self._parsed)
            self._scripts = scripts.load(self._client)
        return self._client

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except redis.AuthenticationError as exc:
            raise BackendUnavailable(f"Redis at {self.url} refused the password: {exc}") from exc
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise BackendUnavailable(f"Redis at {self.url} is unreachable: {exc}") from exc
        except redis.RedisError as exc:
            raise BackendError(f"Redis at {self.url} failed: {exc}") from exc

    def _run(self, name: str, keys_: Sequence[str], args: Sequence[Any]) -> Any:
        # EVALSHA sent directly: redis-py's Script.__call__ goes through a deprecation
        # wrapper that costs more than the rest of a push (docs/performance.md).
        client = self.client
        script = self._scripts[name]
        with self._errors():
            try:
                return client.execute_command(  # type: ignore[no-untyped-call]
                    "EVALSHA", script.sha, len(keys_), *keys_, *args)
            except redis.exceptions.NoScriptError:
                # Not run at all (a restarted or flushed Redis): load it, then run it once.
                script.sha = client.script_load(script.script)
                return client.execute_command(  # type: ignore[no-untyped-call]
                    "EVALSHA", script.sha, len(keys_), *keys_, *args)

    # -- connection ------------------------------------------------------------------------

    def ping(self) -> None:
        with self._errors():
            self.client.ping()

    def warnings(self) -> list[str]:
        with self._errors():
            policy = cast(dict[str, str], self.client.config_get("maxmemory-policy"))
        value = policy.get("maxmemory-policy", "noeviction")
        if value in ("noeviction", b"noeviction"):
            return []
        return [
            f"Redis at {self.url} has maxmemory-policy {value!r}: under memory pressure it "
            "deletes keys, units included; set it to noeviction"
        ]

    def info(self) -> dict[str, str]:
        with self._errors():
            found = self.client.info()
        out = {"backend": "redis", "url": self.url}
        for name in ("redis_version", "used_memory_human", "used_memory_peak_human",
                     "connected_clients", "uptime_in_seconds", "maxmemory_policy"):
            if name in found:
                out[name] = str(found[name])
        return out

    def close(self) -> None:
        self.client.close()

    # -- client side -----------------------------------------------------------------------

    def push(self, queue: str, payloads: Sequence[bytes]) -> None:
        # push.lua's EVALSHA written on a pool connection by hand: redis-py's execute_command
        # (retries, which are off here, and its observability hooks) and its packer (a Python
        # loop over the arguments) cost more than a bare LPUSH round trip, so a perform was
        # 0.76x of one (docs/performance.md).
        if not payloads:
            return
        keys_ = (keys.QUEUES, keys.queue(queue), keys.wake(queue))
        command = ("EVALSHA", self._scripts["push"].sha, 3, *keys_, queue, *payloads)
        try:
            pool = self.client.connection_pool
            connection = pool.get_connection()
            try:
                if redis.utils.HIREDIS_AVAILABLE:
                    import hiredis  # redis[hiredis]: already imported by redis-py

                    packed: Any = [hiredis.pack_command(command)]
                else:
                    packed = connection.pack_command(*command)  # type: ignore[no-untyped-call]
                connection.send_packed_command(packed)  # type: ignore[no-untyped-call]
                connection.read_response()
                return
            finally:
                # A connection that failed mid-command was closed by redis-py; the pool
                # reopens it on its next use.
                pool.release(connection)
        except redis.exceptions.NoScriptError:
            pass  # not run at all (a restarted or flushed Redis): _run loads it and runs it
        except redis.RedisError:
            with self._errors():
                raise
        self._run("push", keys_, (queue, *payloads))

    def schedule(self, entries: Sequence[tuple[float, bytes]]) -> None:
        if entries:
            mapping = {raw: at for at, raw in entries}
            with self._errors():
                self.client.zadd(keys.SCHEDULE, mapping)

    # -- fetch -----------------------------------------------------------------------------

    def claim(
        self, identity: str, queues: Sequence[str], count: int, acks: Sequence[str],
        careful_acks: Sequence[str], first_seq: int,
    ) -> list[Claimed]:
        keys_, args = _claim_call(identity, queues, count, acks, careful_acks, first_seq)
        return _claimed(self._run("claim", keys_, args), queues, first_seq)

    def wait_claim(
        self, identity: str, queues: Sequence[str], timeout: float, count: int,
        acks: Sequence[str], careful_acks: Sequence[str], first_seq: int,
    ) -> list[Claimed]:
        # Pipelined: the acks (a claim of 0), BLPOP, the claim. Redis runs the claim the
        # moment BLPOP returns, with no round trip between them (once a timeout, when
        # nothing woke it).
        script = self._scripts["claim"]
        calls = [_claim_call(identity, queues, 0, acks, careful_acks, first_seq)] if acks else []
        calls.append(_claim_call(identity, queues, count, (), (), first_seq))
        wakes = [keys.wake(name) for name in queues]
        with self._errors():
            for attempt in (1, 2):
                pipe = self.client.pipeline(transaction=False)
                for keys_, args in calls[:-1]:
                    pipe.execute_command(  # type: ignore[no-untyped-call]
                        "EVALSHA", script.sha, len(keys_), *keys_, *args)
                pipe.blpop(wakes, timeout=timeout)
                keys_, args = calls[-1]
                pipe.execute_command(  # type: ignore[no-untyped-call]
                    "EVALSHA", script.sha, len(keys_), *keys_, *args)
                replies = pipe.execute(raise_on_error=False)
                if not any(isinstance(reply, redis.exceptions.NoScriptError)
                           for reply in replies) or attempt == 2:
                    break
                # Nothing ran but BLPOP (a restarted or flushed Redis): load, then again,
                # without blocking: the wake-up, if any, was taken.
                script.sha = self.client.script_load(script.script)
                timeout = 0.001
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
        return _claimed(replies[-1], queues, first_seq)

    def mark_started(self, identity: str, refs: Sequence[str]) -> None:
        if refs:
            with self._errors():
                self.client.sadd(keys.started(identity), *refs)

    def in_flight(self, identity: str) -> list[str]:
        with self._errors():
            refs = cast(list[bytes], self.client.hkeys(keys.in_flight(identity)))
        return [ref.decode() for ref in refs]

    def requeue(self, identity: str, units: Sequence[tuple[str, str]]) -> int:
        if not units:
            return 0
        moved = 0
        for start in range(0, len(units), 500):
            chunk = units[start : start + 500]
            keys_ = [keys.in_flight(identity), keys.started(identity), keys.QUEUES]
            args: list[str] = []
            for ref, queue in chunk:
                keys_ += [keys.queue(queue), keys.wake(queue)]
                args += [ref, queue]
            moved += int(self._run("requeue", keys_, args))
        return moved

    def retry_later(self, identity: str, ref: str, raw: bytes, at: float) -> None:
        keys_ = (keys.in_flight(identity), keys.started(identity), keys.RETRY)
        self._run("retry", keys_, (ref, repr(float(at)), raw))

    def kill(self, identity: str, ref: str, raw: bytes, *, staged: bool = False) -> None:
        record = keys.staging(identity) if staged else keys.in_flight(identity)
        keys_ = (record, keys.started(identity), keys.DEAD)
        self._run("kill", keys_, (ref, raw, keys.DEAD_MAX, keys.DEAD_TIMEOUT))

    def discard(self, identity: str, ref: str) -> None:
        self._run("discard", (keys.in_flight(identity), keys.started(identity)), (ref,))

    # -- moving units between places -------------------------------------------------------

    def stage_due(self, identity: str, limit: int) -> list[Staged]:
        prefix = f"p|{identity}|{next(self._stage_seq)}."
        keys_ = (keys.staging(identity), keys.RETRY, keys.SCHEDULE)
        reply = self._run("stage_due", keys_, (limit, prefix))
        return [_staged(ref.decode(), raw) for ref, raw in zip(reply[::2], reply[1::2],
                                                                strict=True)]

    def take_orphans(self, identity: str, dead_after: float) -> list[Staged]:
        client = self.client
        with self._errors():
            clock = client.time()
            cutoff = clock[0] + clock[1] / 1e6 - dead_after
            dead = cast(list[bytes], client.zrangebyscore(keys.BEATS, "-inf", cutoff))
            if not dead:
                return []
            lock = client.set(keys.RECOVERY_LOCK, identity, nx=True, px=60_000)
            if not lock:
                return []
        staged: list[Staged] = []
        try:
            for owner in (name.decode() for name in dead):
                if owner == identity:
                    continue
                keys_ = (keys.BEATS, keys.in_flight(owner), keys.started(owner),
                         keys.staging(owner), keys.staging(identity))
                reply = self._run("take_orphans", keys_, (owner, dead_after))
                for ref, raw in zip(reply[::2], reply[1::2], strict=False):
                    staged.append(_staged(ref.decode(), raw))
                self._forget_if_dead(owner)
        finally:
            with self._errors():
                if client.get(keys.RECOVERY_LOCK) == identity.encode():
                    client.delete(keys.RECOVERY_LOCK)
        return staged

    def release(self, identity: str, placements: Sequence[Placement]) -> None:
        for start in range(0, len(placements), 500):
            chunk = placements[start : start + 500]
            keys_ = [keys.staging(identity), keys.QUEUES, keys.DEAD]
            args: list[Any] = [keys.DEAD_MAX, keys.DEAD_TIMEOUT]
            for placement in chunk:
                where = "dead" if placement.dead else ("tail" if placement.front else "head")
                name = placement.queue or "default"
                keys_ += [keys.queue(name), keys.wake(name)]
                args += [placement.ref, where, name, placement.raw]
            self._run("release", keys_, args)

    # -- processes -------------------------------------------------------------------------

    def beat(self, beat: ProcessBeat) -> BeatReply:
        client = self.client
        identity = beat.identity
        day = time.strftime("%Y-%m-%d", time.gmtime())
        started = time.perf_counter()
        with self._errors():
            # Sidekiq times a PING for rtt_us; it also makes a beat fail fast when Redis is
            # gone (tests/redis/test_server.py denies PING to simulate an outage).
            client.ping()
            rtt_us = int((time.perf_counter() - started) * 1e6)
            pipe = client.pipeline(transaction=True)
            for kind, count in (("processed", beat.processed), ("failed", beat.failed)):
                if count:
                    pipe.incrby(f"stat:{kind}", count)
                    pipe.incrby(keys.stat_day(kind, day), count)
                    pipe.expire(keys.stat_day(kind, day), keys.STAT_DAY_TTL)
            for work_key in keys.work(identity):
                pipe.unlink(work_key)
                if beat.work:
                    pipe.hset(work_key, mapping=beat.work)  # type: ignore[arg-type]
                    pipe.expire(work_key, keys.PROCESS_TTL)
            if beat.functions:
                _add_functions(pipe, keys.metrics(beat.minute), beat.functions)
                pipe.expire(keys.metrics(beat.minute), keys.METRICS_TTL)
                _add_functions(pipe, keys.METRICS_TOTAL, beat.functions)
            # EVAL, not the script object: in a pipeline redis-py sends SCRIPT EXISTS first,
            # a round trip more per beat; Redis caches the compiled body after the first.
            pipe.execute_command(  # type: ignore[no-untyped-call]
                "EVAL", self._scripts["beat"].script, 1, keys.BEATS, identity)
            pipe.sadd(keys.PROCESSES, identity)
            pipe.hset(keys.process(identity), mapping={
                "info": beat.info,
                "busy": beat.busy,
                "beat": repr(time.time()),
                "quiet": "true" if beat.quiet else "false",
                "rss": beat.rss_kb,
                "rtt_us": rtt_us,
                "concurrency": beat.concurrency,
                "stopping": "true" if beat.stopping else "false",
            })
            pipe.expire(keys.process(identity), keys.PROCESS_TTL)
            pipe.rpop(keys.signals(identity))
            replies = pipe.execute()
        signal = replies[-1]
        now = float(replies[-5])
        return BeatReply(now, signal.decode() if signal else None)

    def forget_process(self, identity: str) -> None:
        with self._errors():
            pipe = self.client.pipeline(transaction=True)
            pipe.srem(keys.PROCESSES, identity)
            pipe.zrem(keys.BEATS, identity)
            pipe.unlink(*keys.work(identity))
            pipe.execute()

    # -- periodic units ----------------------------------------------------------------------

    def fire_periodic(self, name: str, tick: float, queue: str, raw: bytes) -> bool:
        keys_ = (keys.PERIODIC, keys.QUEUES, keys.queue(queue), keys.wake(queue))
        return bool(self._run("fire_periodic", keys_, (name, repr(float(tick)), queue, raw)))

    def periodic_ticks(self) -> dict[str, float]:
        with self._errors():
            ticks = cast(dict[bytes, bytes], self.client.hgetall(keys.PERIODIC))
        return {name.decode(): float(tick) for name, tick in ticks.items()}

    # -- the read and manage side (difo.api) -------------------------------------------------

    def queue_names(self) -> list[str]:
        with self._errors():
            names = cast(set[bytes], self.client.smembers(keys.QUEUES))
        return sorted(name.decode() for name in names)

    def queue_sizes(self, names: Sequence[str]) -> dict[str, int]:
        with self._errors():
            pipe = self.client.pipeline(transaction=False)
            for name in names:
                pipe.llen(keys.queue(name))
            sizes = pipe.execute()
        return dict(zip(names, (int(size) for size in sizes), strict=True))

    def queue_range(self, name: str, start: int, stop: int) -> list[bytes]:
        with self._errors():
            return cast(list[bytes], self.client.lrange(keys.queue(name), start, stop))

    def queue_remove(self, name: str, raw: bytes) -> bool:
        with self._errors():
            return int(self.client.lrem(keys.queue(name), 1, raw)) > 0  # type: ignore[arg-type]

    def queue_clear(self, name: str) -> int:
        with self._errors():
            pipe = self.client.pipeline(transaction=True)
            pipe.llen(keys.queue(name))
            pipe.unlink(keys.queue(name))
            pipe.srem(keys.QUEUES, name)
            size = pipe.execute()[0]
        return int(size)

    def set_size(self, name: str) -> int:
        with self._errors():
            return int(self.client.zcard(_sorted_set(name)))

    def set_range(
        self, name: str, start: int, stop: int, newest_first: bool
    ) -> list[tuple[bytes, float]]:
        with self._errors():
            entries = self.client.zrange(_sorted_set(name), start, stop, desc=newest_first,
                                         withscores=True)
        return [(raw, float(score)) for raw, score in cast(list[tuple[bytes, float]], entries)]

    def set_at_score(self, name: str, score: float) -> list[tuple[bytes, float]]:
        with self._errors():
            entries = self.client.zrangebyscore(_sorted_set(name), score, score, withscores=True)
        return [(raw, float(s)) for raw, s in cast(list[tuple[bytes, float]], entries)]

    def set_scan(self, name: str, match: str) -> list[tuple[bytes, float]]:
        with self._errors():
            found = self.client.zscan_iter(_sorted_set(name), match=match, count=1000)
            return [(raw, float(score)) for raw, score in found]

    def set_remove(self, name: str, raw: bytes) -> bool:
        with self._errors():
            return int(self.client.zrem(_sorted_set(name), raw)) > 0

    def set_clear(self, name: str) -> int:
        with self._errors():
            pipe = self.client.pipeline(transaction=True)
            pipe.zcard(_sorted_set(name))
            pipe.unlink(_sorted_set(name))
            size = pipe.execute()[0]
        return int(size)

    def set_to_queue(self, name: str, raw: bytes, queue: str, new_raw: bytes) -> bool:
        keys_ = (_sorted_set(name), keys.QUEUES, keys.queue(queue), keys.wake(queue))
        return bool(self._run("move_to_queue", keys_, (raw, queue, new_raw)))

    def set_to_dead(self, name: str, raw: bytes, new_raw: bytes) -> bool:
        keys_ = (_sorted_set(name), keys.DEAD)
        return bool(self._run("move_to_dead", keys_,
                              (raw, new_raw, keys.DEAD_MAX, keys.DEAD_TIMEOUT)))

    def set_add(self, name: str, score: float, raw: bytes) -> None:
        with self._errors():
            self.client.zadd(_sorted_set(name), {raw: score})


    # -- statistics, processes and control ----------------------------------------------------

    def stats(self) -> StatsSnapshot:
        client = self.client
        with self._errors():
            pipe = client.pipeline(transaction=False)
            pipe.get(keys.STAT_PROCESSED)
            pipe.get(keys.STAT_FAILED)
            for name in keys.SORTED_SETS:
                pipe.zcard(name)
            pipe.smembers(keys.QUEUES)
            pipe.smembers(keys.PROCESSES)
            pipe.smembers(keys.PAUSED)
            processed, failed, scheduled, retry, dead, queues, processes, paused = pipe.execute()
            names = sorted(name.decode() for name in queues)
            identities = sorted(name.decode() for name in processes)
            pipe = client.pipeline(transaction=False)
            for name in names:
                pipe.llen(keys.queue(name))
                pipe.lrange(keys.queue(name), -1, -1)
            for identity in identities:
                pipe.hget(keys.process(identity), "busy")
            replies = pipe.execute()
        sizes: dict[str, int] = {}
        oldest: dict[str, bytes] = {}
        for index, name in enumerate(names):
            sizes[name] = int(replies[2 * index])
            if replies[2 * index + 1]:
                oldest[name] = replies[2 * index + 1][0]
        busy = sum(int(value) for value in replies[2 * len(names):] if value)
        return StatsSnapshot(
            processed=int(processed or 0), failed=int(failed or 0), queues=sizes,
            oldest=oldest, scheduled=int(scheduled), retry=int(retry), dead=int(dead),
            processes=len(identities), busy=busy,
            paused=frozenset(name.decode() for name in paused),
        )

    def day_counts(self, days: Sequence[str]) -> list[tuple[int, int]]:
        if not days:
            return []
        names = [keys.stat_day(kind, day) for kind in ("processed", "failed") for day in days]
        with self._errors():
            values = cast(list[bytes | None], self.client.mget(names))
        counts = [int(value) if value else 0 for value in values]
        return list(zip(counts[: len(days)], counts[len(days):], strict=True))

    def processes(self) -> list[ProcessRecord]:
        client = self.client
        with self._errors():
            identities = sorted(name.decode() for name in
                                cast(set[bytes], client.smembers(keys.PROCESSES)))
            pipe = client.pipeline(transaction=False)
            for identity in identities:
                pipe.hgetall(keys.process(identity))
            hashes = cast(list[dict[bytes, bytes]], pipe.execute())
            # Sidekiq's ProcessSet cleanup: a member whose hash expired has died.
            expired = [identity for identity, fields in zip(identities, hashes, strict=True)
                       if b"info" not in fields]
            if expired:
                client.srem(keys.PROCESSES, *expired)
        return [_process_record(identity, fields)
                for identity, fields in zip(identities, hashes, strict=True)
                if b"info" in fields]

    def work(self, identities: Sequence[str]) -> dict[str, dict[str, bytes]]:
        with self._errors():
            pipe = self.client.pipeline(transaction=False)
            for identity in identities:
                for name in keys.work(identity):
                    pipe.hgetall(name)
            replies = cast(list[dict[bytes, bytes]], pipe.execute())
        out: dict[str, dict[str, bytes]] = {}
        for index, identity in enumerate(identities):
            merged: dict[str, bytes] = {}
            # 6.4.1 processes write `:workers`, newer ones `:work`; difo writes both.
            for fields in (replies[2 * index], replies[2 * index + 1]):
                merged.update((tid.decode(), value) for tid, value in fields.items())
            out[identity] = merged
        return out

    def signal(self, identity: str, name: str) -> None:
        with self._errors():
            pipe = self.client.pipeline(transaction=True)
            pipe.lpush(keys.signals(identity), name)
            pipe.expire(keys.signals(identity), keys.PROCESS_TTL)
            pipe.execute()

    def pause(self, queue: str) -> None:
        with self._errors():
            self.client.sadd(keys.PAUSED, queue)

    def unpause(self, queue: str) -> None:
        with self._errors():
            pipe = self.client.pipeline(transaction=True)
            pipe.srem(keys.PAUSED, queue)
            pipe.lpush(keys.wake(queue), "1")
            pipe.ltrim(keys.wake(queue), 0, 15)
            pipe.execute()

    def paused(self) -> set[str]:
        with self._errors():
            return {name.decode() for name in
                    cast(set[bytes], self.client.smembers(keys.PAUSED))}

    def function_metrics(self, minutes: Sequence[str]) -> list[dict[str, FunctionTimes]]:
        with self._errors():
            pipe = self.client.pipeline(transaction=False)
            for minute in minutes:
                pipe.hgetall(keys.metrics(minute))
            replies = cast(list[dict[bytes, bytes]], pipe.execute())
        return [_read_functions(fields) for fields in replies]

    def function_totals(self) -> dict[str, FunctionTimes]:
        with self._errors():
            fields = cast(dict[bytes, bytes], self.client.hgetall(keys.METRICS_TOTAL))
        return _read_functions(fields)

    def _forget_if_dead(self, owner: str) -> None:
        """After recovery: a server whose liveness beat is gone leaves the registry now,
        not when its record expires (it re-registers at its next beat if it was only slow)."""
        with self._errors():
            if self.client.zscore(keys.BEATS, owner) is not None:
                return
            pipe = self.client.pipeline(transaction=True)
            pipe.srem(keys.PROCESSES, owner)
            pipe.unlink(keys.process(owner), *keys.work(owner))
            pipe.execute()


def _add_functions(pipe: Any, key: str, functions: dict[str, FunctionTimes]) -> None:
    for name, times in functions.items():
        if times.count:
            pipe.hincrby(key, f"{name}|count", times.count)
        if times.failures:
            pipe.hincrby(key, f"{name}|failures", times.failures)
        if times.seconds:
            pipe.hincrbyfloat(key, f"{name}|ms", round(times.seconds * 1000, 3))
        for bucket, count in times.buckets.items():
            pipe.hincrby(key, f"{name}|h{bucket}", count)


def _read_functions(fields: dict[bytes, bytes]) -> dict[str, FunctionTimes]:
    out: dict[str, FunctionTimes] = {}
    for field_name, value in fields.items():
        name, _, kind = field_name.decode("utf-8", "replace").rpartition("|")
        times = out.get(name)
        if times is None:
            times = out[name] = FunctionTimes()
        if kind == "count":
            times.count = int(value)
        elif kind == "failures":
            times.failures = int(value)
        elif kind == "ms":
            times.seconds = float(value) / 1000
        elif kind.startswith("h") and kind[1:].isdigit():
            times.buckets[int(kind[1:])] = int(value)
    return out


def _process_record(identity: str, fields: dict[bytes, bytes]) -> ProcessRecord:
    def number(name: bytes) -> float:
        try:
            return float(fields.get(name) or 0)
        except ValueError:
            return 0.0

    concurrency = fields.get(b"concurrency")
    return ProcessRecord(
        identity=identity, info=fields[b"info"], busy=int(number(b"busy")),
        beat=number(b"beat"), quiet=fields.get(b"quiet") == b"true",
        stopping=fields.get(b"stopping") == b"true", rss_kb=int(number(b"rss")),
        rtt_us=int(number(b"rtt_us")),
        concurrency=int(number(b"concurrency")) if concurrency else None,
    )


def _sorted_set(name: str) -> str:
    if name not in keys.SORTED_SETS:
        raise ValueError(f"{name!r} is not one of {keys.SORTED_SETS}")
    return name


def _staged(ref: str, raw: bytes) -> Staged:
    """Read a staging ref `<flag>|<owner>|<inner ref>`; `<inner>` is `<seq>:<queue>`."""
    flag, owner, inner = ref.split("|", 2)
    queue = inner.partition(":")[2]
    return Staged(ref, queue, raw, owner, started=flag == "s", counted=flag != "p")


def _claim_call(
    identity: str, queues: Sequence[str], count: int, acks: Sequence[str],
    careful_acks: Sequence[str], first_seq: int,
) -> tuple[list[str], list[Any]]:
    """claim.lua's keys and arguments."""
    keys_ = [keys.in_flight(identity), keys.started(identity)]
    keys_ += [keys.queue(name) for name in queues]
    keys_ += [keys.wake(name) for name in queues]
    keys_.append(keys.PAUSED)
    args: list[Any] = [count, first_seq, len(acks), len(careful_acks), *acks, *careful_acks]
    args += queues
    return keys_, args


def _claimed(reply: list[Any], queues: Sequence[str], first_seq: int) -> list[Claimed]:
    """claim.lua's reply as claimed units, numbered from `first_seq`."""
    claimed = []
    seq = first_seq
    for index, raw in zip(reply[::2], reply[1::2], strict=False):
        queue = queues[index - 1]
        claimed.append(Claimed(f"{seq}:{queue}", queue, raw))
        seq += 1
    return claimed
