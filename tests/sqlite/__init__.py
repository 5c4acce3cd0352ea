"""Tests of the embedded SQLite backend: real files in tmp_path, real `difo server` processes.

Helpers shared by the modules here; fixtures stay in each module (this package has no
conftest of its own).
"""

from __future__ import annotations

from pathlib import Path

from difo.backends.sqlite import SQLiteBackend
from difo.config import parse_url


def url_for(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/difo.db"


def open_sqlite(url: str) -> SQLiteBackend:
    return SQLiteBackend(parse_url(url))


def server_env(url: str, **extra: str) -> dict[str, str]:
    """What `start_server` needs to run on SQLite (DIFO_URL wins over its REDIS_URL)."""
    return {"DIFO_URL": url, **extra}
