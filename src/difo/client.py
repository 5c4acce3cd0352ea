"""The client: builds units from calls and hands them to a backend.

`perform*` check every argument before anything is written and return the unit's jid at once.
A process has one default client, configured from the environment (REDIS_URL / DIFO_URL) on
first use, or by `difo.configure(url=...)`.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from itertools import islice
from typing import Any

from difo import config, registry, unit
from difo.backends import Backend, open_backend
from difo.errors import ArgumentError, BackendError, BulkWriteError

BULK_CHUNK = 1_000
# Sidekiq's rule: a perform_in "delay" this large is taken as an absolute epoch time.
EPOCH_THRESHOLD = 1_000_000_000


class Client:
    """Enqueues units into one backend; thread-safe, fork-safe."""

    def __init__(self, url: str | None = None, backend: Backend | None = None) -> None:
        self.url = url or config.load().url
        self._backend = backend
        self._lock = threading.Lock()
        self._names: dict[Any, tuple[str, dict[str, Any], str]] = {}

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
        name, options, default_queue = self._describe(fn)
        checked = unit.check_args(name, args, _names_of(fn))
        target = config.check_queue_name(default_queue if queue is None else queue)
        payload = unit.build(name, checked, target, options)
        self.backend.push(target, [unit.encode(payload)])
        return str(payload["jid"])

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
        name, options, default_queue = self._describe(fn)
        target = config.check_queue_name(default_queue if queue is None else queue)
        names = _names_of(fn)
        if isinstance(args_list, Sequence):
            checked_all = [self._check_bulk(name, args, names, i) for i, args in
                           enumerate(args_list)]
            chunks: Iterable[list[unit.Args]] = (
                checked_all[start : start + BULK_CHUNK]
                for start in range(0, len(checked_all), BULK_CHUNK)
            )
        else:
            chunks = self._checked_chunks(name, args_list, names)
        jids: list[str] = []
        try:
            for chunk in chunks:
                stamp = unit.now()
                payloads = [unit.build(name, args, target, options, created_at=stamp)
                            for args in chunk]
                encoded = [unit.encode(p) for p in payloads]
                try:
                    self.backend.push(target, encoded)
                except BackendError as exc:
                    if not jids:
                        raise  # nothing written: the plain error (BackendUnavailable) says it
                    raise BulkWriteError(
                        f"perform_bulk of {name} stopped after {len(jids)} units: {exc}",
                        written=len(jids),
                    ) from exc
                jids.extend(str(p["jid"]) for p in payloads)
        except ArgumentError as exc:
            if jids:
                raise ArgumentError(f"{exc} ({len(jids)} units of earlier chunks were "
                                    "already enqueued)") from None
            raise
        return jids

    def _checked_chunks(
        self, name: str, args_iter: Iterable[Sequence[object]], names: Callable[[], Sequence[str]]
    ) -> Iterable[list[unit.Args]]:
        iterator = iter(args_iter)
        index = 0
        while True:
            chunk = list(islice(iterator, BULK_CHUNK))
            if not chunk:
                return
            yield [self._check_bulk(name, args, names, index + i) for i, args in enumerate(chunk)]
            index += len(chunk)

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
