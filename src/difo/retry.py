"""What happens to a unit that failed: retry later, go to the dead set, or be dropped. Pure.

Sidekiq's rules (job_retry.rb): `retry: true` allows 25 retries, an integer N allows N,
`0` sends the unit to dead on its first failure and `false` drops it (counted as failed,
nothing kept). The delay before retry `count` (0-based) is `count**4 + 15` seconds plus
`rand(10) * (count + 1)` seconds of jitter, or exactly what the job's `retry_in(count, exc)`
returns when that is a positive number (unlike Sidekiq, no jitter is added to it: a custom
delay is the user's to shape); when it raises or returns anything else, the default applies,
as in Sidekiq. Exhausted units go to dead unless the payload says `dead: false`.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import random
import traceback
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

log = logging.getLogger("difo.retry")

MAX_RETRIES = 25
MESSAGE_LIMIT = 10_000

RetryIn = Callable[[int, BaseException], "float | int | None"]


@dataclass(frozen=True)
class Decision:
    """`retry` at `at`, `dead`, or `drop`; `payload` carries the error fields either way."""

    action: Literal["retry", "dead", "drop"]
    payload: dict[str, Any]
    at: float = 0.0


def limit(retry: object) -> int | None:
    """How many retries a payload's `retry` field allows; None means drop on failure."""
    if retry is False or retry is None:
        return None
    if isinstance(retry, int) and not isinstance(retry, bool):
        return max(retry, 0)
    return MAX_RETRIES


def delay(
    count: int,
    exc: BaseException | None = None,
    retry_in: RetryIn | None = None,
    randrange: Callable[[int], int] = random.randrange,
) -> float:
    """Seconds before retry number `count` (0 for the first retry), jitter included."""
    if retry_in is not None and exc is not None:
        custom = _custom_delay(retry_in, count, exc)
        if custom is not None:
            return custom
    return count**4 + 15 + randrange(10) * (count + 1)


def decide(
    payload: dict[str, Any],
    exc: BaseException,
    now: float,
    retry_in: RetryIn | None = None,
    randrange: Callable[[int], int] = random.randrange,
) -> Decision:
    """Record `exc` in `payload` (Sidekiq's fields) and say where the unit goes next."""
    failed = dict(payload)
    failed["error_message"] = error_message(exc)
    failed["error_class"] = error_class(exc)
    previous = failed.get("retry_count")
    if isinstance(previous, int) and not isinstance(previous, bool):
        count = previous + 1
        failed["retried_at"] = now
    else:
        count = 0
        failed["failed_at"] = now
    failed["retry_count"] = count
    if "retry_queue" in failed and isinstance(failed["retry_queue"], str):
        failed["queue"] = failed["retry_queue"]
    lines = backtrace_lines(exc, failed.get("backtrace"))
    if lines:
        failed["error_backtrace"] = encode_backtrace(lines)
    allowed = limit(failed.get("retry", True))
    if allowed is None:
        return Decision("drop", failed)
    if count < allowed:
        return Decision("retry", failed, now + delay(count, exc, retry_in, randrange))
    if failed.get("dead") is False:
        return Decision("drop", failed)
    return Decision("dead", failed)


def error_class(exc: BaseException) -> str:
    kind = type(exc)
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


def error_message(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:  # a broken __str__ must not stop the retry
        text = repr(exc)
    return text.encode("utf-8", "replace").decode("utf-8")[:MESSAGE_LIMIT]


def backtrace_lines(exc: BaseException, option: object) -> list[str]:
    """Ruby-style lines (`file:line:in 'function'`), innermost first, as Sidekiq keeps them."""
    if option is None or option is False:
        return []
    frames = traceback.extract_tb(exc.__traceback__)
    lines = [f"{frame.filename}:{frame.lineno}:in `{frame.name}'" for frame in reversed(frames)]
    if isinstance(option, int) and not isinstance(option, bool):
        lines = lines[:option]
    return lines


def encode_backtrace(lines: list[str]) -> str:
    """Sidekiq's encoding: base64 of zlib-deflated JSON (its Web UI decodes it)."""
    return base64.b64encode(zlib.compress(json.dumps(lines).encode())).decode()


def decode_backtrace(text: str) -> list[str]:
    """Read Sidekiq's encoded backtrace (either base64 form) or the old raw JSON array."""
    stripped = text.strip()
    if stripped.startswith("["):
        return [str(line) for line in json.loads(stripped)]
    raw = zlib.decompress(base64.b64decode("".join(stripped.split())))
    return [str(line) for line in json.loads(raw)]


def _custom_delay(retry_in: RetryIn, count: int, exc: BaseException) -> float | None:
    """What `retry_in` returns when it is a positive finite number, else None (the default
    backoff applies). A retry_in that raises falls back too, as Sidekiq's does: the unit
    must still be retried rather than stuck in flight."""
    try:
        custom = retry_in(count, exc)
    except Exception:
        log.exception("retry_in %r raised; using the default backoff", retry_in)
        return None
    if isinstance(custom, bool) or not isinstance(custom, (int, float)):
        if custom is not None:
            log.warning("retry_in %r returned %r, not seconds; using the default backoff",
                        retry_in, custom)
        return None
    return float(custom) if 0 < custom < math.inf else None
