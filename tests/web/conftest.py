"""Dashboard fixtures: the app served by uvicorn on a free loopback port, headless Chromium
(Debian's /usr/bin/chromium) driven by Playwright, and screenshots kept in test-artifacts/web.

Playwright's own browser download cannot run here, so the system Chromium is launched by
path. Missing Chromium or Playwright skips these tests, and fails them under CI=true.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IN_CI, ROOT, free_port

CHROMIUM = os.environ.get("DIFO_TEST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts" / "web"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-default-apps", "--disable-sync"]


def _missing(message: str) -> None:
    if IN_CI:
        pytest.fail(message + " -- under CI=true a missing tool fails the run")
    pytest.skip(message)


def require_web() -> None:
    """starlette, jinja2, uvicorn (the `web` extra) must be importable."""
    for module in ("starlette", "jinja2", "uvicorn"):
        if importlib.util.find_spec(module) is None:
            _missing(f"{module} is not installed (pip install -e '.[dev]' installs it)")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """A headless Chromium for the whole session."""
    require_web()
    if not Path(CHROMIUM).exists():
        _missing(f"{CHROMIUM} is missing (Debian's chromium package; .ci/run installs it)")
    if importlib.util.find_spec("playwright") is None:
        _missing("playwright is not installed (pip install -e '.[dev]' installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                              args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context and page; every dialog (alert) is recorded and dismissed,
    so a test can assert that none fired."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(10_000)
    tab.dialogs = []

    def on_dialog(dialog: Any) -> None:
        tab.dialogs.append(dialog.message)
        dialog.dismiss()

    tab.on("dialog", on_dialog)
    yield tab
    context.close()


class Served:
    """An ASGI app under uvicorn in a thread, on a free loopback port."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def serve() -> Iterator[Callable[[Any], Served]]:
    """serve(app) -> Served; every app served is stopped at teardown."""
    require_web()
    started: list[Served] = []

    def start(app: Any) -> Served:
        served = Served(app)
        started.append(served)
        return served

    yield start
    for served in started:
        served.stop()


@pytest.fixture
def shot() -> Callable[[Any, str], Path]:
    """shot(page, name): a full-page screenshot kept in test-artifacts/web/NAME.png."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def take(tab: Any, name: str) -> Path:
        path = ARTIFACTS / f"{name}.png"
        tab.screenshot(path=str(path), full_page=True)
        return path

    return take
