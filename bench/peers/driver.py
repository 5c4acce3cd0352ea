"""Run one side of the bench inside a system's own virtual environment.

    python driver.py SYSTEM send COUNT      # one by one through the public API, timed
    python driver.py SYSTEM fill COUNT [UNIT PAD]
    python driver.py SYSTEM bulk COUNT      # difo only: perform_bulk, timed
    python driver.py SYSTEM paced RATE COUNT
    python driver.py baseline incr COUNT    # the bare INCR loop (app_baseline.py)

Prints one JSON line: {"seconds": ...}. The app is bench/peers/app_SYSTEM.py.
"""

from __future__ import annotations

import importlib
import json
import sys
import time

WARM_UP = 100


def main(argv: list[str]) -> int:
    system, mode, *rest = argv
    app = importlib.import_module(f"app_{system}")
    if mode in ("send", "incr"):
        loop = getattr(app, mode)
        loop(WARM_UP)
        started = time.perf_counter()
        loop(int(rest[0]))
    elif mode == "fill":
        started = time.perf_counter()
        if len(rest) > 1:
            app.fill(int(rest[0]), rest[1], int(rest[2]))
        else:
            app.fill(int(rest[0]))
    elif mode == "bulk":
        app.bulk(1000)
        started = time.perf_counter()
        app.bulk(int(rest[0]))
    elif mode == "paced":
        started = time.perf_counter()
        app.paced(float(rest[0]), int(rest[1]))
    else:
        raise SystemExit(f"driver: unknown mode {mode!r}")
    print(json.dumps({"seconds": time.perf_counter() - started}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
