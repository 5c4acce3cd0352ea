"""The sorted sets: scheduled units, retries and the dead (Sidekiq's ScheduledSet, RetrySet,
DeadSet), each paginated and searchable, with retry-now, delete and kill per entry and in bulk.
"""

from __future__ import annotations

from collections.abc import Iterator

from difo import unit
from difo.api.connection import backend_for
from difo.api.entries import Entry
from difo.backends import Backend

PAGE = 50


class SetEntry(Entry):
    """A unit in schedule, retry or dead; `at` is its score."""

    def delete(self) -> bool:
        """Remove the entry; False if it had already left the set."""
        return self.backend.set_remove(self.where, self.raw)

    def retry(self) -> bool:
        """Run it now: onto its queue, with a fresh enqueued_at. A retry or dead entry's
        retry_count is lowered by one first, as Sidekiq does: the next failure raises it
        again, so a manual retry does not use up one of the unit's retries."""
        payload = dict(self.payload)
        if self.retry_count is not None and self.where in ("retry", "dead"):
            payload["retry_count"] = self.retry_count - 1
        return self._to_queue(payload)

    def add_to_queue(self) -> bool:
        """Enqueue it now, unchanged but for enqueued_at (a scheduled unit run early)."""
        return self._to_queue(dict(self.payload))

    def kill(self) -> bool:
        """Move it to the dead set as it is."""
        if self.where == "dead":
            return False
        return self.backend.set_to_dead(self.where, self.raw, self.raw)

    def _to_queue(self, payload: dict[str, object]) -> bool:
        if not self.valid:
            return False
        payload["enqueued_at"] = unit.now()
        return self.backend.set_to_queue(self.where, self.raw, self.queue, unit.encode(payload))


class SortedSet:
    """One of Sidekiq's sorted sets; iteration order is set by the subclass."""

    name = ""
    newest_first = False

    def __init__(self, *, backend: Backend | str | None = None) -> None:
        self.backend = backend_for(backend)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} size={self.size}>"

    @property
    def size(self) -> int:
        return self.backend.set_size(self.name)

    def __len__(self) -> int:
        return self.size

    def page(self, number: int = 1, size: int = 25) -> list[SetEntry]:
        """Entries of page `number` (from 1) in this set's order."""
        start = (max(number, 1) - 1) * size
        rows = self.backend.set_range(self.name, start, start + size - 1, self.newest_first)
        return [SetEntry(self.backend, raw, self.name, score) for raw, score in rows]

    def __iter__(self) -> Iterator[SetEntry]:
        # Walk by rank in pages; entries moved meanwhile may be skipped or seen twice, as in
        # Sidekiq's own pagination.
        start = 0
        while True:
            rows = self.backend.set_range(self.name, start, start + PAGE - 1, self.newest_first)
            for raw, score in rows:
                yield SetEntry(self.backend, raw, self.name, score)
            if len(rows) < PAGE:
                return
            start += PAGE

    def find(self, jid: str) -> SetEntry | None:
        """The entry with this jid, or None."""
        for raw, score in self.backend.set_scan(self.name, f"*{_glob_escape(jid)}*"):
            entry = SetEntry(self.backend, raw, self.name, score)
            if entry.jid == jid:
                return entry
        return None

    def fetch(self, score: float, jid: str) -> SetEntry | None:
        """The entry with this score and jid (Sidekiq Web's SCORE-JID detail address)."""
        for raw, found in self.backend.set_at_score(self.name, score):
            entry = SetEntry(self.backend, raw, self.name, found)
            if entry.jid == jid:
                return entry
        return None

    def search(self, text: str, limit: int = 1000) -> list[SetEntry]:
        """Entries whose function name or jid contains `text` (case-sensitive), in this
        set's order; at most `limit`. The backend narrows by a scan of the raw payloads."""
        found = []
        for raw, score in self.backend.set_scan(self.name, f"*{_glob_escape(text)}*"):
            entry = SetEntry(self.backend, raw, self.name, score)
            if text in entry.function or text in entry.jid:
                found.append(entry)
        found.sort(key=lambda entry: entry.score or 0.0, reverse=self.newest_first)
        return found[:limit]

    def delete(self, jid: str) -> bool:
        entry = self.find(jid)
        return entry.delete() if entry else False

    def retry(self, jid: str) -> bool:
        entry = self.find(jid)
        return entry.retry() if entry else False

    def kill(self, jid: str) -> bool:
        entry = self.find(jid)
        return entry.kill() if entry else False

    def retry_all(self) -> int:
        """Enqueue every entry now; return how many moved."""
        moved = 0
        stuck = 0  # entries that cannot be enqueued (not JSON) stay, at the lowest ranks
        while True:
            rows = self.backend.set_range(self.name, stuck, stuck + PAGE - 1, False)
            if not rows:
                return moved
            # Each row read is stepped over, moved, or already gone: the loop ends.
            for raw, score in rows:
                entry = SetEntry(self.backend, raw, self.name, score)
                if not entry.valid:
                    stuck += 1
                elif entry.retry():
                    moved += 1

    def kill_all(self) -> int:
        """Move every entry to the dead set; return how many moved."""
        moved = 0
        for entry in list(self):
            moved += entry.kill()
        return moved

    def clear(self) -> int:
        """Delete every entry; return how many there were."""
        return self.backend.set_clear(self.name)


class ScheduledSet(SortedSet):
    """Units waiting for their time; due first."""

    name = "schedule"


class RetrySet(SortedSet):
    """Failed units waiting to be retried; next retry first."""

    name = "retry"


class DeadSet(SortedSet):
    """Units out of retries (or refused, or poison pills); newest death first."""

    name = "dead"
    newest_first = True


def _glob_escape(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)
