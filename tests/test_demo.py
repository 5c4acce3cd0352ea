"""`difo demo`: the README's first command runs to its summary on the embedded backend."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_demo_runs_every_unit_and_stops_cleanly() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "difo.cli", "demo", "--exit"], cwd=ROOT, capture_output=True,
        text=True, timeout=120, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    summary = next(line for line in result.stdout.splitlines() if line.startswith("summary"))
    enqueued = int(summary.split()[1])
    succeeded = int(summary.split(",")[1].split()[0])
    assert enqueued == 660 and succeeded >= enqueued
    assert "done      the server stopped gracefully" in result.stdout
    assert "sqlite:///" in result.stdout
