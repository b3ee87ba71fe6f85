"""The console in a real browser: Playwright drives Debian's Chromium against uvicorn.

One server (uvicorn on a free loopback port, in a thread, over the in-memory
backend) and one headless Chromium serve the whole session; each test gets a
fresh browser context, i.e. its own cookies.  The backend is changed from the
test thread, as the console agent would change the store, to check that open
pages follow live over server-sent events without a reload.
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn
from helpers.waiting import BROWSER_BOUND_MS, EVENT_BOUND_S, wait_until
from playwright.sync_api import Page, expect

from ops.console.app import ConsoleSettings, create_app
from ops.console.backend import InMemoryBackend
from ops.console.users import UserStore

PASSWORDS = {"sup": "sup-password", "vic": "vic-password", "locky": "locky-password"}
MAX_FAILURES = 3

# several browser steps in a row, each under the shared hang guard (tests/helpers/waiting.py)
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(autouse=True, scope="module")
def _expect_waits_on_events() -> Iterator[None]:
    """Playwright's ``expect`` gives up after 5 s by default: a budget a loaded machine can
    miss.  Here it waits for the page to show what it must, under the shared hang guard."""
    expect.set_options(timeout=BROWSER_BOUND_MS)
    yield
    expect.set_options(timeout=None)


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    """conftest's fresh context (its own cookies) per test, with the shared hang guard as
    every action's bound instead of 10 s."""
    ctx = browser.new_context(viewport={"width": 1024, "height": 768})
    ctx.set_default_timeout(BROWSER_BOUND_MS)
    yield ctx
    ctx.close()


@dataclass
class Served:
    url: str
    backend: InMemoryBackend
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(EVENT_BOUND_S)


def serve(backend: InMemoryBackend, users: UserStore, settings: ConsoleSettings) -> Served:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(backend, users, settings),
                                           log_level="warning", timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_until("uvicorn serving", lambda: server.started, poll_s=0.02)
    return Served(f"http://127.0.0.1:{port}", backend, server, thread)


def seed(backend: InMemoryBackend) -> None:
    now = backend.now()
    cases = [("e-late", 2, "re-routing would make an order late", "o-121", "lathe-1"),
             ("e-none", 1, "no live resource can perform an operation", "o-117", "mill-1"),
             ("e-qual", 3, "a quality reject", "o-109", "cmm-1"),
             ("e-rep", 2, "the same resource faults repeatedly", "", "agv-2")]
    for eid, prio, cause, order, resource in cases:
        backend.raise_escalation(
            escalation_id=eid, priority=prio, cause=cause,
            consequence=f"order {order or '-'} waits in a safe state",
            options=[{"id": "wait_for_repair", "label": "Wait for repair", "effect": "ETA 18 min"},
                     {"id": "reroute", "label": "Re-route to mill-2", "effect": "+14 min, +€38"}],
            safe_default="wait_for_repair", deadline_at=now + 1800,
            context={"order": order, "resource": resource,
                     "recent_events": [f"{resource} fault: spindle overload"]})


@pytest.fixture(scope="session")
def users(tmp_path_factory) -> UserStore:
    store = UserStore(tmp_path_factory.mktemp("console-browser") / "users.db")
    store.add("sup", "supervisor", PASSWORDS["sup"])
    store.add("vic", "viewer", PASSWORDS["vic"])
    store.add("locky", "supervisor", PASSWORDS["locky"])
    return store


@pytest.fixture(scope="session")
def console(users) -> Iterator[Served]:
    backend = InMemoryBackend(max_shelve_s=3600)
    seed(backend)
    served = serve(backend, users, ConsoleSettings(
        cell="browser-test", max_failures=MAX_FAILURES, max_client_failures=100,
        lockout_s=600, poll_s=0.2))
    yield served
    served.stop()


def login(page: Page, base: str, user: str, password: str | None = None) -> None:
    page.goto(f"{base}/login")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password or PASSWORDS[user])
    page.click("button[type=submit]")


def test_pages_need_a_login(console, context):
    page = context.new_page()
    page.goto(f"{console.url}/escalations/e-none")
    assert page.url == f"{console.url}/login?next=%2Fescalations%2Fe-none"
    expect(page.locator("h1")).to_have_text("Sign in")
    page.fill("input[name=username]", "sup")     # ... and signing in goes where we wanted
    page.fill("input[name=password]", PASSWORDS["sup"])
    page.click("button[type=submit]")
    page.wait_for_url(f"{console.url}/escalations/e-none")
    expect(page.locator("#cause")).to_have_text("no live resource can perform an operation")


def test_wrong_password_then_lockout(console, context):
    page = context.new_page()
    for _ in range(MAX_FAILURES - 1):
        login(page, console.url, "locky", "not-the-password")
        expect(page.locator("#login-error")).to_have_text("Wrong user name or password.")
    login(page, console.url, "locky", "not-the-password")
    expect(page.locator("#login-error")).to_contain_text("Too many failed logins")
    login(page, console.url, "locky")     # the right password is refused while locked
    expect(page.locator("#login-error")).to_contain_text("locked for 10 more minutes")
    assert "/login" in page.url


