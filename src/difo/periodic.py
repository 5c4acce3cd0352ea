"""Periodic units: cron schedules that every server checks and exactly one server fires.

`difo.periodic("*/5 * * * *", fn, *args)` registers a schedule in the process that calls it;
a server picks up the schedules registered by the modules it imports. On each scheduler pass
a server computes the schedule's latest tick; the backend enqueues a tick's unit only if no
server has enqueued that tick or a later one (one atomic step), so three servers give one
unit per tick. A tick that passed while no server ran is not replayed: a server fires only
ticks that come after it started.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, overload
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from difo import registry, unit
from difo.backends import Backend
from difo.errors import ConfigError

log = logging.getLogger("difo.periodic")

_schedules: dict[str, Periodic] = {}
_lock = threading.Lock()
# A tick this close before a server's start still counts as seen by it.
START_GRACE = 1.0


@dataclass(frozen=True)
class Periodic:
    """One registered schedule: run `function(*args)` on `queue` at every cron tick."""

    name: str
    cron: str
    function: str
    args: unit.Args
    queue: str
    tz: str = "UTC"
    options: dict[str, Any] = field(default_factory=dict)

    def last_tick(self, now: float) -> float:
        """The latest tick at or before `now` (epoch seconds): a tick is never fired early."""
        # croniter's get_prev leaves out its start: start a millisecond on, so a tick at
        # `now` itself counts, and step back once more when that finds a tick after `now`.
        ticks = croniter(self.cron, datetime.fromtimestamp(now + 0.001, ZoneInfo(self.tz)))
        tick = float(ticks.get_prev(datetime).timestamp())
        if tick > now:
            tick = float(ticks.get_prev(datetime).timestamp())
        return tick

    def next_tick(self, now: float) -> float:
        """The first tick after `now`."""
        start = datetime.fromtimestamp(now, ZoneInfo(self.tz))
        return float(croniter(self.cron, start).get_next(datetime).timestamp())

    def payload(self, now: float) -> bytes:
        built = unit.build(self.function, list(self.args), self.queue, self.options,
                           created_at=now)
        built["difo_periodic"] = self.name
        return unit.encode(built)


@overload
def periodic(cron: str, fn: Callable[..., Any], /, *args: Any, queue: str | None = None,
             tz: str = "UTC", name: str | None = None) -> Periodic: ...


@overload
def periodic(cron: str, /, *, queue: str | None = None, tz: str = "UTC",
             name: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]: ...


def periodic(
    cron: str, fn: Callable[..., Any] | None = None, /, *args: Any, queue: str | None = None,
    tz: str = "UTC", name: str | None = None,
) -> Any:
    """Run `fn(*args)` at every tick of `cron` (5 fields, or @hourly, @daily, @weekly ...),
    in time zone `tz`. Also a decorator for a function without arguments:
    `@difo.periodic("0 3 * * *")`."""
    if fn is None:
        def decorate(inner: Callable[..., Any]) -> Callable[..., Any]:
            periodic(cron, inner, queue=queue, tz=tz, name=name)
            return inner

        return decorate
    if not croniter.is_valid(cron):
        raise ConfigError(f"periodic: {cron!r} is not a cron schedule (5 fields such as "
                          "'*/5 * * * *', or @hourly, @daily, @weekly, @monthly, @yearly)")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ConfigError(f"periodic: {tz!r} is not a time zone name (e.g. 'Europe/Paris')") \
            from None
    function = registry.name_of(fn)
    checked = unit.check_args(function, args, lambda: registry.parameter_names(fn))
    schedule = Periodic(
        name=name or f"{function}@{cron}" + (f" {json.dumps(checked)}" if args else ""),
        cron=cron,
        function=function,
        args=checked,
        queue=queue or str(getattr(fn, "difo_queue", "default")),
        tz=tz,
        options=dict(getattr(fn, "difo_payload_options", {})),
    )
    with _lock:
        _schedules[schedule.name] = schedule
    return schedule


def schedules() -> list[Periodic]:
    """The schedules registered in this process."""
    with _lock:
        return list(_schedules.values())


def unregister(name: str) -> None:
    with _lock:
        _schedules.pop(name, None)


class Firing:
    """Fires the ticks of one server's schedules; `step(now)` is one pass."""

    def __init__(self, backend: Backend, started_at: float) -> None:
        self.backend = backend
        self.started_at = started_at
        self._seen: dict[str, float] = {}

    def step(self, now: float, chosen: Sequence[Periodic] | None = None) -> int:
        """Enqueue the latest tick of each schedule unless it was fired; return how many this
        server enqueued."""
        fired = 0
        for schedule in schedules() if chosen is None else chosen:
            tick = schedule.last_tick(now)
            if tick < self.started_at - START_GRACE or tick <= self._seen.get(schedule.name, 0):
                continue
            if self.backend.fire_periodic(schedule.name, tick, schedule.queue,
                                          schedule.payload(now)):
                fired += 1
                log.info("periodic %s: enqueued the tick of %s", schedule.name,
                         datetime.fromtimestamp(tick, timezone.utc).isoformat())
            self._seen[schedule.name] = tick
        return fired
