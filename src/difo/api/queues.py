"""`Queue`: a queue's size, latency and units, with delete and clear (Sidekiq::Queue)."""

from __future__ import annotations

from collections.abc import Iterator

from difo import unit
from difo.api.connection import backend_for
from difo.api.entries import Entry
from difo.backends import Backend

PAGE = 50


class QueueEntry(Entry):
    """A unit waiting in a queue."""

    def delete(self) -> bool:
        """Remove this unit from its queue; False if it had already left."""
        return self.backend.queue_remove(self.where, self.raw)


class Queue:
    """One queue. Iteration yields units newest first, as Sidekiq's Queue#each does."""

    def __init__(self, name: str = "default", *, backend: Backend | str | None = None) -> None:
        self.name = name
        self.backend = backend_for(backend)

    def __repr__(self) -> str:
        return f"<Queue {self.name}>"

    @classmethod
    def all(cls, *, backend: Backend | str | None = None) -> list[Queue]:
        """Every known queue, by name."""
        chosen = backend_for(backend)
        return [cls(name, backend=chosen) for name in chosen.queue_names()]

    @property
    def size(self) -> int:
        return self.backend.queue_sizes([self.name])[self.name]

    def __len__(self) -> int:
        return self.size

    @property
    def paused(self) -> bool:
        """True when servers take no units from this queue (`difo pause`)."""
        return self.name in self.backend.paused()

    def pause(self) -> None:
        """Stop every server taking units from this queue, within a second."""
        self.backend.pause(self.name)

    def unpause(self) -> None:
        """Let servers take units from this queue again."""
        self.backend.unpause(self.name)

    def latency(self) -> float:
        """Seconds the oldest unit has waited (0.0 when the queue is empty)."""
        oldest = self.backend.queue_range(self.name, -1, -1)
        if not oldest:
            return 0.0
        enqueued = QueueEntry(self.backend, oldest[0], self.name).enqueued_at
        return max(unit.now() - enqueued, 0.0) if enqueued else 0.0

    def page(self, number: int = 1, size: int = 25) -> list[QueueEntry]:
        """Units of page `number` (from 1), newest first."""
        start = (max(number, 1) - 1) * size
        raws = self.backend.queue_range(self.name, start, start + size - 1)
        return [QueueEntry(self.backend, raw, self.name) for raw in raws]

    def __iter__(self) -> Iterator[QueueEntry]:
        start = 0
        while True:
            raws = self.backend.queue_range(self.name, start, start + PAGE - 1)
            for raw in raws:
                yield QueueEntry(self.backend, raw, self.name)
            if len(raws) < PAGE:
                return
            start += PAGE

    def find(self, jid: str) -> QueueEntry | None:
        """The waiting unit with this jid, or None."""
        return next((entry for entry in self if entry.jid == jid), None)

    def search(self, text: str, limit: int = 1000) -> list[QueueEntry]:
        """Waiting units whose function name or jid contains `text`, newest first; at most
        `limit` (the queue is read whole: a slow call on a deep queue)."""
        found = []
        for entry in self:
            if text in entry.function or text in entry.jid:
                found.append(entry)
                if len(found) >= limit:
                    break
        return found

    def delete(self, jid: str) -> bool:
        """Remove the waiting unit with this jid; False when there is none."""
        entry = self.find(jid)
        return entry.delete() if entry else False

    def clear(self) -> int:
        """Delete every waiting unit and forget the queue; return how many there were."""
        return self.backend.queue_clear(self.name)
