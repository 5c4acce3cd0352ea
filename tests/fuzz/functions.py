"""Functions for the fuzz and security tests' servers (`--import tests.fuzz.functions`)."""

from __future__ import annotations

from tests.functions import results


def sink(*args: object) -> None:
    """Takes any arguments; counts the units that ran."""
    results().incr("results:fuzz:ran")
