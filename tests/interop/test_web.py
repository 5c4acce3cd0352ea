"""Sidekiq's Web UI renders difo: Sidekiq::Web (6.4.1, a Rack app served by `web.rb`) shows
difo's servers, busy workers, queues, scheduled, retry and dead units on every page, with
their jids, function names and dates near now, and its buttons act on difo's units.
"""

from __future__ import annotations

import html
import json
import re
import socket
import time
from datetime import datetime
from typing import Any, cast

import redis

import difo
from difo.api import Queue
from difo.client import Client
from tests.conftest import wait_for
from tests.interop import jobs
from tests.interop.ruby import Sidekiq, WebUI, identity_of, process_with_pid, wait_runs

EXTRA = ("--import", "tests.interop.jobs")
FAST = {"DIFO_HEARTBEAT": "1", "DIFO_DEAD_AFTER": "3"}
RECORD = "tests.interop.jobs:record"


def fill(start_server: Any, sidekiq: Sidekiq, r: redis.Redis) -> dict[str, Any]:
    """Two difo servers (one busy); units in a queue, the schedule, the retry set (retried
    once and not yet) and the dead set (with an undecodable entry difo moved there)."""
    busy = start_server(*EXTRA, "-q", "py-web-busy", "--tag", "webtag", env=FAST)
    failing = start_server(*EXTRA, "-q", "py-web-fail", env=FAST)
    made = {
        "busy": difo.perform_on("py-web-busy", jobs.sleep, "web-busy", 30),
        "queued": difo.perform_on("py-web", jobs.record, "web-queued", {"k": [1, 2]},
                                  "é ✓ 😀 <b>&amp;</b> \"'"),
        "scheduled": difo.perform_in(300, jobs.record, "web-scheduled", queue="py-web"),
        "retry": jobs.retried.perform_on("py-web-fail", "web-retry"),
        "twice": jobs.retried_twice.perform_on("py-web-fail", "web-twice"),
        "dead": jobs.dead_at_once.perform_on("py-web-fail", "web-dead"),
        "servers": (busy, failing),
    }
    r.lpush("queue:py-web-fail", b"{not json")
    wait_runs(r, "web-busy", 1)
    wait_runs(r, "web-twice", 2)
    wait_for(lambda: r.zcard("retry") == 2 and r.zcard("dead") == 2)
    wait_for(lambda: sidekiq.view()["stats"]["workers_size"] == 1, interval=0.2)
    return made


def test_every_page_renders_difo_data(
    client: Client, sidekiq: Sidekiq, start_server: Any, r: redis.Redis, web_ui: WebUI
) -> None:
    made = fill(start_server, sidekiq, r)
    busy, failing = made["servers"]
    host = socket.gethostname()

    def page(path: str, *expected: str) -> str:
        status, body = web_ui.get(path)
        assert status == 200, f"GET {path}: {status}\n{body[:2000]}\n{web_ui.log()}"
        for text in expected:
            assert text in body, f"GET {path}: {text!r} not in the page"
        assert_times_near_now(body)
        return body

    page("/", "Dashboard", "Processed", "Failed")
    busy_page = page("/busy", f"{host}:{busy.process.pid}", f"{host}:{failing.process.pid}",
                     "webtag", "difo", made["busy"], "tests.interop.jobs:sleep", "py-web-busy")
    assert "web-busy" in busy_page  # the busy unit's arguments
    page("/queues", "py-web", "py-web-busy", "py-web-fail")
    page("/queues/py-web", made["queued"], RECORD, "web-queued")

    # Each list page, then the unit's detail page through the link a user clicks.
    for listing, jid, function, details in (
        ("/scheduled", made["scheduled"], RECORD, ("web-scheduled", "Scheduled")),
        ("/retries", made["retry"], "tests.interop.jobs:retried",
         ("retried web-retry failed", "Originally Failed", "tests/interop/jobs.py")),
        ("/retries", made["twice"], "tests.interop.jobs:retried_twice",
         ("Retry Count", "Last Retry", "tests/interop/jobs.py")),
        ("/morgue", made["dead"], "tests.interop.jobs:dead_at_once",
         ("KeyError", "tests/interop/jobs.py")),
        ("/morgue", invalid_jid(r), "difo:InvalidPayload", ("payload is not JSON",)),
    ):
        body = page(listing, jid, function)
        page(detail_link(body, listing, jid), jid, function, *details)
    # Pages past the first and other page sizes read through the same paging.
    page("/retries?page=2&count=1")
    page("/queues/py-web?direction=asc", made["queued"])

    def web_stats() -> dict[str, Any]:
        status, body = web_ui.get("/stats")
        assert status == 200
        stats: dict[str, Any] = json.loads(body)["sidekiq"]
        return stats

    # Five runs so far, all failed; the counts reach Redis with the servers' next beat.
    wait_for(lambda: web_stats()["processed"] == 5, interval=0.2)
    assert web_stats() == {"processed": 5, "failed": 5, "busy": 1, "processes": 2,
                           "enqueued": 1, "scheduled": 1, "retries": 2, "dead": 2,
                           "default_latency": 0}
    status, body = web_ui.get("/stats/queues")
    assert status == 200
    assert json.loads(body) == {"py-web": 1, "py-web-busy": 0, "py-web-fail": 0}


