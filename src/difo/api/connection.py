"""Which backend an API object reads: one given, one opened from a URL, or the default."""

from __future__ import annotations

from difo.backends import Backend, open_backend

_opened: dict[str, Backend] = {}


def backend_for(backend: Backend | str | None) -> Backend:
    """`backend` itself, a backend for URL `backend` (opened once), or the default client's."""
    if backend is None:
        from difo import client

        return client.default().backend
    if isinstance(backend, str):
        if backend not in _opened:
            _opened[backend] = open_backend(backend)
        return _opened[backend]
    return backend
