"""The client: builds units from calls and hands them to a backend.

`perform*` check every argument before anything is written and return the unit's jid at once.
A process has one default client, configured from the environment (REDIS_URL / DIFO_URL) on
first use, or by `difo.configure(url=...)`.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from itertools import islice
from typing import Any

from difo import config, registry, unit
from difo.backends import Backend, open_backend
from difo.errors import ArgumentError, BackendError, BulkWriteError

BULK_CHUNK = 1_000
TEMPLATE_CACHE = 1_000  # (function, queue) pairs whose payload template is kept
# Sidekiq's rule: a perform_in "delay" this large is taken as an absolute epoch time.
EPOCH_THRESHOLD = 1_000_000_000


class Client:
    """Enqueues units into one backend; thread-safe, fork-safe."""

    def __init__(self, url: str | None = None, backend: Backend | None = None) -> None:
        self.url = url or config.load().url
        self._backend = backend
        self._lock = threading.Lock()
        self._names: dict[Any, tuple[str, dict[str, Any], str]] = {}
        self._templates: dict[tuple[str, str], unit.Template | None] = {}
        self._queues: set[str] = set()

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            with self._lock:
                if self._backend is None:
                    self._backend = open_backend(self.url)
        return self._backend

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    # -- enqueue ---------------------------------------------------------------------------

    def push(self, fn: Callable[..., Any], args: Sequence[object], queue: str | None = None) -> str:
        """Enqueue one unit now; return its jid."""
        target, jid, raw = self.prepare(fn, args, queue)
        self.backend.push(target, [raw])
        return jid

    def push_at(
        self, when: float, fn: Callable[..., Any], args: Sequence[object], queue: str | None = None
    ) -> str:
        """Enqueue one unit due at epoch seconds `when` (now, if that has passed)."""
        name, options, default_queue = self._describe(fn)
        checked = unit.check_args(name, args, _names_of(fn))
        target = config.check_queue_name(default_queue if queue is None else queue)
        if when <= unit.now():
            payload = unit.build(name, checked, target, options)
            self.backend.push(target, [unit.encode(payload)])
        else:
            payload = unit.build(name, checked, target, options, enqueued=False)
            self.backend.schedule([(when, unit.encode(payload))])
        return str(payload["jid"])

    def push_bulk(
        self, fn: Callable[..., Any], args_list: Iterable[Sequence[object]],
        queue: str | None = None,
    ) -> list[str]:
        """Enqueue many units of one function in chunks of 1,000; return their jids.

        A list (or other sequence) is checked whole before anything is written. Any other
        iterable is read, checked and written one chunk at a time, so it never sits in memory
        whole; a bad argument then stops it with the earlier chunks already written (the error
        says how many).
        """
        name, target, chunks = self.prepare_bulk(fn, args_list, queue)
        jids: list[str] = []
        try:
            for chunk_jids, encoded in chunks:
                try:
                    self.backend.push(target, encoded)
                except BackendError as exc:
                    if not jids:
                        raise  # nothing written: the plain error (BackendUnavailable) says it
                    raise bulk_write_error(name, len(jids), exc) from exc
                jids.extend(chunk_jids)
        except ArgumentError as exc:
            if jids:
                raise bulk_argument_error(exc, len(jids)) from None
            raise
        return jids

    # -- the pure half, shared with difo.aio's client ------------------------------------------

    def prepare(
        self, fn: Callable[..., Any], args: Sequence[object], queue: str | None = None,
        *, enqueued: bool = True,
    ) -> tuple[str, str, bytes]:
        """(target queue, jid, payload) of one unit of `fn(*args)`: every check, no write."""
        name, options, default_queue = self._describe(fn)
        checked = unit.check_args(name, args, _names_of(fn))
        target = self._queue(default_queue if queue is None else queue)
        template = self._template(name, target, options) if enqueued else None
        encoded_args = unit.encode_args(checked) if template is not None else None
        if template is None or encoded_args is None:
            payload = unit.build(name, checked, target, options, enqueued=enqueued)
            return target, str(payload["jid"]), unit.encode(payload)
        jid = unit.new_jid()
        return target, jid, template.render(encoded_args, jid, unit.now())

    def prepare_bulk(
        self, fn: Callable[..., Any], args_list: Iterable[Sequence[object]],
        queue: str | None = None,
    ) -> tuple[str, str, Iterator[tuple[list[str], list[bytes]]]]:
        """(function name, target queue, chunks of (jids, payloads)) of a bulk enqueue.

        A list (or other sequence) is checked whole before this returns; any other iterable
        is read and checked one chunk at a time as chunks are taken (ArgumentError then comes
        from the iteration)."""
        name, options, default_queue = self._describe(fn)
        target = config.check_queue_name(default_queue if queue is None else queue)
        names = _names_of(fn)
        if isinstance(args_list, Sequence):
            items = args_list if isinstance(args_list, (list, tuple)) else list(args_list)
            chunks: Iterable[tuple[list[unit.Args], bool | None]] = [
                self._check_chunk(name, items[start : start + BULK_CHUNK], names, start)
                for start in range(0, len(items), BULK_CHUNK)
            ]
        else:
            chunks = self._checked_chunks(name, args_list, names)
        encoded = (self._encode_chunk(name, target, options, chunk, floats, unit.now())
                   for chunk, floats in chunks)
        return name, target, encoded

    def _checked_chunks(
        self, name: str, args_iter: Iterable[Sequence[object]], names: Callable[[], Sequence[str]]
    ) -> Iterable[tuple[list[unit.Args], bool | None]]:
        iterator = iter(args_iter)
        index = 0
        while True:
            chunk = list(islice(iterator, BULK_CHUNK))
            if not chunk:
                return
            yield self._check_chunk(name, chunk, names, index)
            index += len(chunk)

    @classmethod
    def _check_chunk(
        cls, name: str, items: Sequence[Sequence[object]], names: Callable[[], Sequence[str]],
        first: int,
    ) -> tuple[list[unit.Args], bool | None]:
        """(the checked argument lists of one chunk, whether a float is among them or None
        when not known): `unit.check_flat` at once, else each item's full check."""
        flat = unit.check_flat(items)
        if flat is not None:
            return flat
        return [cls._check_bulk(name, args, names, first + i) for i, args in
                enumerate(items)], None

    @staticmethod
    def _check_bulk(
        name: str, args: Sequence[object], names: Callable[[], Sequence[str]], index: int
    ) -> unit.Args:
        if not isinstance(args, (list, tuple)):
            raise ArgumentError(
                f"perform_bulk of {name}: item {index} is a {type(args).__name__}; each item "
                "is the argument list of one unit, e.g. [[1, 2], [3, 4]]"
            )
        try:
            return unit.check_args(name, args, names)
        except ArgumentError as exc:
            raise ArgumentError(f"perform_bulk item {index}: {exc}") from None

    def _encode_chunk(
        self, name: str, target: str, options: dict[str, Any], chunk: list[unit.Args],
        floats: bool | None, stamp: float,
    ) -> tuple[list[str], list[bytes]]:
        """(jids, payloads) of one chunk: the template's bytes with args and jid filled in,
        or, for a unit the standard library refuses to encode, `unit.encode` (and its error).
        `floats`: whether a float is among the arguments (None: not known)."""
        template = self._template(name, target, options)
        # 24 hex characters per jid, as new_jid; split at the separators hex() puts in
        hexed = os.urandom(12 * len(chunk)).hex(",", 12)
        jids = hexed.split(",")
        if template is None:
            return jids, [unit.encode(unit.build(name, args, target, options, jid=jid,
                                                 created_at=stamp))
                          for args, jid in zip(chunk, jids, strict=True)]
        head, between, tail = template.frame(stamp)
        join = b"".join
        inner = None if floats is None else unit.encode_inner(chunk, floats=floats)
        if inner is not None:
            head, between = head + b"[", b"]" + between
            return jids, [join((head, encoded_args, between, jid, tail)) for encoded_args, jid
                          in zip(inner, hexed.encode().split(b","), strict=True)]
        encoded: list[bytes] = []
        for args, jid in zip(chunk, jids, strict=True):
            encoded_args = unit.encode_args(args)
            if encoded_args is None:
                payload = unit.build(name, args, target, options, jid=jid, created_at=stamp)
                encoded.append(unit.encode(payload))
            else:
                encoded.append(join((head, encoded_args, between, jid.encode(), tail)))
        return jids, encoded

    def _template(self, name: str, target: str, options: dict[str, Any]) -> unit.Template | None:
        """The payload template of a function on a queue, cached; None where options
        reorder the payload's fields (then every unit is built and encoded whole)."""
        key = (name, target)
        try:
            return self._templates[key]
        except KeyError:
            pass
        try:
            template: unit.Template | None = unit.Template(name, target, options, enqueued=True)
        except ValueError:
            template = None
        if len(self._templates) < TEMPLATE_CACHE:
            self._templates[key] = template
        return template

    def _queue(self, name: str) -> str:
        """`config.check_queue_name`, remembering names already checked."""
        if type(name) is str and name in self._queues:
            return name
        checked = config.check_queue_name(name)
        if len(self._queues) < TEMPLATE_CACHE:
            self._queues.add(checked)
        return checked

    def _describe(self, fn: Callable[..., Any]) -> tuple[str, dict[str, Any], str]:
        """(name, payload options, default queue) of `fn`, cached."""
        try:
            return self._names[fn]
        except (KeyError, TypeError):
            pass
        name = registry.name_of(fn)
        options = dict(getattr(fn, "difo_payload_options", {}))
        default_queue = str(getattr(fn, "difo_queue", "default"))
        described = (name, options, default_queue)
        with contextlib.suppress(TypeError):
            self._names[fn] = described
        return described