def test_web_buttons_act_on_difo_units(
    client: Client, sidekiq: Sidekiq, start_server: Any, r: redis.Redis, web_ui: WebUI
) -> None:
    made = fill(start_server, sidekiq, r)
    busy, _ = made["servers"]
    other = difo.perform_on("py-web", jobs.record, "web-kept")

    # Delete from a queue: the form carries the stored payload (HTML-escaped, non-ASCII),
    # and Sidekiq removes it by its exact bytes.
    body = web_ui.get("/queues/py-web")[1]
    form = next(value for value in form_values(body, "key_val") if made["queued"] in value)
    status, _ = web_ui.post("/queues/py-web/delete",
                            {"authenticity_token": web_ui.token(body), "key_val": form})
    assert status == 302
    assert [entry.jid for entry in Queue("py-web", backend=client.backend)] == [other]

    # "Retry now" in the morgue: difo's failing server runs the unit again.
    body = web_ui.get("/morgue")[1]
    detail = detail_link(body, "/morgue", made["dead"])
    page = web_ui.get(detail)[1]
    status, _ = web_ui.post(detail, {"authenticity_token": web_ui.token(page),
                                     "retry": "Retry Now"})
    assert status == 302
    assert wait_runs(r, "web-dead", 2)[1]["jid"] == made["dead"]

    # "Add to queue" for a scheduled unit, then "Quiet" on the Busy page.
    body = web_ui.get("/scheduled")[1]
    detail = detail_link(body, "/scheduled", made["scheduled"])
    page = web_ui.get(detail)[1]
    status, _ = web_ui.post(detail, {"authenticity_token": web_ui.token(page),
                                     "add_to_queue": "Add to queue"})
    assert status == 302
    assert made["scheduled"] in [entry.jid for entry in Queue("py-web", backend=client.backend)]

    identity = identity_of(sidekiq, busy.process.pid)
    page = web_ui.get("/busy")[1]
    status, _ = web_ui.post("/busy", {"authenticity_token": web_ui.token(page),
                                      "identity": identity, "quiet": "1"})
    assert status == 302

    def quiet() -> bool:
        process = process_with_pid(sidekiq.view(), busy.process.pid)
        return bool(process and process["stopping?"])

    wait_for(quiet, timeout=10, interval=0.2)


def detail_link(page: str, listing: str, jid: str) -> str:
    """The href of the unit's detail page (`/retries/SCORE-JID`...), as a user clicks it."""
    links = re.findall(rf'href="({re.escape(listing)}/[^"]+-{jid})"', page)
    assert links, f"no link to {listing}/SCORE-{jid} in the page"
    return html.unescape(links[0])


def invalid_jid(r: redis.Redis) -> str:
    """The jid difo gave the undecodable entry it moved to the dead set."""
    for raw in cast(list[bytes], r.zrange("dead", 0, -1)):
        payload = json.loads(raw)
        if payload["class"] == "difo:InvalidPayload":
            return str(payload["jid"])
    raise AssertionError("no difo:InvalidPayload in the dead set")


def assert_times_near_now(page: str) -> None:
    """Every time the page renders (`<time datetime=...>`) is within an hour of now: a time
    stored in the wrong unit would render centuries away."""
    for stamp in re.findall(r'datetime="([^"]+)"', page):
        rendered = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
        assert abs(rendered - time.time()) < 3600, stamp


def form_values(page: str, name: str) -> list[str]:
    return [html.unescape(value)
            for value in re.findall(rf'name="{name}" value="([^"]*)"', page)]
