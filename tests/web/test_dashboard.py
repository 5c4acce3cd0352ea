"""The dashboard in headless Chromium, against a private Redis holding units left by a real
`difo server`: every page shows the backend's numbers, every button changes the backend,
payload text is inert, and screenshots land in test-artifacts/web.
"""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import difo
from difo import api
from tests.conftest import ROOT, ServerProcess, wait_for
from tests.web import web_functions

XSS = "<script>alert('xss')</script>"
IMG = "<img src=x onerror=alert(2)>"
IDLE = "web-idle"  # a queue no server reads


def populate(start_server: Any) -> ServerProcess:
    """Real units from a real server: 5 finished, 1 retry, 2 dead, 1 busy, 3 waiting in
    IDLE (XSS in their arguments), 2 scheduled."""
    server: ServerProcess = start_server("--import", "tests.web.web_functions",
                                         "--heartbeat", "0.5")
    for number in range(5):
        difo.perform(web_functions.add, number, number)
    difo.perform(web_functions.fail_later, XSS)
    difo.perform(web_functions.die, "dead on arrival")
    difo.perform(web_functions.die, "second death")
    difo.perform(web_functions.hold, 60)
    for _ in range(3):
        difo.perform_on(IDLE, web_functions.record, XSS, IMG)
    difo.perform_in(3600, web_functions.add, 1, 2)
    difo.perform_in(7200, web_functions.add, 3, 4)

    def settled() -> bool:
        stats = api.Stats()
        return (stats.processed == 8 and stats.failed == 3 and stats.retry_size == 1
                and stats.dead_size == 2 and stats.workers_size == 1)

    wait_for(settled, timeout=20)
    return server


def stat(page: Any, name: str) -> str:
    return str(page.locator(f"[data-stat={name}]").inner_text()).replace(",", "")


def test_pages_show_the_backend_and_buttons_change_it(
        client: Any, redis_url: str, start_server: Any, serve: Any, page: Any,
        shot: Any) -> None:
    from difo.web import create_app

    populate(start_server)
    web = serve(create_app(redis_url, poll_seconds=1))

    # Dashboard: the totals, the history chart, the backend.
    page.goto(web.url + "/")
    expected = {"processed": "8", "failed": "3", "busy": "1", "enqueued": "3",
                "retries": "1", "scheduled": "2", "dead": "2"}
    assert {name: stat(page, name) for name in expected} == expected
    assert page.locator("svg.chart").count() >= 1
    assert "Redis version" in page.inner_text("table.info")
    page.goto(web.url + "/?days=7")
    assert page.locator("a.active", has_text="7 days").count() == 1

    # Live refresh: a new unit shows without a reload; the live chart draws; pausable.
    # (Polled from Python: the page's Content-Security-Policy forbids evaluated scripts.)
    line = page.locator("#live-chart polyline.processed")
    wait_for(lambda: line.count() and len((line.get_attribute("points") or "").split()) >= 2)
    difo.perform_on(IDLE, web_functions.record, "late")
    wait_for(lambda: stat(page, "enqueued") == "4")
    shot(page, "dashboard")
    page.click("#live-toggle")
    assert page.inner_text("#live-status") == "paused"
    page.click("#live-toggle")
    assert page.inner_text("#live-status").startswith("live")

    # Busy: the server and its busy worker.
    process = next(iter(api.ProcessSet()))
    page.goto(web.url + "/busy")
    text = page.inner_text("main")
    assert process.identity in text
    assert "tests.web.web_functions:hold" in text
    assert "running" in text
    shot(page, "busy")

    # Queues: sizes; pause and unpause change the backend.
    page.goto(web.url + "/queues")
    row = page.locator(f"tr[data-queue='{IDLE}']")
    assert row.locator("td.num").first.inner_text() == "4"
    row.get_by_role("button", name="Pause").click()
    assert api.Queue(IDLE).paused
    page.locator(f"tr[data-queue='{IDLE}']").get_by_role("button", name="Unpause").click()
    assert not api.Queue(IDLE).paused
    shot(page, "queues")

    # A queue's units: payload text is shown as text, never run.
    page.goto(web.url + f"/queues/{IDLE}")
    assert page.get_by_text(XSS).count() >= 1
    assert page.get_by_text(IMG).count() >= 1
    assert page.locator("main script, main img").count() == 0
    shot(page, "queue")
    page.get_by_role("button", name="Delete").first.click()
    assert api.Queue(IDLE).size == 3
    page.goto(web.url + f"/queues/{IDLE}?q=nomatch")
    assert "Nothing here" in page.inner_text("main")

    # Retries: function, args, error; the detail page has the decoded backtrace.
    page.goto(web.url + "/retries")
    text = page.inner_text("main")
    assert "tests.web.web_functions:fail_later" in text and "ValueError" in text
    assert page.get_by_text(XSS).count() >= 1
    shot(page, "retries")
    page.locator("tbody a").first.click()
    assert "/retries/" in page.url
    backtrace = page.inner_text("pre.backtrace")
    assert "web_functions.py" in backtrace and "fail_later" in backtrace
    shot(page, "retry-entry")
    # Kill: retry -> dead.
    page.get_by_role("button", name="Kill").click()
    wait_for(lambda: api.RetrySet().size == 0 and api.DeadSet().size == 3)

    # Dead: retry now puts it on its queue; it runs, fails and waits in retries again.
    page.goto(web.url + "/dead?q=fail_later")
    assert page.locator("tbody tr").count() == 1
    shot(page, "dead")
    page.get_by_role("button", name="Retry").first.click()
    wait_for(lambda: api.RetrySet().size == 1 and api.DeadSet().size == 2, timeout=10)
    # Bulk delete of the selected rows.
    page.goto(web.url + "/dead")
    page.locator("tbody input[type=checkbox]").first.check()
    page.locator("p.inline-actions").get_by_role("button", name="Delete").click()
    assert api.DeadSet().size == 1

    # Metrics: per function, then one function's chart.
    page.goto(web.url + "/functions")
    row = page.locator("tr", has_text="tests.web.web_functions:add")
    assert row.locator("td.num").first.inner_text() == "5"
    shot(page, "metrics")
    row.locator("a").click()
    assert page.locator("svg.chart polyline").count() >= 2
    shot(page, "function")

    # Scheduled: enqueue one now (it runs), delete all.
    page.goto(web.url + "/scheduled")
    assert page.locator("tbody tr").count() == 2
    shot(page, "scheduled")
    page.get_by_role("button", name="Enqueue", exact=True).first.click()
    assert api.ScheduledSet().size == 1
    page.get_by_role("button", name="Delete all").click()
    assert api.ScheduledSet().size == 0

    # Clear a queue, after the confirmation page.
    page.goto(web.url + f"/queues/{IDLE}")
    page.get_by_role("link", name="Clear queue…").click()
    page.fill("input[name=confirm]", IDLE)
    page.get_by_role("button", name="Clear queue").click()
    assert api.Queue(IDLE).size == 0

    # Quiet the server from the Busy page.
    page.goto(web.url + "/busy")
    page.locator("tbody").get_by_role("button", name="Quiet").click()
    wait_for(lambda: next(iter(api.ProcessSet())).is_quiet, timeout=10)

    # /metrics and /healthz.
    with urllib.request.urlopen(web.url + "/metrics") as response:
        assert b"difo_units_processed_total" in response.read()
    with urllib.request.urlopen(web.url + "/healthz") as response:
        assert response.read() == b"ok"
    assert page.dialogs == []


