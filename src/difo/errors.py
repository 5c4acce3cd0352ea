"""Every exception difo raises, under one root: DifoError."""

from __future__ import annotations


class DifoError(Exception):
    """The root of every error difo raises."""


class ConfigError(DifoError):
    """A setting (environment variable or flag) has a value difo cannot use."""


class ArgumentError(DifoError, TypeError):
    """A unit argument is not plain JSON data; nothing was enqueued."""


class FunctionError(DifoError, ValueError):
    """A function cannot be enqueued: a server could never find it by name."""


class BackendError(DifoError):
    """The backend (Redis or SQLite) failed or could not be reached."""


class BackendUnavailable(BackendError):
    """The backend could not be reached at its URL."""


class BulkWriteError(BackendError):
    """A bulk enqueue failed part way; `written` units were stored before the failure."""

    def __init__(self, message: str, written: int) -> None:
        super().__init__(message)
        self.written = written


class UnitRefused(DifoError):
    """A unit names a function the server may not call (not registered, module not imported)."""


class UnitTimeout(DifoError):
    """A unit ran longer than its time limit (`@difo.job(timeout=...)`, DIFO_UNIT_TIMEOUT)."""


class PayloadError(DifoError):
    """A stored payload is not a valid unit (not JSON, or lacking `class`/`args`)."""
