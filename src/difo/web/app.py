"""The dashboard: an ASGI app (Starlette, Jinja2) over difo.api, as Sidekiq's Web over api.rb.

Every page and action works as plain HTML forms; a little script of our own (static/
difo.js) refreshes numbers and draws the live chart. State is read and changed only through
difo.api (and difo.metrics for /metrics). GET never changes anything; every POST carries the
CSRF token (security.py). This package is the only one that imports starlette and jinja2.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from difo import api
from difo.api.connection import backend_for
from difo.api.sets import SetEntry, SortedSet
from difo.backends import Backend
from difo.errors import BackendError
from difo.web import charts
from difo.web.security import CSRF_COOKIE, CSRF_FIELD, Auth, Guard

HERE = Path(__file__).resolve().parent
PAGE_SIZE = 25
SETS: dict[str, type[SortedSet]] = {
    "retries": api.RetrySet, "scheduled": api.ScheduledSet, "dead": api.DeadSet,
}
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
       "frame-ancestors 'none'; form-action 'self'; base-uri 'none'")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def create_app(url: Backend | str | None = None, *, auth: Auth = None,
               token: str | None = None, secret: str | bytes | None = None,
               poll_seconds: float = 5.0) -> Dashboard:
    """The dashboard for backend `url` (a URL or Backend; default: DIFO_URL / REDIS_URL).

    auth: None, "user:password" (HTTP Basic) or a hook `(request) -> bool` (may be async);
    token: a bearer token accepted besides (for scripts and Prometheus);
    secret: the key signing CSRF tokens (random per process when None: pass one when
    several processes serve the same address).
    """
    return Dashboard(url, Guard(auth, token, secret), poll_seconds)


class Dashboard:
    """The ASGI app: the Starlette router behind the auth check and security headers."""

    def __init__(self, url: Backend | str | None, guard: Guard, poll_seconds: float) -> None:
        if url is None:
            from difo import config

            url = config.load().url
        self.backend = backend_for(url)
        self.guard = guard
        self.poll_seconds = poll_seconds
        self.env = Environment(loader=FileSystemLoader(HERE / "templates"),
                               autoescape=select_autoescape(["html"], default=True))
        self.env.filters.update(ago=_ago, utc=_utc, duration=_duration, short=_short,
                                size=_size, tojson_short=_json_short)
        pages = Pages(self)
        static = Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static")
        self.router = Starlette(routes=[*pages.routes(), static])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            async def secured(message: Message) -> None:
                if message["type"] == "http.response.start":
                    headers = list(message.get("headers", []))
                    headers += [(b"content-security-policy", CSP.encode()),
                                (b"x-frame-options", b"DENY"),
                                (b"x-content-type-options", b"nosniff"),
                                (b"referrer-policy", b"same-origin")]
                    message["headers"] = headers
                await send(message)

            path = scope["path"]
            root = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root):]
            if path != "/healthz" and not await self.guard.allowed(Request(scope)):
                response = PlainTextResponse("authentication required", 401,
                                             headers=self.guard.challenge)
                await response(scope, receive, secured)
                return
            await self.router(scope, receive, secured)
            return
        await self.router(scope, receive, send)


class Pages:
    """The handlers, one per page or action."""

    def __init__(self, app: Dashboard) -> None:
        self.app = app
        self.backend = app.backend

    def routes(self) -> list[Route]:
        found = [
            Route("/", self.dashboard),
            Route("/stats.json", self.stats_json),
            Route("/healthz", self.healthz),
            Route("/metrics", self.metrics),
            Route("/busy", self.busy),
            Route("/busy/{action}", self.busy_action, methods=["POST"]),
            Route("/queues", self.queues),
            Route("/queues/{name}", self.queue),
            Route("/queues/{name}/{action}", self.queue_action, methods=["POST"]),
            Route("/queues/{name}/clear", self.queue_clear_confirm),
            Route("/functions", self.functions),
            Route("/functions/{name}", self.function),
        ]
        for kind in SETS:
            found += [
                Route(f"/{kind}", self.set_page, name=kind),
                Route(f"/{kind}/bulk", self.set_bulk, methods=["POST"]),
                Route(f"/{kind}/all", self.set_all, methods=["POST"]),
                Route(f"/{kind}/{{key}}", self.set_entry),
                Route(f"/{kind}/{{key}}/{{action}}", self.set_action, methods=["POST"]),
            ]
        return found

    # -- rendering ---------------------------------------------------------------------------

    def render(self, request: Request, template: str, status: int = 200,
               **context: Any) -> HTMLResponse:
        cookie = request.cookies.get(CSRF_COOKIE)
        fresh = not self.app.guard.valid_token(cookie)
        csrf = self.app.guard.new_token() if fresh or cookie is None else cookie
        base = request.scope.get("root_path", "")
        html = self.app.env.get_template(template).render(
            base=base, csrf=csrf, csrf_field=CSRF_FIELD, now=time.time(),
            here=_here(request), section=template.split(".")[0],
            backend_url=self.backend.url, poll_seconds=self.app.poll_seconds, **context)
        response = HTMLResponse(html, status)
        if fresh:
            response.set_cookie(CSRF_COOKIE, csrf, httponly=True, samesite="strict",
                                path=base or "/", secure=request.url.scheme == "https")
        return response

    async def form(self, request: Request) -> dict[str, list[str]]:
        """The POSTed fields, after the CSRF check (403 when it fails)."""
        kind = request.headers.get("content-type", "").split(";")[0].strip()
        if kind != "application/x-www-form-urlencoded":
            raise HTTPException(415, "POST a form (application/x-www-form-urlencoded)")
        fields = parse_qs((await request.body()).decode("utf-8", "replace"),
                          keep_blank_values=True)
        given = next(iter(fields.get(CSRF_FIELD, [])), None)
        if not self.app.guard.csrf_ok(request.cookies.get(CSRF_COOKIE), given):
            raise HTTPException(403, "missing or wrong CSRF token: reload the page and retry")
        return fields

    def back(self, request: Request, fields: dict[str, list[str]], default: str) -> Response:
        """303 to the page the form came from (a path inside this app only)."""
        base = request.scope.get("root_path", "")
        target = (fields.get("next") or [""])[0]
        if not (target.startswith(base + "/") and not target.startswith("//")
                and "\\" not in target):
            target = base + default
        return RedirectResponse(target, 303)

    # -- dashboard ---------------------------------------------------------------------------

    async def dashboard(self, request: Request) -> Response:
        days = _choice(request.query_params.get("days"), (7, 30, 90), 30)
        stats = api.Stats(backend=self.backend)
        history = list(reversed(stats.history(days)))
        chart = charts.line_chart(
            [day.date[5:] for day in history],
            [("processed", "processed", [day.processed for day in history]),
             ("failed", "failed", [day.failed for day in history])],
            title=f"processed and failed per day, last {days} days")
        try:
            info = api.backend_info(backend=self.backend)
        except BackendError as exc:
            info = {"error": str(exc)}
        return self.render(request, "dashboard.html", stats=stats, totals=_totals(stats),
                           days=days, chart=chart, info=info)

    async def stats_json(self, request: Request) -> Response:
        stats = api.Stats(backend=self.backend)
        return JSONResponse({"time": stats.fetched_at, **_totals(stats)},
                            headers={"cache-control": "no-store"})

    async def healthz(self, request: Request) -> Response:
        try:
            self.backend.ping()
        except BackendError as exc:
            return PlainTextResponse(f"unavailable: {exc}", 503)
        return PlainTextResponse("ok")

    async def metrics(self, request: Request) -> Response:
        try:
            from difo.metrics import CONTENT_TYPE, exposition
        except ImportError:
            return PlainTextResponse("prometheus_client is not installed "
                                     "(pip install 'difo[metrics]')", 501)
        return Response(exposition(self.backend), media_type=CONTENT_TYPE)

    # -- busy --------------------------------------------------------------------------------

    async def busy(self, request: Request) -> Response:
        processes = api.ProcessSet(backend=self.backend)
        workers = api.Workers(backend=self.backend)
        return self.render(request, "busy.html", processes=processes, workers=workers)

    async def busy_action(self, request: Request) -> Response:
        fields = await self.form(request)
        action = request.path_params["action"]
        if action not in ("quiet", "stop"):
            raise HTTPException(404, "no such action")
        processes = api.ProcessSet(backend=self.backend)
        wanted = set(fields.get("identity", []))
        for process in processes:
            if process.identity in wanted or "all" in fields:
                process.quiet() if action == "quiet" else process.stop()
        return self.back(request, fields, "/busy")

    # -- queues ------------------------------------------------------------------------------

    async def queues(self, request: Request) -> Response:
        stats = api.Stats(backend=self.backend)
        rows = [{"name": name, "size": size, "latency": stats.latencies[name],
                 "paused": name in stats.paused_queues} for name, size in stats.queues.items()]
        return self.render(request, "queues.html", rows=rows)

    async def queue(self, request: Request) -> Response:
        queue = api.Queue(request.path_params["name"], backend=self.backend)
        query = request.query_params.get("q", "").strip()
        page = _page(request)
        if query:
            found = queue.search(query)
            total = len(found)
            entries = found[(page - 1) * PAGE_SIZE: page * PAGE_SIZE]
        else:
            total = queue.size
            entries = queue.page(page, PAGE_SIZE)
        return self.render(request, "queue.html", queue=queue, entries=entries, query=query,
                           pager=_pager(request, page, total), total=total)

    async def queue_action(self, request: Request) -> Response:
        fields = await self.form(request)
        queue = api.Queue(request.path_params["name"], backend=self.backend)
        action = request.path_params["action"]
        if action == "pause":
            queue.pause()
        elif action == "unpause":
            queue.unpause()
        elif action == "delete":
            for jid in fields.get("only") or fields.get("jid", []):
                queue.delete(jid)
        elif action == "clear":
            if (fields.get("confirm") or [""])[0] != queue.name:
                raise HTTPException(400, "type the queue's name to confirm clearing it")
            queue.clear()
            return RedirectResponse(request.scope.get("root_path", "") + "/queues", 303)
        else:
            raise HTTPException(404, "no such action")
        return self.back(request, fields, f"/queues/{queue.name}")

    async def queue_clear_confirm(self, request: Request) -> Response:
        queue = api.Queue(request.path_params["name"], backend=self.backend)
        return self.render(request, "confirm.html", queue=queue)

    # -- retries, scheduled, dead ------------------------------------------------------------

    def _set(self, request: Request) -> tuple[str, SortedSet]:
        kind = request.url.path.rstrip("/").removeprefix(
            request.scope.get("root_path", "")).split("/")[1]
        return kind, SETS[kind](backend=self.backend)

    async def set_page(self, request: Request) -> Response:
        kind, chosen = self._set(request)
        query = request.query_params.get("q", "").strip()
        page = _page(request)
        if query:
            found = chosen.search(query)
            total = len(found)
            entries = found[(page - 1) * PAGE_SIZE: page * PAGE_SIZE]
        else:
            total = chosen.size
            entries = chosen.page(page, PAGE_SIZE)
        return self.render(request, "set.html", kind=kind, entries=entries, query=query,
                           pager=_pager(request, page, total), total=total, key=_key)

    async def set_entry(self, request: Request) -> Response:
        kind, chosen = self._set(request)
        entry = _fetch(chosen, request.path_params["key"])
        if entry is None:
            return self.render(request, "gone.html", 404, kind=kind)
        payload = json.dumps(entry.payload, indent=2, sort_keys=True) if entry.valid else None
        return self.render(request, "entry.html", kind=kind, entry=entry, payload=payload,
                           key=_key)

    async def set_action(self, request: Request) -> Response:
        fields = await self.form(request)
        kind, chosen = self._set(request)
        entry = _fetch(chosen, request.path_params["key"])
        if entry is not None:
            _act(kind, entry, request.path_params["action"])
        return self.back(request, fields, f"/{kind}")

    async def set_bulk(self, request: Request) -> Response:
        fields = await self.form(request)
        kind, chosen = self._set(request)
        action = (fields.get("action") or [""])[0]
        for key in fields.get("key", []):
            entry = _fetch(chosen, key)
            if entry is not None:
                _act(kind, entry, action)
        return self.back(request, fields, f"/{kind}")

    async def set_all(self, request: Request) -> Response:
        fields = await self.form(request)
        kind, chosen = self._set(request)
        action = (fields.get("action") or [""])[0]
        if action == "retry":
            chosen.retry_all()
        elif action == "delete":
            chosen.clear()
        elif action == "kill" and kind != "dead":
            chosen.kill_all()
        else:
            raise HTTPException(400, "action must be retry, delete or kill")
        return self.back(request, fields, f"/{kind}")

    # -- metrics -----------------------------------------------------------------------------

    async def functions(self, request: Request) -> Response:
        minutes = _choice(request.query_params.get("minutes"), (60, 480, 1440), 60)
        query = request.query_params.get("q", "").strip()
        rows = api.Metrics(backend=self.backend).functions(minutes)
        if query:
            rows = [row for row in rows if query in row.function]
        return self.render(request, "functions.html", rows=rows, minutes=minutes, query=query)

    async def function(self, request: Request) -> Response:
        name = request.path_params["name"]
        minutes = _choice(request.query_params.get("minutes"), (60, 480, 1440), 60)
        series = api.Metrics(backend=self.backend).series(name, minutes)
        labels = [time.strftime("%H:%M", time.gmtime(point.minute)) for point in series]
        runs = charts.line_chart(
            labels, [("runs", "processed", [p.metrics.count for p in series]),
                     ("failures", "failed", [p.metrics.failures for p in series])],
            title=f"{name}: runs and failures per minute")
        times = charts.line_chart(
            labels, [("p50", "p50", [p.metrics.p50_ms or 0.0 for p in series]),
                     ("p95", "p95", [p.metrics.p95_ms or 0.0 for p in series])],
            title=f"{name}: run time per minute (ms)", unit=" ms")
        total = sum(p.metrics.count for p in series)
        failures = sum(p.metrics.failures for p in series)
        return self.render(request, "function.html", name=name, minutes=minutes, runs=runs,
                           times=times, total=total, failures=failures)


# -- helpers -----------------------------------------------------------------------------------


def _totals(stats: api.Stats) -> dict[str, int]:
    return {"processed": stats.processed, "failed": stats.failed, "busy": stats.workers_size,
            "enqueued": stats.enqueued, "retries": stats.retry_size,
            "scheduled": stats.scheduled_size, "dead": stats.dead_size,
            "processes": stats.processes_size}


def _key(entry: SetEntry) -> str:
    """The address of a set entry: SCORE-JID, as Sidekiq's Web writes it."""
    return f"{entry.score!r}-{entry.jid}"


