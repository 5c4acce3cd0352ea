"""One unit as the API shows it, wherever it waits: a queue or a sorted set.

An entry keeps the exact bytes it was read as: deleting and moving go by those bytes (as
Sidekiq's LREM/ZREM do), so an entry is never rewritten in place. A payload that is not
valid JSON still lists, with its raw text, so it can be seen and deleted.
"""

from __future__ import annotations

import json
from typing import Any

from difo import unit
from difo.backends import Backend
from difo.retry import decode_backtrace


class Entry:
    """A unit read from a queue (`score` None) or from schedule / retry / dead."""

    def __init__(self, backend: Backend, raw: bytes, where: str, score: float | None = None):
        self.backend = backend
        self.raw = raw
        self.where = where
        self.score = score
        try:
            payload = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            payload = None
        self.valid = isinstance(payload, dict)
        self.payload: dict[str, Any] = payload if isinstance(payload, dict) else {}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.where} {self.jid} {self.function}>"

    # -- fields ------------------------------------------------------------------------------

    @property
    def jid(self) -> str:
        return str(self.payload.get("jid", ""))

    @property
    def function(self) -> str:
        """The `class` field: `module:function` for difo units, a class name for Ruby ones."""
        return str(self.payload.get("display_class") or self.payload.get("wrapped")
                   or self.payload.get("class", "?"))

    @property
    def args(self) -> list[Any]:
        args = self.payload.get("args")
        return args if isinstance(args, list) else []

    @property
    def queue(self) -> str:
        return str(self.payload.get("queue") or "default")

    @property
    def created_at(self) -> float | None:
        return unit.seconds(self.payload.get("created_at"))

    @property
    def enqueued_at(self) -> float | None:
        return unit.seconds(self.payload.get("enqueued_at"))

    @property
    def failed_at(self) -> float | None:
        return unit.seconds(self.payload.get("failed_at"))

    @property
    def retried_at(self) -> float | None:
        return unit.seconds(self.payload.get("retried_at"))

    @property
    def retry_count(self) -> int | None:
        count = self.payload.get("retry_count")
        return count if isinstance(count, int) and not isinstance(count, bool) else None

    @property
    def error_class(self) -> str | None:
        value = self.payload.get("error_class")
        return str(value) if value is not None else None

    @property
    def error_message(self) -> str | None:
        value = self.payload.get("error_message")
        return str(value) if value is not None else None

    @property
    def backtrace(self) -> list[str]:
        """The decoded `error_backtrace` lines (empty when none was kept)."""
        encoded = self.payload.get("error_backtrace")
        if isinstance(encoded, list):
            return [str(line) for line in encoded]
        if not isinstance(encoded, str) or not encoded:
            return []
        try:
            return decode_backtrace(encoded)
        except (ValueError, TypeError):
            return ["(backtrace could not be decoded)"]

    @property
    def at(self) -> float | None:
        """When a scheduled unit is due, a retry runs next, or a dead unit died."""
        return self.score

    @property
    def text(self) -> str:
        """The stored bytes as text, for a payload that is not JSON."""
        return self.raw.decode("utf-8", "backslashreplace")

    def to_dict(self) -> dict[str, Any]:
        """Fields for JSON output (`difo ... --json`)."""
        out: dict[str, Any] = {"where": self.where, "jid": self.jid, "function": self.function,
                               "args": self.args, "queue": self.queue}
        if self.score is not None:
            out["at"] = self.score
        for name in ("enqueued_at", "created_at", "failed_at", "retry_count", "error_class",
                     "error_message"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if not self.valid:
            out["raw"] = self.text
        return out
