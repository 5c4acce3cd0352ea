"""Servers and what their workers run now: `ProcessSet`, `Process`, `Workers`.

    for process in ProcessSet():        # live servers, difo's and Sidekiq's alike
        process.identity, process.busy, process.is_quiet
        process.quiet()                 # stop taking units (Sidekiq's Process#quiet!)
        process.stop()                  # graceful stop (Sidekiq's Process#stop!)
    for work in Workers():              # one per busy worker, as of its server's last beat
        work.process, work.thread, work.jid, work.function, work.run_at

Signals travel through the backend (Sidekiq's `IDENTITY-signals` list): a server acts on
one at each heartbeat, so a quiet or stop takes effect within a heartbeat (5 s by default).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from difo.api.connection import backend_for
from difo.api.entries import Entry
from difo.backends import Backend, ProcessRecord


class Process:
    """One live server, as its last beat described it (Sidekiq::Process)."""

    def __init__(self, backend: Backend, record: ProcessRecord) -> None:
        self.backend = backend
        self.record = record
        try:
            info = json.loads(record.info)
        except (ValueError, UnicodeDecodeError):
            info = None
        self.info: dict[str, Any] = info if isinstance(info, dict) else {}

    def __repr__(self) -> str:
        return f"<Process {self.identity} busy={self.busy}/{self.concurrency}>"

    # -- fields ------------------------------------------------------------------------------

    @property
    def identity(self) -> str:
        return self.record.identity

    @property
    def hostname(self) -> str:
        return str(self.info.get("hostname", ""))

    @property
    def pid(self) -> int | None:
        pid = self.info.get("pid")
        return pid if isinstance(pid, int) else None

    @property
    def tag(self) -> str:
        return str(self.info.get("tag") or "")

    @property
    def started_at(self) -> float | None:
        started = self.info.get("started_at")
        return float(started) if isinstance(started, (int, float)) else None

    @property
    def queues(self) -> list[str]:
        queues = self.info.get("queues")
        return [str(name) for name in queues] if isinstance(queues, list) else []

    @property
    def weights(self) -> dict[str, int]:
        """Queue -> weight (Sidekiq 7's `weights`, one dict per capsule, merged); empty when
        the server did not say (Sidekiq 6)."""
        merged: dict[str, int] = {}
        weights = self.info.get("weights")
        for capsule in weights if isinstance(weights, list) else [weights]:
            if isinstance(capsule, dict):
                merged.update({str(k): int(v) for k, v in capsule.items()
                               if isinstance(v, int)})
        return merged

    @property
    def concurrency(self) -> int:
        """Workers (the hash's own field first, as Sidekiq 8.1.2+ reads it)."""
        if self.record.concurrency is not None:
            return self.record.concurrency
        concurrency = self.info.get("concurrency")
        return concurrency if isinstance(concurrency, int) else 0

    @property
    def busy(self) -> int:
        return self.record.busy

    @property
    def rss(self) -> int:
        """Resident memory in KB."""
        return self.record.rss_kb

    @property
    def rtt_us(self) -> int:
        return self.record.rtt_us

    @property
    def version(self) -> str:
        return str(self.info.get("version") or "")

    @property
    def labels(self) -> list[str]:
        labels = self.info.get("labels")
        return [str(label) for label in labels] if isinstance(labels, list) else []

    @property
    def beat(self) -> float:
        """When it last beat (epoch seconds)."""
        return self.record.beat

    @property
    def is_quiet(self) -> bool:
        """Takes no new units: quieted, or stopping (Sidekiq's `stopping?`)."""
        return self.record.quiet

    @property
    def is_stopping(self) -> bool:
        """Shutting down (a difo server says so; a Sidekiq one only says quiet)."""
        return self.record.stopping

    # -- control -----------------------------------------------------------------------------

    def quiet(self) -> None:
        """Ask the server to take no new units and keep running those it has (TSTP)."""
        self.backend.signal(self.identity, "TSTP")

    def stop(self) -> None:
        """Ask the server to stop gracefully (TERM), as `kill -TERM` on its host would."""
        self.backend.signal(self.identity, "TERM")

    def dump_threads(self) -> None:
        """Ask the server to log every thread's stack (TTIN)."""
        self.backend.signal(self.identity, "TTIN")

    def to_dict(self) -> dict[str, Any]:
        """Fields for JSON output (`difo processes --json`)."""
        return {
            "identity": self.identity, "hostname": self.hostname, "pid": self.pid,
            "tag": self.tag, "started_at": self.started_at, "queues": self.queues,
            "weights": self.weights, "concurrency": self.concurrency, "busy": self.busy,
            "rss_kb": self.rss, "rtt_us": self.rtt_us, "version": self.version,
            "labels": self.labels, "beat": self.beat, "quiet": self.is_quiet,
            "stopping": self.is_stopping,
        }


class ProcessSet:
    """The live servers, by identity (Sidekiq::ProcessSet). Reading it removes servers whose
    record expired from the registry, as Sidekiq's does."""

    def __init__(self, *, backend: Backend | str | None = None) -> None:
        self.backend = backend_for(backend)
        self.processes = [Process(self.backend, record) for record in self.backend.processes()]

    def __repr__(self) -> str:
        return f"<ProcessSet size={self.size}>"

    def __iter__(self) -> Iterator[Process]:
        return iter(self.processes)

    def __len__(self) -> int:
        return len(self.processes)

    @property
    def size(self) -> int:
        return len(self.processes)

    @property
    def total_concurrency(self) -> int:
        return sum(process.concurrency for process in self.processes)

    @property
    def total_rss(self) -> int:
        """KB, summed over the servers."""
        return sum(process.rss for process in self.processes)

    def get(self, identity: str) -> Process | None:
        """The server with this identity, or None."""
        return next((p for p in self.processes if p.identity == identity), None)


class Work(Entry):
    """What one busy worker runs: the unit (jid, function, args, queue) and where and since
    when it runs (process identity, thread id, `run_at`)."""

    def __init__(self, backend: Backend, process: str, thread: str, value: bytes) -> None:
        try:
            work = json.loads(value)
        except (ValueError, UnicodeDecodeError):
            work = None
        work = work if isinstance(work, dict) else {}
        payload = work.get("payload", "")
        # Sidekiq stores the payload as a JSON string; its WorkSet also accepts an object.
        raw = json.dumps(payload).encode() if isinstance(payload, dict) else str(payload).encode()
        super().__init__(backend, raw, str(work.get("queue", "")))
        self.process = process
        self.thread = thread
        run_at = work.get("run_at")
        self.run_at: float | None = float(run_at) if isinstance(run_at, (int, float)) else None

    def __repr__(self) -> str:
        return f"<Work {self.process} {self.thread} {self.jid} {self.function}>"

    @property
    def queue(self) -> str:
        return self.where or super().queue

    def to_dict(self) -> dict[str, Any]:
        """Fields for JSON output (`difo workers --json`)."""
        return {"process": self.process, "thread": self.thread, "queue": self.queue,
                "jid": self.jid, "function": self.function, "args": self.args,
                "run_at": self.run_at}


class Workers:
    """Every busy worker of every live server (Sidekiq::Workers / WorkSet)."""

    def __init__(self, *, backend: Backend | str | None = None) -> None:
        self.backend = backend_for(backend)
        records = self.backend.processes()
        self.size = sum(record.busy for record in records)
        found = self.backend.work([record.identity for record in records])
        self.works = [Work(self.backend, identity, thread, value)
                      for identity, threads in found.items()
                      for thread, value in sorted(threads.items())]

    def __repr__(self) -> str:
        return f"<Workers size={self.size}>"

    def __iter__(self) -> Iterator[Work]:
        return iter(self.works)

    def __len__(self) -> int:
        return len(self.works)
