"""The `backend` fixture: every conformance test runs once per Backend implementation.

Tests here use the Backend protocol only (garbage is injected with `set_add`), so the same
files are the contract for every backend. What only Redis's layout shows is tested in
tests/redis.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from difo import unit
from difo.backends import Backend, open_backend

# Every backend honours the same contract; a test that cannot apply to one says why.
BACKENDS = ["redis", "sqlite"]


def backend_url(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store of kind `name`."""
    if name == "redis":
        return str(request.getfixturevalue("redis_url"))
    if name == "sqlite":
        return f"sqlite:///{tmp_path / 'difo.db'}"
    raise AssertionError(f"no conformance store for backend {name!r}")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    opened = open_backend(backend_url(request.param, request, tmp_path))
    yield opened
    opened.close()


_names = itertools.count()


@pytest.fixture
def name() -> Callable[[str], str]:
    """Unique names for queues and processes, so no test sees another's data."""
    prefix = os.urandom(3).hex()

    def make(kind: str) -> str:
        return f"{kind}-{prefix}-{next(_names)}"

    return make


def payload(marker: Any, queue: str = "default", **fields: Any) -> bytes:
    """A valid unit whose second argument is `marker` (the first names the suite)."""
    built = unit.build("tests.functions:record", ["conformance", marker], queue)
    built.update(fields)
    return unit.encode(built)


def marker_of(raw: bytes) -> Any:
    return unit.decode(raw).args[1]
