"""Sidekiq's Ruby side, driven from Python: the gem's client and API, its Web UI, its server.

Ruby runs from small scripts beside this file: `sidekiq.rb` (Sidekiq's client and API: push,
view, act, signal), `web.rb` (Sidekiq::Web over WEBrick) and `worker.rb` (a worker class for
a real `sidekiq` process). Anything that needs Ruby first checks it is there: a skip saying
what is missing, or a failure under CI=true (Debian packages: ruby-sidekiq ruby-rack
ruby-webrick).
"""

from __future__ import annotations

import functools
import http.cookiejar
import json
import os
import re
import shutil
import signal
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from tests.conftest import IN_CI, free_port, wait_for

HERE = Path(__file__).resolve().parent
PACKAGES = "apt-get install ruby-sidekiq ruby-rack ruby-webrick"
# The scripts pin the layout measured against Sidekiq 6.4.1 (SIDEKIQ_LAYOUT.md).
SUPPORTED = "6."


def require(problem: str | None) -> None:
    """Skip when `problem` is set: a failure under CI=true, where every tool must be."""
    if problem is None:
        return
    message = f"{problem}; the Sidekiq interop tests run Sidekiq's own Ruby code ({PACKAGES})"
    if IN_CI:
        pytest.fail(message + " -- under CI=true a missing tool fails the run", pytrace=False)
    pytest.skip(message)


@functools.cache
def _gem_problem() -> tuple[str | None, str]:
    """(what is missing or None, the gem's version)."""
    ruby = shutil.which("ruby")
    if ruby is None:
        return "ruby is not installed", ""
    done = subprocess.run(
        [ruby, "-e", 'require "sidekiq"; require "sidekiq/api"; require "sidekiq/web"; '
         'require "webrick"; print Sidekiq::VERSION'],
        capture_output=True, text=True, timeout=60,
    )
    if done.returncode != 0:
        return f"the sidekiq gem (or webrick) does not load: {done.stderr.strip()[-300:]}", ""
    version = done.stdout.strip()
    if not version.startswith(SUPPORTED):
        return f"sidekiq {version} is installed; these tests pin Sidekiq 6.4.x", version
    return None, version


def require_sidekiq() -> str:
    """The sidekiq gem's version (6.4.1), or a skip naming what is missing."""
    problem, version = _gem_problem()
    require(problem)
    return version


def require_executable(name: str) -> str:
    path = shutil.which(name)
    require(None if path else f"the `{name}` executable is not on PATH")
    assert path is not None
    return path


# -- Sidekiq's client and API ----------------------------------------------------------------


@dataclass
class Pushed:
    """What Sidekiq::Client.push / push_bulk returned, and the payloads as stored."""

    jids: list[list[str]]  # one list per item pushed (push_bulk gives several)
    stored: dict[str, str]  # jid -> the JSON as Ruby wrote it into Redis

    def payload(self, jid: str) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.stored[jid])
        return parsed


class Sidekiq:
    """Sidekiq 6.4.1's Ruby client and API over one Redis: one `ruby sidekiq.rb` per call."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.version = require_sidekiq()

    def run(self, command: str, request: dict[str, Any] | None = None) -> Any:
        done = subprocess.run(
            ["ruby", str(HERE / "sidekiq.rb"), self.url, command],
            input=json.dumps(request or {}), capture_output=True, text=True, timeout=60,
        )
        if done.returncode != 0:
            raise AssertionError(f"sidekiq.rb {command} failed ({done.returncode}):\n"
                                 f"{done.stderr[-3000:]}")
        return json.loads(done.stdout)

    def push(self, *items: dict[str, Any]) -> Pushed:
        """Sidekiq::Client.push(item) for each item (push_bulk for one with "bulk": True)."""
        reply = self.run("push", {"items": list(items)})
        return Pushed(reply["jids"], reply["stored"])

    def view(self) -> dict[str, Any]:
        """Stats, history, queues, sets, processes and workers as Sidekiq's API reads them;
        fails when any section made Sidekiq raise."""
        view: dict[str, Any] = self.run("view")
        assert view["errors"] == [], json.dumps(
            {name: view.get(name) for name in ("errors", *view["errors"])}, indent=1)[:4000]
        return view

    def act(self, where: str, jid: str, action: str, at: float | None = None) -> bool:
        """`find_job(jid).<action>` on a set (retry, schedule, dead) or "queue:NAME":
        delete, retry, kill, add_to_queue, or reschedule to `at`."""
        request: dict[str, Any] = {"where": where, "jid": jid, "action": action}
        if at is not None:
            request["at"] = at
        return bool(self.run("act", request)["found"])

    def signal(self, identity: str, action: str) -> bool:
        """Sidekiq::Process#quiet!, #stop! or #dump_threads of the process listed under
        `identity` (action: quiet, stop, dump_threads)."""
        return bool(self.run("signal", {"identity": identity, "action": action})["found"])


# -- what the tests look at -----------------------------------------------------------------


def runs(r: redis.Redis, tag: str) -> list[dict[str, Any]]:
    """The runs tests.interop.jobs recorded for `tag`, oldest first."""
    return [json.loads(raw) for raw in cast(list[bytes], r.lrange(f"interop:{tag}", 0, -1))]


def wait_runs(r: redis.Redis, tag: str, count: int, timeout: float = 15) -> list[dict[str, Any]]:
    """Wait until `tag` ran at least `count` times; its runs."""
    wait_for(lambda: len(runs(r, tag)) >= count, timeout=timeout)
    return runs(r, tag)


def process_with_pid(view: dict[str, Any], pid: int) -> dict[str, Any] | None:
    """The process Sidekiq's ProcessSet lists for `pid`, if any."""
    return next((p for p in view["processes"] if p["pid"] == pid), None)