def test_supervisor_works_through_the_list(console, context):
    page = context.new_page()
    login(page, console.url, "sup")
    page.wait_for_url(f"{console.url}/")
    priorities = [int(p) for p in page.locator("#open a.esc.lead").evaluate_all(
        "els => els.map(e => e.dataset.priority)")]
    assert priorities == sorted(priorities) and priorities[0] == 1
    expect(page.locator("#open a.esc.lead").first).to_contain_text("no live resource")

    page.locator("#open a.esc.lead").first.click()           # open the P1 case
    page.wait_for_url(f"{console.url}/escalations/e-none")
    expect(page.locator("#priority")).to_have_text("P1 critical")
    expect(page.locator("#order")).to_have_text("o-117")
    expect(page.locator(".events")).to_contain_text("mill-1 fault")
    expect(page.locator(".option.safe")).to_contain_text("safe default")
    expect(page.locator(".countdown.big")).to_have_text(re.compile(r"^2\d:\d\d$"))

    page.click("#acknowledge")
    expect(page.locator("#done")).to_have_text("Acknowledged.")
    expect(page.locator("#state")).to_have_text("acknowledged")

    page.click("#shelve")                                      # no reason: refused, shown
    expect(page.locator("#action-error")).to_have_text("A reason is required to shelve.")
    assert console.backend.get("e-none").state == "acknowledged"

    page.goto(f"{console.url}/escalations/e-qual")
    page.fill("#shelve-form textarea[name=reason]", "inspector on break until 14:00")
    page.fill("#shelve-form input[name=duration_min]", "20")
    page.click("#shelve")
    expect(page.locator("#state")).to_have_text("shelved")
    assert console.backend.get("e-qual").state == "shelved"

    page.goto(f"{console.url}/escalations/e-none")
    page.get_by_label("Re-route to mill-2").check()
    page.fill("#decide-form textarea[name=reason]", "due today, mill-2 is free")
    page.click("#decide")
    expect(page.locator("#done")).to_have_text("Decision sent to the agents.")
    expect(page.locator("#decided")).to_contain_text("Decided by sup: Re-route to mill-2")
    expect(page.locator("#decide")).to_have_count(0)
    e = console.backend.get("e-none")
    assert (e.state, e.decided_by, e.decision) == ("resolved", "sup", "reroute")
    assert console.backend.audit()[-1]["reason"] == "due today, mill-2 is free"


def test_viewer_sees_no_actions_and_a_forged_post_is_refused(console, context):
    page = context.new_page()
    login(page, console.url, "vic")
    page.goto(f"{console.url}/escalations/e-late")
    expect(page.locator("#cause")).to_have_text("re-routing would make an order late")
    expect(page.locator(".options-ro")).to_contain_text("Re-route to mill-2")
    expect(page.locator("#decide")).to_have_count(0)
    expect(page.locator("#acknowledge")).to_have_count(0)
    expect(page.locator("#viewer-note")).to_be_visible()
    token = page.locator("input[name=csrf]").first.get_attribute("value")   # logout form's
    r = context.request.post(f"{console.url}/escalations/e-late/decide",
                             form={"csrf": token, "option": "reroute"})
    assert r.status == 403 and "A viewer cannot do this" in r.text()
    assert console.backend.get("e-late").state == "unacknowledged"


def test_csrf_missing_or_wrong_is_refused(console, context):
    page = context.new_page()
    login(page, console.url, "sup")
    page.goto(f"{console.url}/escalations/e-late")
    r = context.request.post(f"{console.url}/escalations/e-late/acknowledge", form={})
    assert r.status == 403
    page.locator("#decide-form input[name=csrf]").evaluate("el => el.value = 'forged'")
    page.get_by_label("Wait for repair").check()
    with page.expect_navigation() as nav:
        page.click("#decide")
    assert nav.value.status == 403
    expect(page.locator("h1")).to_have_text("Request refused")
    assert console.backend.get("e-late").state == "unacknowledged"


def test_open_pages_follow_the_backend_live(console, context):
    page = context.new_page()
    login(page, console.url, "sup")
    page.goto(f"{console.url}/escalations/e-rep")
    page.wait_for_selector("body[data-connected='1']")
    page.evaluate("window.__noReload = true")
    expect(page.locator("#state")).to_have_text("unacknowledged")
    console.backend.acknowledge("e-rep", "bob", console.backend.now())   # someone else acts
    expect(page.locator("#state")).to_have_text("acknowledged")
    expect(page.locator("#timeline")).to_contain_text("bob acknowledged")

    page.goto(f"{console.url}/")
    page.wait_for_selector("body[data-connected='1']")
    page.evaluate("window.__noReload = true")
    expect(page.locator("#open")).not_to_contain_text("robot arm collided")
    console.backend.raise_escalation(
        escalation_id="e-live", priority=1, cause="robot arm collided", consequence="cell stop",
        options=[{"id": "retry", "label": "Retry", "effect": "after inspection"}],
        safe_default="retry", deadline_at=console.backend.now() + 600,
        context={"resource": "robot-1"})
    expect(page.locator("#open a.esc.lead").first).to_contain_text("robot arm collided")
    assert page.evaluate("window.__noReload") is True        # updated in place, no reload


def test_session_expires(users, browser):
    backend = InMemoryBackend()
    seed(backend)
    served = serve(backend, users, ConsoleSettings(cell="expiry", idle_timeout_s=2.0,
                                                   poll_s=0.2))
    ctx = browser.new_context()
    ctx.set_default_timeout(BROWSER_BOUND_MS)
    try:
        page = ctx.new_page()
        login(page, served.url, "sup")
        page.wait_for_url(f"{served.url}/")
        page.wait_for_selector("body[data-connected='1']")
        # idle: the open page is sent to the login page by the server's `expired` event
        page.wait_for_url(f"{served.url}/login?expired=1**", timeout=BROWSER_BOUND_MS)
        expect(page.locator(".notice")).to_have_text("Your session has expired. Sign in again.")
        page.goto(f"{served.url}/escalations/e-none")
        assert "/login?" in page.url
    finally:
        ctx.close()
        served.stop()
