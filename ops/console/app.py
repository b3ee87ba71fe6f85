"""The supervisor console as a Starlette application (server-rendered pages).

Routes:

======================================  =================================================
``GET  /login``, ``POST /login``        sign in (CSRF token, throttled)
``POST /logout``                        sign out
``GET  /``                              open escalations, grouped, most urgent first
``GET  /escalations/{id}``              one escalation: context, options, actions
``POST /escalations/{id}/acknowledge``  supervisor or admin
``POST /escalations/{id}/shelve``       ``reason`` (required), ``duration_min``; past the
                                        safe-default deadline only with ``confirm=1``
``POST /escalations/{id}/decide``       ``option``, ``reason`` (optional)
``POST /groups/acknowledge``            ``group``: every unacknowledged member at once
``GET  /journal``, ``/journal.csv``     the alarm journal, filtered (ops/console/journal.py)
``GET  /kpis``                          alarm-system KPIs (ops/console/alarm_kpis.py)
``GET  /events``                        server-sent events: ``change`` and ``expired``
``GET  /story/{id}``                    the escalation's story from the run's decision
                                        logs (``autocell explain``; ops/stories.py), when
                                        the console was given them
``GET  /maintenance``                   maintenance windows per machine and spare parts,
                                        from the run's event logs (ops/console/
                                        maintenance.py), when the console was given them
======================================  =================================================

A page request without a live session is redirected to ``/login``; a POST or
``/events`` without one gets 401; a POST with a missing or wrong CSRF token
gets 403, and so does a viewer's POST to an action.  The page's own script
re-fetches the page on a ``change`` event (header ``X-Console-Fragment``,
which does not count as activity for the idle time-out) and swaps the
``data-live`` regions.  The policy lives in :mod:`ops.console.security`; the
escalations behind :class:`~ops.console.backend.EscalationBackend`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ops.console import alarm_kpis, journal
from ops.console.backend import STATES, EscalationBackend, EscalationNotFound, IllegalAction
from ops.console.journal import Filters, JournalRow
from ops.console.maintenance import LiveBoard
from ops.console.security import (
    SECURITY_HEADERS,
    LoginThrottle,
    Session,
    SessionStore,
    csrf_ok,
)
from ops.console.users import UserStore, role_allows
from ops.stories import LiveStories
from ops.console.views import (
    FLOOD_COUNT,
    FLOOD_WINDOW_S,
    Link,
    audit_field,
    clock_time,
    countdown,
    flood,
    group_list,
    link_status,
    timeline,
    view,
    wall_text,
    when,
)
from security.errors import AutocellError, DamagedState

__all__ = ["COOKIE", "ConsoleSettings", "create_app"]

log = logging.getLogger("autocell.console")
HERE = Path(__file__).parent
COOKIE = "autocell_session"
FRAGMENT_HEADER = "x-console-fragment"
JOURNAL_PAGE_ROWS = 500          # the page shows the newest; the CSV has every row


@dataclass(frozen=True)
class ConsoleSettings:
    """Knobs of one console; the defaults suit a shift on the shop floor."""

    cell: str = "demo"
    idle_timeout_s: float = 900.0
    absolute_timeout_s: float = 8 * 3600.0
    max_failures: int = 5
    max_client_failures: int = 20
    failure_window_s: float = 900.0
    lockout_s: float = 900.0
    secure_cookie: bool = False      # set under TLS
    keepalive_s: float = 15.0
    poll_s: float = 1.0              # session checks (and change polling without subscribe)
    tick_s: float = 1.0


class _Deny(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


class _SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every HTTP response (pure ASGI: safe for SSE)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                for k, v in SECURITY_HEADERS.items():
                    if k.lower().encode() not in present:
                        headers.append((k.lower().encode(), v.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(backend: EscalationBackend, users: UserStore,
               settings: ConsoleSettings | None = None, *,
               clock: Callable[[], float] = time.time,
               ticker: Callable[[float], Any] | None = None,
               stories: LiveStories | None = None,
               maintenance: LiveBoard | None = None) -> Starlette:
    """The console over ``backend``; ``clock`` is wall time (sessions, throttling).

    ``stories`` gives the run's stories from its decision logs (ops/stories.py); an
    escalation's page then links to ``/story/{id}`` (the logs are read off the event loop).

    ``maintenance`` gives the maintenance view (``/maintenance``, linked from every page).

    ``ticker(now)`` — e.g. the store's timers — is called every ``tick_s`` while
    the app runs.  The backend's own ``now()`` (cell time), when it has one, is
    the time base of deadlines; else ``clock``.
    """
    cfg = settings or ConsoleSettings()
    sessions = SessionStore(cfg.idle_timeout_s, cfg.absolute_timeout_s, clock)
    throttle = LoginThrottle(cfg.max_failures, cfg.max_client_failures, cfg.failure_window_s,
                             cfg.lockout_s, clock)
    cell_now = _cell_clock(backend, clock)
    started_at = clock()

    def link() -> Link:
        """The link to the running cell, by its heartbeat in the store."""
        liveness = getattr(backend, "liveness", None)
        if not callable(liveness):
            return Link("unknown")
        where = str(getattr(backend, "path", ""))
        try:
            return link_status(liveness(), clock(), started_at, where=where)
        except (DamagedState, sqlite3.DatabaseError):
            return Link("damaged", started_at, where=where)
    env = Environment(loader=FileSystemLoader(HERE / "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True))
    env.globals.update(countdown=countdown, clock_time=clock_time, when=when, wall_text=wall_text,
                       flood_window_min=int(FLOOD_WINDOW_S // 60),
                       flood_count=FLOOD_COUNT, cell=cfg.cell,
                       has_maintenance=maintenance is not None)

    # -- helpers ------------------------------------------------------------------------

    def render(request: Request, name: str, session: Session | None, status: int = 200,
               **ctx: Any) -> HTMLResponse:
        can_act = bool(session and role_allows(session.role, "supervisor"))
        shown = link()
        since = (_safe_digest(backend) + shown.state if session and session.authenticated
                 else "")
        try:
            now = cell_now()
        except (DamagedState, sqlite3.DatabaseError):   # the page says the store is damaged
            now = 0.0
        html = env.get_template(name).render(request=request, session=session,
                                             can_act=can_act, now=now, link=shown,
                                             since=since, **ctx)
        return HTMLResponse(html, status_code=status)

    def set_cookie(response: Response, session: Session) -> None:
        response.set_cookie(COOKIE, sessions.cookie_value(session), httponly=True,
                            samesite="strict", secure=cfg.secure_cookie, path="/")

    def login_redirect(request: Request, expired: bool) -> RedirectResponse:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        q = ("expired=1&" if expired else "") + f"next={quote(target, safe='')}"
        return RedirectResponse(f"/login?{q}", status_code=303)

    def page_session(request: Request) -> Session:
        """The signed-in session of a page request, or a redirect to the login page."""
        touch = request.headers.get(FRAGMENT_HEADER) != "1"
        s, expired = sessions.lookup(request.cookies.get(COOKIE), touch=touch)
        if s is None or not s.authenticated:
            if not touch:      # a live update: the script sends the person to the login page
                raise _Deny(PlainTextResponse("session expired", status_code=401))
            raise _Deny(login_redirect(request, expired))
        return s

    async def action_session(request: Request, role: str) -> tuple[Session, Any]:
        """The session of a state change: 401 without login, 403 on CSRF or role."""
        s, _ = sessions.lookup(request.cookies.get(COOKIE), touch=True)
        if s is None or not s.authenticated:
            raise _Deny(render(request, "error.html", None, 401, title="Login required",
                               message="Your session has ended. Sign in again."))
        form = await request.form()
        token = form.get("csrf")
        if not csrf_ok(s, token if isinstance(token, str) else None):
            log.warning("CSRF check failed: user=%s path=%s", s.user, request.url.path)
            raise _Deny(render(request, "error.html", s, 403, title="Request refused",
                               message="The form's security token is missing or wrong. "
                                       "Reload the page and try again."))
        if not role_allows(s.role, role):
            log.warning("forbidden: user=%s role=%s path=%s", s.user, s.role, request.url.path)
            raise _Deny(render(request, "error.html", s, 403, title="Not allowed",
                               message=f"A {s.role} cannot do this; it needs a {role}."))
        return s, form

    def detail(request: Request, s: Session, eid: str, status: int = 200,
               error: str = "", done: str = "",
               confirm_shelve: dict[str, Any] | None = None) -> HTMLResponse:
        try:
            e = view(backend.get(eid))
        except (EscalationNotFound, KeyError):
            return render(request, "error.html", s, 404, title="Not found",
                          message=f"There is no escalation {eid!r}.")
        history = timeline((a for a in _audit(backend) if audit_field(a, "escalation") == e.id),
                           e)
        told = stories.peek() if stories is not None else None     # read by show()
        return render(request, "detail.html", s, status, e=e, history=history, error=error,
                      done=done, max_shelve_min=_max_shelve_s(backend) / 60.0,
                      confirm_shelve=confirm_shelve,
                      has_story=bool(told and told.mentions(e.id)),
                      # the order's and the resource's own stories (explain tells them from
                      # the whole log; the story page says so when the log does not know one)
                      has_logs=told is not None)

    def story_of(eid: str, around_at: float | None = None) -> list[str]:
        """explain's lines about ``eid`` — an escalation, or an order or resource one names,
        then told ``around_at`` the escalation's raise ([]: no decision log tells it)."""
        told = stories.get() if stories is not None else None
        if told is None:
            return []
        return told.of(eid) if around_at is None else told.near(eid, around_at)

    # -- pages --------------------------------------------------------------------------

    async def login_page(request: Request) -> Response:
        s, _ = sessions.lookup(request.cookies.get(COOKIE), touch=True)
        if s is not None and s.authenticated:
            return RedirectResponse("/", status_code=303)
        if s is None:
            s = sessions.new()
        notice = "Your session has expired. Sign in again." if request.query_params.get(
            "expired") else ""
        resp = render(request, "login.html", s, next=_safe_next(request.query_params.get("next")),
                      notice=notice, error="")
        set_cookie(resp, s)
        return resp

    async def login_submit(request: Request) -> Response:
        s, _ = sessions.lookup(request.cookies.get(COOKIE), touch=True)
        form = await request.form()
        name = str(form.get("username", "")).strip()
        password = str(form.get("password", ""))
        nxt = _safe_next(str(form.get("next", "")))
        token = form.get("csrf")
        if s is None or not csrf_ok(s, token if isinstance(token, str) else None):
            fresh = sessions.new()
            resp: Response = render(request, "login.html", fresh, 403, next=nxt, notice="",
                          error="The login form had expired. Please try again.")
            set_cookie(resp, fresh)
            return resp
        client = request.client.host if request.client else "?"

        def refuse(message: str, status: int) -> Response:
            return render(request, "login.html", s, status, next=nxt, notice="", error=message)

        wait_s = throttle.locked_for(name, client)
        if wait_s > 0:
            log.warning("login refused (locked): user=%s client=%s", name, client)
            return refuse(_locked_message(wait_s), 429)
        user = await run_in_threadpool(users.verify, name, password)
        if user is None:
            throttle.failed(name, client)
            log.warning("login failed: user=%s client=%s", name, client)
            wait_s = throttle.locked_for(name, client)
            if wait_s > 0:
                return refuse(_locked_message(wait_s), 429)
            return refuse("Wrong user name or password.", 401)
        throttle.succeeded(name)
        new = sessions.login(s, user.name, user.role)
        log.info("login: user=%s role=%s client=%s", user.name, user.role, client)
        resp = RedirectResponse(nxt, status_code=303)
        set_cookie(resp, new)
        return resp

    async def logout(request: Request) -> Response:
        s, _ = await action_session(request, "viewer")
        sessions.end(s)
        log.info("logout: user=%s", s.user)
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(COOKIE, path="/")
        return resp

    async def index(request: Request) -> Response:
        s = page_session(request)
        items = backend.list()
        groups = group_list(items)
        damaged: list[str] = getattr(backend, "damaged", list)()   # records that do not decode
        acked = request.query_params.get("acked", "")
        return render(request, "list.html", s, open_groups=[g for g in groups if g.head.active],
                      acked=int(acked) if acked.isdigit() else None,
                      closed_groups=[g for g in groups if not g.head.active],
                      flood=flood(items, cell_now()), damaged=damaged)

    def journal_rows(request: Request) -> tuple[Filters, list[JournalRow]]:
        f = Filters.of(request.query_params)
        return f, journal.rows(backend.list(), _audit(backend), link(), f)

    async def journal_page(request: Request) -> Response:
        s = page_session(request)
        f, found = journal_rows(request)
        causes = sorted({view(i).cause for i in backend.list()})
        return render(request, "journal.html", s, f=f, rows=found[:JOURNAL_PAGE_ROWS],
                      total=len(found), causes=causes, states=STATES,
                      query=request.url.query)

    async def journal_csv(request: Request) -> Response:
        page_session(request)
        _, found = journal_rows(request)
        return Response(journal.to_csv(found), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition":
                                 f'attachment; filename="{cfg.cell}-alarm-journal.csv"'})

    async def kpis_page(request: Request) -> Response:
        s = page_session(request)
        k = alarm_kpis.compute(backend.list(), cell_now(), _supervisors(users))
        return render(request, "kpis.html", s, k=k, guideline=alarm_kpis.GUIDELINE,
                      flood_count=FLOOD_COUNT)

    async def maintenance_page(request: Request) -> Response:
        s = page_session(request)
        if maintenance is None:
            return render(request, "error.html", s, 404, title="No maintenance view",
                          message="This console was not given a run's event logs.")
        board = await run_in_threadpool(maintenance.get)    # the logs, read on
        now = cell_now()
        return render(request, "maintenance.html", s, windows=board.windows(),
                      parts=board.part_rows(), cell_now_s=now)

    async def show(request: Request) -> Response:
        s = page_session(request)
        if stories is not None:
            await run_in_threadpool(stories.get)     # the decision logs, if they changed
        return detail(request, s, request.path_params["eid"],
                      done=_DONE.get(request.query_params.get("done", ""), ""))

    async def story(request: Request) -> Response:
        s = page_session(request)
        eid = request.path_params["eid"]
        back = _back_to(request.query_params.get("from", "") or eid)
        around = _raised_at(back) if back and back != eid else None
        lines = await run_in_threadpool(story_of, eid, around)
        told = stories.peek() if stories is not None else None
        logs = told.logs if told is not None else []
        if not lines:
            return render(request, "error.html", s, 404, title="No story", message=(
                f"The decision logs ({', '.join(logs)}) do not mention {eid!r}." if logs else
                f"No decision log given to this console tells the story of {eid!r}."),
                advice=["Record the run: `autocell run CELL --decision-log FILE`, or "
                        "`autocell up`, which writes them into its state directory.",
                        "Start the console with --decision-logs FILE_OR_DIR."])
        return render(request, "story.html", s, eid=eid, lines=lines, logs=logs,
                      back=back)

    def _raised_at(eid: str) -> float | None:
        try:
            return float(view(backend.get(eid)).created_at)
        except (EscalationNotFound, KeyError, TypeError, ValueError):
            return None

    def _back_to(eid: str) -> str:
        """The escalation a story was opened from (``?from=``), if there is one."""
        try:
            return view(backend.get(eid)).id if eid else ""
        except (EscalationNotFound, KeyError):
            return ""

    async def act(request: Request) -> Response:
        eid, action = request.path_params["eid"], request.path_params["action"]
        s, form = await action_session(request, "supervisor")
        now = cell_now()
        try:
            if action == "acknowledge":
                backend.acknowledge(eid, s.user, now)
            elif action == "shelve":
                reason = str(form.get("reason", "")).strip()
                if not reason:
                    return detail(request, s, eid, 400, error="A reason is required to shelve.")
                try:
                    minutes = float(str(form.get("duration_min", "")))
                except ValueError:
                    return detail(request, s, eid, 400, error="The shelve time must be a number "
                                                              "of minutes.")
                max_s = _max_shelve_s(backend)
                if not 0 < minutes * 60.0 <= max_s:
                    return detail(request, s, eid, 400, error=f"The shelve time must be more "
                                  f"than 0 and at most {max_s / 60:g} minutes.")
                e = view(backend.get(eid))
                until_at = now + minutes * 60.0
                if (e.deadline_at and until_at >= e.deadline_at
                        and form.get("confirm") != "1"):
                    # the safe default would apply while shelved: say so, and ask
                    return detail(request, s, eid, 409, confirm_shelve={
                        "reason": reason, "minutes": f"{minutes:g}", "until_at": until_at})
                backend.shelve(eid, s.user, reason, minutes * 60.0, now)
            elif action == "decide":
                option = str(form.get("option", ""))
                if not option:
                    return detail(request, s, eid, 400, error="Choose one of the options.")
                backend.decide(eid, s.user, option, str(form.get("reason", "")).strip(), now)
            else:
                return render(request, "error.html", s, 404, title="Not found",
                              message=f"No action {action!r}.")
        except (EscalationNotFound, KeyError):
            return render(request, "error.html", s, 404, title="Not found",
                          message=f"There is no escalation {eid!r}.")
        except (IllegalAction, AutocellError, ValueError) as exc:
            return detail(request, s, eid, 409, error=str(exc))
        log.info("%s: escalation=%s user=%s", action, eid, s.user)
        return RedirectResponse(f"/escalations/{quote(eid, safe='')}?done={action}",
                                status_code=303)

    async def acknowledge_group(request: Request) -> Response:
        """Acknowledge every unacknowledged escalation of one group (a flood's related
        cases) at once; each is recorded on its own, with the signed-in user."""
        s, form = await action_session(request, "supervisor")
        key = str(form.get("group", ""))
        members = [v for v in map(view, backend.list())
                   if v.group == key and v.active and v.state == "unacknowledged"]
        done, refused = 0, []
        for v in members:
            try:
                backend.acknowledge(v.id, s.user, cell_now())
                done += 1
            except (EscalationNotFound, IllegalAction, AutocellError) as exc:
                refused.append(f"{v.id}: {exc}")    # changed meanwhile: the others still go
        log.info("acknowledge group: group=%s user=%s acknowledged=%d", key, s.user, done)
        if refused:
            return render(request, "error.html", s, 409, title="Some were not acknowledged",
                          message=f"Acknowledged {done}; not: " + "; ".join(refused))
        return RedirectResponse(f"/?acked={done}", status_code=303)

    async def events(request: Request) -> Response:
        s, _ = sessions.lookup(request.cookies.get(COOKIE), touch=False)
        if s is None or not s.authenticated:
            return PlainTextResponse("login required", status_code=401)
        return StreamingResponse(_stream(request, s), media_type="text/event-stream",
                                 headers={"X-Accel-Buffering": "no"})

    async def _stream(request: Request, s: Session) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        unsubscribe = _subscribe(backend, lambda eid: loop.call_soon_threadsafe(
            queue.put_nowait, eid))
        # Also compare a digest every poll: another process (the CLI twin, the console
        # agent) may write the same store without calling our listeners.
        # what the page showed when rendered (``since``): a change before the stream started
        # is news at once; the link's changes are news too
        digest = request.query_params.get("since") or _safe_digest(backend) + link().state
        quiet_s = 0.0
        try:
            yield "retry: 2000\n\n"
            while True:
                if not sessions.alive(s):
                    yield "event: expired\ndata: {}\n\n"
                    return
                if await request.is_disconnected():
                    return
                changed: list[str | None] = []
                try:
                    changed.append(await asyncio.wait_for(queue.get(), cfg.poll_s))
                    while not queue.empty():
                        changed.append(queue.get_nowait())
                except TimeoutError:
                    pass
                new = _safe_digest(backend) + link().state
                if new != digest:
                    digest = new
                    changed = changed or [None]
                if changed:
                    ids = sorted({c for c in changed if c})
                    yield f"event: change\ndata: {json.dumps({'ids': ids})}\n\n"
                    quiet_s = 0.0
                else:
                    quiet_s += cfg.poll_s
                    if quiet_s >= cfg.keepalive_s:
                        yield ": keepalive\n\n"
                        quiet_s = 0.0
        finally:
            if unsubscribe:
                unsubscribe()

    async def on_deny(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, _Deny)
        return exc.response

    async def on_damaged(request: Request, exc: Exception) -> Response:
        """The store was damaged under the running console (issue 20): a page that says
        which file and what to do, never a 500 and never a stale list."""
        where = getattr(exc, "path", "") or str(getattr(backend, "path", "")) or "the store"
        log.error("escalation store damaged: %s", exc)
        s, _ = sessions.lookup(request.cookies.get(COOKIE), touch=False)
        return render(request, "error.html", s if s and s.authenticated else None, 503,
                      title="The escalation store is damaged", damaged=True, message=(
                          f"{where} cannot be read ({getattr(exc, 'detail', exc)}). "
                          "The console cannot show or record escalations until it is "
                          "repaired, and what was on screen may be out of date."),
                      advice=["Stop the cell (its console agent writes this file).",
                              f"Move the file aside: mv {where} {where}.damaged",
                              "Restore it from a backup and check the copy with "
                              f"autocell audit verify --db {where}, or start the cell "
                              "again, which writes a new store.",
                              "Reload this page when done."])

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(_tick_forever()) if ticker else None
        try:
            yield
        finally:
            if task:
                task.cancel()

    async def _tick_forever() -> None:
        assert ticker is not None
        while True:
            await asyncio.sleep(cfg.tick_s)
            try:
                ticker(cell_now())
            except Exception:     # a timer bug must not stop the console
                log.exception("escalation timers failed")

    routes = [
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login_submit, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/", index, methods=["GET"]),
        Route("/journal", journal_page, methods=["GET"]),
        Route("/kpis", kpis_page, methods=["GET"]),
        Route("/maintenance", maintenance_page, methods=["GET"]),
        Route("/journal.csv", journal_csv, methods=["GET"]),
        Route("/escalations/{eid:path}", show, methods=["GET"]),
        Route("/story/{eid:path}", story, methods=["GET"]),
        Route("/groups/acknowledge", acknowledge_group, methods=["POST"]),
        Route("/escalations/{eid:path}/{action}", act, methods=["POST"]),
        Route("/events", events, methods=["GET"]),
        Route("/favicon.ico", lambda request: Response(status_code=204), methods=["GET"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={
        _Deny: on_deny, DamagedState: on_damaged, sqlite3.DatabaseError: on_damaged},
        lifespan=lifespan)
    app.add_middleware(_SecurityHeaders)
    app.state.sessions = sessions
    app.state.throttle = throttle
    return app


_DONE = {"acknowledge": "Acknowledged.", "shelve": "Shelved.",
         "decide": "Decision sent to the agents."}


def _safe_next(target: str | None) -> str:
    """Only local paths: never an open redirect to another site."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


def _locked_message(wait_s: float) -> str:
    minutes = max(1, int(wait_s // 60 + (1 if wait_s % 60 else 0)))
    return (f"Too many failed logins: this account or device is locked for {minutes} more "
            f"minute{'s' if minutes != 1 else ''}. Ask an admin if you forgot your password.")


def _cell_clock(backend: Any, clock: Callable[[], float]) -> Callable[[], float]:
    """The backend's time base (``now()`` or ``cell_now()``), else the wall clock."""
    for name in ("now", "cell_now"):
        fn = getattr(backend, name, None)
        if callable(fn):
            return fn
    return clock


def _max_shelve_s(backend: Any) -> float:
    value: Any = getattr(backend, "max_shelve_s", None)
    if value is None:
        value = getattr(getattr(backend, "deadlines", None), "max_shelve_s", 3600.0)
    return float(value() if callable(value) else value)


def _subscribe(backend: Any, notify: Callable[[str | None], object]) -> Callable[[], None] | None:
    """Listen to the backend's changes: ``subscribe(listener)``, or a ``listeners`` list."""
    subscribe = getattr(backend, "subscribe", None)
    if callable(subscribe):
        return subscribe(notify)
    listeners = getattr(backend, "listeners", None)
    if isinstance(listeners, list):
        def listener(record: Any) -> None:
            notify(str(getattr(record, "id", "")) or None)
        def unsubscribe() -> None:
            if listener in listeners:
                listeners.remove(listener)
        listeners.append(listener)
        return unsubscribe
    return None


def _audit(backend: Any) -> list[Any]:
    try:
        return list(backend.audit())
    except (AutocellError, OSError, ValueError):
        log.exception("audit log unavailable")
        return []


def _supervisors(users: UserStore) -> int:
    """People who can act on escalations: the KPIs' "per supervisor"."""
    return sum(1 for u in users.list() if role_allows(u.role, "supervisor"))


def _safe_digest(backend: Any) -> str:
    """:func:`_digest`, or a marker while the store cannot be read (the page then says so)."""
    try:
        return _digest(backend)
    except (DamagedState, sqlite3.DatabaseError):
        return "damaged"


def _digest(backend: Any) -> str:
    rows = sorted((v.id, v.state, v.priority, v.decided_by) for v in map(view, backend.list()))
    return hashlib.sha256(repr(rows).encode()).hexdigest()