def identity_of(sidekiq: Sidekiq, pid: int, timeout: float = 10) -> str:
    """The identity of the server process `pid` once Sidekiq's ProcessSet lists it."""
    found: dict[str, Any] = {}

    def listed() -> bool:
        process = process_with_pid(sidekiq.view(), pid)
        if process:
            found.update(process)
        return process is not None

    wait_for(listed, timeout=timeout, interval=0.2)
    return str(found["identity"])


def by_jid(jobs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {job["jid"]: job for job in jobs}


def near(iso: str | None, at: float, within: float = 60) -> bool:
    """Whether an ISO-8601 time Ruby printed is within `within` seconds of epoch `at`: a
    time stored in the wrong unit shows up as a date centuries away."""
    if not iso:
        return False
    parsed = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return abs(parsed.timestamp() - at) <= within


def total(history: dict[str, int]) -> int:
    """A Sidekiq::Stats::History series summed over its days (safe across midnight UTC)."""
    return sum(history.values())


# -- Sidekiq::Web ----------------------------------------------------------------------------


class WebUI:
    """Sidekiq::Web served by `ruby web.rb`; a browser-like client with a cookie jar."""

    def __init__(self, url: str, log: Path) -> None:
        require_sidekiq()
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            ["ruby", str(HERE / "web.rb"), url, str(self.port)],
            stdout=self._log, stderr=subprocess.STDOUT,
        )
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()),
            _NoRedirect(),
        )
        wait_for(self._answers, timeout=30, interval=0.1)

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"web.rb exited ({self.process.returncode}):\n{self.log()}")
        try:
            self.get("/stats")
            return True
        except OSError:
            return False

    def get(self, path: str) -> tuple[int, str]:
        """(status, body) of GET `path` (redirects are returned, not followed)."""
        return self._open(urllib.request.Request(self.base + path))

    def post(self, path: str, form: dict[str, str]) -> tuple[int, str]:
        """POST a form as the page's buttons do; it must carry the page's `token`."""
        data = urllib.parse.urlencode(form).encode()
        return self._open(urllib.request.Request(self.base + path, data=data, method="POST"))

    def _open(self, request: urllib.request.Request) -> tuple[int, str]:
        try:
            with self.opener.open(request, timeout=30) as response:
                return response.status, response.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode("utf-8", "replace")

    @staticmethod
    def token(page: str) -> str:
        """The CSRF token the page's forms carry."""
        found = re.search(r"name='authenticity_token' value='([^']+)'", page)
        assert found, "no authenticity_token in the page"
        return found.group(1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


# -- a real `sidekiq` process ------------------------------------------------------------------


class RubyServer:
    """`sidekiq -r worker.rb` (Sidekiq's own server) in a subprocess."""

    def __init__(self, url: str, log: Path, *args: str) -> None:
        require_sidekiq()
        executable = require_executable("sidekiq")
        environment = dict(os.environ, REDIS_URL=url)
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [executable, "-r", str(HERE / "worker.rb"), *args],
            cwd=HERE, env=environment, stdout=self._log, stderr=subprocess.STDOUT,
        )

    def stop(self, timeout: float = 30) -> int:
        """TERM: Sidekiq quiets, finishes or puts back its jobs, flushes its counts, exits."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._log.close()
