"""A module whose import leaves a marker file: a unit naming `importlib:import_module` with
this module's name must never get it imported (tests/test_security.py)."""

from __future__ import annotations

import os
from pathlib import Path

_marker = os.environ.get("DIFO_EVIL_MARKER")
if _marker:
    Path(_marker).write_text("imported")
