"""Unit functions for the SQLite tests (servers run them with --import tests.sqlite_functions).

They report by appending one JSON line per event to a file the test names: no Redis needed.
Each line is written with one O_APPEND write, so lines from several servers never interleave.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import difo


def write(path: str, event: str, marker: Any) -> None:
    """Append `{"event", "marker", "pid", "at"}` to the file at `path`."""
    line = json.dumps({"event": event, "marker": marker, "pid": os.getpid(),
                       "at": time.time()}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def events(path: Path | str, event: str | None = None) -> list[dict[str, Any]]:
    """Every line written so far (those of one `event` if given)."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    found = [json.loads(line) for line in text.splitlines() if line]
    return [item for item in found if event is None or item["event"] == event]


def markers(path: Path | str, event: str = "ran") -> list[Any]:
    return [item["marker"] for item in events(path, event)]


# -- unit functions ----------------------------------------------------------------------------


def record(path: str, marker: Any) -> None:
    write(path, "ran", marker)


def record_args(path: str, *args: Any) -> None:
    """Records every argument, to check what a unit runs with."""
    write(path, "ran", list(args))


def sleep_then_record(path: str, seconds: float, marker: Any) -> None:
    write(path, "started", marker)
    time.sleep(seconds)
    write(path, "ran", marker)


def record_context(path: str) -> None:
    current = difo.current()
    assert current is not None
    write(path, "ran", {"jid": current.jid, "queue": current.queue,
                        "retry_count": current.retry_count})


@difo.job(retry=2, retry_in=lambda count, exc: 0.2)
def flaky(path: str, marker: Any) -> None:
    """Fails every time: retried twice 0.2 s apart, then dead."""
    write(path, "try", marker)
    raise RuntimeError(f"flaky {marker}")


@difo.job(retry=1, retry_in=lambda count, exc: 0.2)
def fail_once(path: str, marker: Any) -> None:
    """Fails on its first run only (it counts its tries in the file)."""
    write(path, "try", marker)
    if sum(1 for item in events(path, "try") if item["marker"] == marker) < 2:
        raise RuntimeError(f"first try of {marker}")
    write(path, "ran", marker)


def enqueue_more(path: str, count: int) -> None:
    """A unit that enqueues `count` more (through the server's environment)."""
    write(path, "ran", f"parent-{count}")
    for i in range(count):
        difo.perform(record, path, f"child-{i}")


_periodic_out = os.environ.get("DIFO_TEST_PERIODIC_OUT")
if _periodic_out:
    # Registered only in servers told where to write: every second, one unit per tick.
    difo.periodic("* * * * * *", record, _periodic_out, "tick", name="sqlite-every-second")


def noop() -> None:
    pass
