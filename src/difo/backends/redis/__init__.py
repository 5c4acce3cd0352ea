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

from difo.backends import BeatReply, Claimed, Placement, ProcessBeat, Staged
from difo.backends.redis import keys, scripts
from difo.config import BackendURL
from difo.errors import BackendError, BackendUnavailable

# A claim blocks for a wake-up at most this long, so the socket must wait longer.
SOCKET_TIMEOUT = 10.0


def connect(url: BackendURL, **extra: Any) -> redis.Redis:
    """A client for `url`; redis-py's own retries are off (a retried claim could run twice)."""
    options: dict[str, Any] = {
        "db": url.db,
        "username": url.username,
        "password": url.password,
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_connect_timeout": 5.0,
        "retry": Retry(NoBackoff(), 0),
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
    options.update(extra)
    return redis.Redis(**options)


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
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise BackendUnavailable(f"Redis at {self.url} is unreachable: {exc}") from exc
        except redis.AuthenticationError as exc:
            raise BackendUnavailable(f"Redis at {self.url} refused the password: {exc}") from exc
        except redis.RedisError as exc:
            raise BackendError(f"Redis at {self.url} failed: {exc}") from exc

    def _run(self, name: str, keys_: Sequence[str], args: Sequence[Any]) -> Any:
        client = self.client
        with self._errors():
            return self._scripts[name](keys=keys_, args=args, client=client)

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

    def close(self) -> None:
        self.client.close()

    # -- client side -----------------------------------------------------------------------

    def push(self, queue: str, payloads: Sequence[bytes]) -> None:
        if payloads:
            self._run("push", (keys.QUEUES, keys.queue(queue), keys.wake(queue)),
                      (queue, *payloads))

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
        keys_ = [keys.in_flight(identity), keys.started(identity)]
        keys_ += [keys.queue(name) for name in queues]
        keys_ += [keys.wake(name) for name in queues]
        args: list[Any] = [count, first_seq, len(acks), len(careful_acks), *acks, *careful_acks]
        args += queues
        reply = self._run("claim", keys_, args)
        claimed = []
        seq = first_seq
        for index, raw in zip(reply[::2], reply[1::2], strict=False):
            queue = queues[index - 1]
            claimed.append(Claimed(f"{seq}:{queue}", queue, raw))
            seq += 1
        return claimed

    def wait(self, queues: Sequence[str], timeout: float) -> bool:
        client = self.client
        with self._errors():
            return client.blpop([keys.wake(name) for name in queues], timeout=timeout) is not None

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
        keys_ = [keys.in_flight(identity), keys.started(identity)]
        keys_ += [keys.queue(queue) for _, queue in units]
        return int(self._run("requeue", keys_, [ref for ref, _ in units]))

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
            self._scripts["beat"](keys=[keys.BEATS], args=[identity], client=pipe)
            pipe.sadd(keys.PROCESSES, identity)
            pipe.hset(keys.process(identity), mapping={
                "info": beat.info,
                "busy": beat.busy,
                "beat": repr(time.time()),
                "quiet": "true" if beat.quiet else "false",
                "rss": beat.rss_kb,
                "rtt_us": rtt_us,
                "concurrency": beat.concurrency,
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


def _sorted_set(name: str) -> str:
    if name not in keys.SORTED_SETS:
        raise ValueError(f"{name!r} is not one of {keys.SORTED_SETS}")
    return name


def _staged(ref: str, raw: bytes) -> Staged:
    """Read a staging ref `<flag>|<owner>|<inner ref>`; `<inner>` is `<seq>:<queue>`."""
    flag, owner, inner = ref.split("|", 2)
    queue = inner.partition(":")[2]
    return Staged(ref, queue, raw, owner, started=flag == "s", counted=flag != "p")