def _request(url: str, *, data: bytes | None = None, headers: dict[str, str] | None = None,
             ) -> tuple[int, dict[str, str], bytes]:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with opener.open(request) as response:
            return response.status, _lower(response.headers.items()), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, _lower(exc.headers.items()), exc.read()


def _lower(headers: Any) -> dict[str, str]:
    return {name.lower(): value for name, value in headers}


def test_auth_and_csrf(client: Any, redis_url: str, serve: Any, page: Any) -> None:
    from difo.web import create_app

    difo.perform_on(IDLE, web_functions.record, 1)
    web = serve(create_app(redis_url, auth="admin:s3cret", token="t0ken"))
    basic = {"Authorization": "Basic YWRtaW46czNjcmV0"}  # admin:s3cret

    status, headers, _ = _request(web.url + "/queues")
    assert status == 401 and headers["www-authenticate"].startswith("Basic")
    assert _request(web.url + "/queues", headers={"Authorization": "Basic YWRtaW46bm8="})[0] \
        == 401
    assert _request(web.url + "/healthz")[0] == 200
    assert _request(web.url + "/metrics", headers={"Authorization": "Bearer t0ken"})[0] == 200
    status, headers, body = _request(web.url + "/queues", headers=basic)
    assert status == 200
    cookie = headers["set-cookie"].split(";")[0]
    token = cookie.split("=", 1)[1]
    assert f'value="{token}"' in body.decode()

    form = {"Content-Type": "application/x-www-form-urlencoded", **basic}
    pause = web.url + f"/queues/{IDLE}/pause"
    # No token, a token without its cookie, a cookie with another token, a forged token.
    assert _request(pause, data=b"", headers=form)[0] == 403
    assert _request(pause, data=f"csrf={token}".encode(), headers=form)[0] == 403
    assert _request(pause, data=b"csrf=abc.def", headers={**form, "Cookie": cookie})[0] == 403
    forged = "abc." + "0" * 64
    assert _request(pause, data=f"csrf={forged}".encode(),
                    headers={**form, "Cookie": f"difo_csrf={forged}"})[0] == 403
    assert not api.Queue(IDLE).paused
    # GET on an action's address changes nothing.
    assert _request(pause, headers=basic)[0] == 405
    assert not api.Queue(IDLE).paused
    # The page's own token and cookie pass.
    status, headers, _ = _request(pause, data=f"csrf={token}".encode(),
                                  headers={**form, "Cookie": cookie})
    assert status == 303 and api.Queue(IDLE).paused

    # A browser without credentials is refused; with them it sees the page.
    with pytest.raises(Exception, match="ERR_INVALID_AUTH_CREDENTIALS"):
        page.goto(web.url + "/queues")  # Chromium's answer to a 401 it has no password for
    context = page.context.browser.new_context(
        http_credentials={"username": "admin", "password": "s3cret"})
    tab = context.new_page()
    assert tab.goto(web.url + "/queues").status == 200
    tab.locator(f"tr[data-queue='{IDLE}']").get_by_role("button", name="Unpause").click()
    assert not api.Queue(IDLE).paused
    context.close()