def _fetch(chosen: SortedSet, key: str) -> SetEntry | None:
    score, _, jid = key.rpartition("-")
    try:
        value = float(score)
    except ValueError:
        return None
    return chosen.fetch(value, jid) if math.isfinite(value) else None


def _act(kind: str, entry: SetEntry, action: str) -> bool:
    if action == "retry":
        return entry.add_to_queue() if kind == "scheduled" else entry.retry()
    if action == "delete":
        return entry.delete()
    if action == "kill" and kind != "dead":
        return entry.kill()
    raise HTTPException(400, "action must be retry, delete or kill")


def _here(request: Request) -> str:
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def _page(request: Request) -> int:
    try:
        return max(int(request.query_params.get("page", "1")), 1)
    except ValueError:
        return 1


def _pager(request: Request, page: int, total: int) -> dict[str, Any]:
    pages = max(math.ceil(total / PAGE_SIZE), 1)

    def link(number: int) -> str:
        params = dict(request.query_params)
        params["page"] = str(number)
        return request.url.path + "?" + urlencode(params)

    return {"page": page, "pages": pages,
            "prev": link(page - 1) if page > 1 else None,
            "next": link(page + 1) if page < pages else None}


def _choice(value: str | None, allowed: tuple[int, ...], default: int) -> int:
    try:
        number = int(value or default)
    except ValueError:
        return default
    return number if number in allowed else default


def _ago(epoch: float | None, now: float | None = None) -> str:
    if epoch is None:
        return "-"
    delta = (time.time() if now is None else now) - epoch
    text = _duration(abs(delta))
    return f"{text} ago" if delta >= 0 else f"in {text}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds // 60:.0f} m {seconds % 60:.0f} s"
    if seconds < 86400:
        return f"{seconds // 3600:.0f} h {seconds % 3600 // 60:.0f} m"
    return f"{seconds // 86400:.0f} d {seconds % 86400 // 3600:.0f} h"


def _utc(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def _short(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _size(value: str | int | None) -> str:
    try:
        number = float(value or 0)
    except ValueError:
        return str(value)
    for unit_name in ("B", "KB", "MB", "GB"):
        if number < 1024:
            return f"{number:.0f} {unit_name}" if unit_name == "B" else f"{number:.1f} {unit_name}"
        number /= 1024
    return f"{number:.1f} TB"


def _json_short(value: Any, width: int = 100) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 1] + "…"