def bulk_write_error(name: str, written: int, exc: BackendError) -> BulkWriteError:
    """The error of a bulk enqueue whose write failed after `written` units were stored."""
    return BulkWriteError(f"perform_bulk of {name} stopped after {written} units: {exc}",
                          written=written)


def bulk_argument_error(exc: ArgumentError, written: int) -> ArgumentError:
    """The error of a lazily checked bulk enqueue refused after `written` units were stored."""
    return ArgumentError(f"{exc} ({written} units of earlier chunks were already enqueued)")


def _names_of(fn: Callable[..., Any]) -> Callable[[], Sequence[str]]:
    """Parameter names of a function, read only when an error message needs them."""
    return lambda: registry.parameter_names(getattr(fn, "fn", fn))


def when_from(value: float | int | datetime | timedelta, *, relative: bool) -> float:
    """Epoch seconds from a delay (`relative`) or a time; naive datetimes are refused."""
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ArgumentError(
                f"{value!r} is a naive datetime (no time zone); pass an aware datetime, "
                "e.g. datetime.now(timezone.utc), or epoch seconds"
            )
        return value.timestamp()
    if isinstance(value, timedelta):
        return unit.now() + value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ArgumentError(f"{value!r} is not a number of seconds, a timedelta or a datetime")
    if relative and value < EPOCH_THRESHOLD:
        return unit.now() + float(value)
    return float(value)


_default: Client | None = None
_default_lock = threading.Lock()


def default() -> Client:
    """The process's client, configured from the environment on first use."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = Client()
    return _default


def configure(url: str | None = None) -> Client:
    """Point the default client at `url` (or the environment's setting again)."""
    global _default
    with _default_lock:
        if _default is not None:
            _default.close()
        _default = Client(url)
        return _default