def test_mounted_under_a_prefix_with_a_hook(client: Any, redis_url: str, serve: Any,
                                            page: Any) -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route

    from difo.web import create_app

    def is_staff(request: Request) -> bool:
        return request.cookies.get("user") == "staff"

    async def home(request: Request) -> PlainTextResponse:
        return PlainTextResponse("the host app")

    difo.perform_on(IDLE, web_functions.record, 1)
    host = Starlette(routes=[Route("/", home),
                             Mount("/difo", app=create_app(redis_url, auth=is_staff))])
    web = serve(host)
    assert page.goto(web.url + "/difo/queues").status == 401
    page.context.add_cookies([{"name": "user", "value": "staff", "url": web.url}])
    page.goto(web.url + "/difo/")
    page.get_by_role("link", name="Queues").click()
    assert page.url == web.url + "/difo/queues"
    page.locator(f"tr[data-queue='{IDLE}']").get_by_role("button", name="Pause").click()
    assert page.url == web.url + "/difo/queues"
    assert api.Queue(IDLE).paused
    assert _request(web.url + "/")[2] == b"the host app"


def test_sqlite_backend(tmp_path: Path, serve: Any, page: Any, shot: Any) -> None:
    from difo.client import Client
    from difo.web import create_app

    url = f"sqlite:///{tmp_path / 'difo.db'}"
    server = ServerProcess(url, "--import", "tests.web.web_functions", "--heartbeat", "0.5",
                           "--poll-interval", "0.1")
    units = Client(url)
    try:
        units.push(web_functions.add, [1, 2])
        units.push(web_functions.die, [XSS])
        units.push(web_functions.record, [XSS], queue=IDLE)
        wait_for(lambda: api.Stats(backend=url).processed == 2, timeout=20)
        web = serve(create_app(url))
        page.goto(web.url + "/")
        assert stat(page, "processed") == "2" and stat(page, "dead") == "1"
        assert str(tmp_path / "difo.db") in page.inner_text("table.info")
        shot(page, "dashboard-sqlite")
        page.goto(web.url + "/dead")
        assert page.get_by_text(XSS).count() >= 1
        page.get_by_role("button", name="Delete", exact=True).first.click()
        assert api.DeadSet(backend=url).size == 0
        assert page.dialogs == []
    finally:
        server.stop()
        units.close()


def test_cli_refuses_a_public_address_without_auth(redis_url: str) -> None:
    from tests.conftest import free_port
    from tests.web.conftest import require_web

    require_web()
    command = [sys.executable, "-m", "difo.cli", "web", "--url", redis_url]
    refused = subprocess.run([*command, "--host", "0.0.0.0", "--port", str(free_port())],
                             cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2
    assert "--auth" in refused.stderr and "0.0.0.0" in refused.stderr
    bad = subprocess.run([*command, "--auth", "nocolon"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "USER:PASSWORD" in bad.stderr

    port = free_port()
    process = subprocess.Popen([*command, "--port", str(port)], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def healthy() -> bool:
            try:
                return _request(f"http://127.0.0.1:{port}/healthz")[0] == 200
            except OSError:
                return False

        wait_for(healthy, timeout=20, interval=0.1)
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    assert re.search(rb"difo web: .* on http://127\.0\.0\.1:\d+/", stderr)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2"])
def test_loopback_addresses(host: str) -> None:
    from difo.cli.web import is_loopback

    assert is_loopback(host)
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1")


def test_servers_and_the_cli_do_not_import_the_web_stack() -> None:
    code = ("import sys, difo, difo.server, difo.cli, difo.api; "
            "print(sorted(m for m in ('starlette', 'jinja2', 'uvicorn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
