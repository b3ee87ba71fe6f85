"""The console's rules over HTTP (Starlette TestClient): login, CSRF, roles, actions, expiry."""

from __future__ import annotations

import re

import pytest
from starlette.testclient import TestClient

from ops.console.app import COOKIE, ConsoleSettings, create_app
from ops.console.backend import InMemoryBackend
from ops.console.users import UserStore

PASSWORDS = {"ann": "ann-password", "vic": "vic-password", "ada": "ada-password"}


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def users(tmp_path_factory) -> UserStore:
    store = UserStore(tmp_path_factory.mktemp("console") / "users.db")
    store.add("ann", "supervisor", PASSWORDS["ann"])
    store.add("vic", "viewer", PASSWORDS["vic"])
    store.add("ada", "admin", PASSWORDS["ada"])
    return store


class Console:
    def __init__(self, users: UserStore, **settings) -> None:
        self.clock = Clock()
        self.backend = InMemoryBackend(max_shelve_s=1800, clock=self.clock)
        for k, (prio, cause) in enumerate([(2, "late order"), (1, "no live resource")]):
            self.backend.raise_escalation(
                priority=prio, cause=cause, consequence=f"order o-{k} waits",
                options=[{"id": "wait_for_repair", "label": "Wait for repair", "effect": "ETA 9 min"},
                         {"id": "reroute", "label": "Re-route to mill-2", "effect": "+4 min"}],
                safe_default="wait_for_repair", deadline_at=self.clock() + 900,
                context={"order": f"o-{k}", "resource": "mill-1",
                         "recent_events": ["mill-1 fault"]},
                escalation_id=f"e{k}")
        self.app = create_app(self.backend, users,
                              ConsoleSettings(cell="t", **settings), clock=self.clock)
        self.client = TestClient(self.app, follow_redirects=False)

    def csrf(self, path: str) -> str:
        r = self.client.get(path)
        assert r.status_code == 200, (path, r.status_code)
        return re.search(r'name="csrf" value="([^"]+)"', r.text).group(1)

    def login(self, name: str, password: str | None = None):
        token = self.csrf("/login")
        return self.client.post("/login", data={"username": name, "csrf": token, "next": "/",
                                                "password": password or PASSWORDS[name]})

    def post(self, path: str, **data):
        return self.client.post(path, data=data)

    def state(self, eid: str) -> str:
        return self.backend.get(eid).state


@pytest.fixture
def console(users) -> Console:
    return Console(users)


def test_every_page_needs_a_login(console):
    for path in ("/", "/escalations/e1"):
        r = console.client.get(path)
        assert r.status_code == 303
        assert r.headers["location"].startswith("/login?next=")
    assert console.client.get("/events").status_code == 401


def test_login_then_the_list_sorted_by_priority(console):
    r = console.login("ann")
    assert r.status_code == 303 and r.headers["location"] == "/"
    page = console.client.get("/").text
    assert page.index('data-id="e1"') < page.index('data-id="e0"')    # P1 before P2
    assert "P1 critical" in page and "ann" in page


def test_session_cookie_attributes(console):
    r = console.client.get("/login")
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert "Secure" not in cookie           # plain HTTP here; --tls-cert turns it on
    secure = TestClient(create_app(console.backend, UserStore(":none:"),
                                   ConsoleSettings(secure_cookie=True)))
    assert "Secure" in secure.get("/login").headers["set-cookie"]


def test_security_headers_on_every_response(console):
    for r in (console.client.get("/login"), console.client.get("/"),
              console.client.get("/static/console.js")):
        assert r.headers["x-frame-options"] == "DENY"
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
    assert "<script>" not in console.client.get("/login").text    # no inline scripts


def test_wrong_password_then_lockout(users):
    c = Console(users, max_failures=3, lockout_s=600)
    for _ in range(2):
        r = c.login("ann", "wrong")
        assert r.status_code == 401 and "Wrong user name or password" in r.text
    r = c.login("ann", "wrong")
    assert r.status_code == 429 and "locked for 10 more minutes" in r.text
    r = c.login("ann")                      # the right password does not help now
    assert r.status_code == 429 and COOKIE not in r.headers.get("set-cookie", "x")
    c.clock.t += 601
    assert c.login("ann").status_code == 303


def test_unknown_user_is_told_the_same_as_a_wrong_password(console):
    r = console.login("nobody", "whatever-pass")
    assert r.status_code == 401 and "Wrong user name or password" in r.text


def test_login_needs_its_csrf_token(console):
    console.client.get("/login")
    r = console.client.post("/login", data={"username": "ann", "password": PASSWORDS["ann"],
                                            "csrf": "forged"})
    assert r.status_code == 403 and "expired" in r.text
    assert console.client.get("/").status_code == 303


def test_login_never_redirects_off_site(console):
    token = console.csrf("/login")
    r = console.client.post("/login", data={"username": "ann", "password": PASSWORDS["ann"],
                                            "csrf": token, "next": "//evil.example/x"})
    assert r.headers["location"] == "/"


def test_csrf_missing_or_wrong_is_refused_and_changes_nothing(console):
    console.login("ann")
    console.csrf("/escalations/e1")
    assert console.post("/escalations/e1/acknowledge").status_code == 403
    r = console.post("/escalations/e1/decide", option="reroute", csrf="x" * 43)
    assert r.status_code == 403 and "security token" in r.text
    assert console.state("e1") == "unacknowledged"
    assert [a["action"] for a in console.backend.audit()] == ["raised", "raised"]


def test_unauthenticated_decide_gets_401_and_changes_nothing(console):
    token = console.csrf("/login")           # an anonymous session's token is no login
    r = console.post("/escalations/e1/decide", option="reroute", csrf=token)
    assert r.status_code == 401
    assert console.state("e1") == "unacknowledged"


def test_viewer_sees_no_actions_and_a_forged_post_gets_403(console):
    console.login("vic")
    page = console.client.get("/escalations/e1").text
    assert 'id="decide"' not in page and 'id="acknowledge"' not in page
    assert "Re-route to mill-2" in page and 'id="viewer-note"' in page
    token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)   # the logout form's
    for action, data in (("decide", {"option": "reroute"}), ("acknowledge", {}),
                         ("shelve", {"reason": "x", "duration_min": "5"})):
        r = console.post(f"/escalations/e1/{action}", csrf=token, **data)
        assert r.status_code == 403 and "A viewer cannot do this" in r.text
    assert console.state("e1") == "unacknowledged"
    assert all(a["user"] == "system" for a in console.backend.audit())


def test_supervisor_acknowledges_shelves_and_decides(console):
    console.login("ann")
    token = console.csrf("/escalations/e1")
    r = console.post("/escalations/e1/acknowledge", csrf=token)
    assert r.status_code == 303 and r.headers["location"] == "/escalations/e1?done=acknowledge"
    assert console.state("e1") == "acknowledged"
    assert "Acknowledged." in console.client.get(r.headers["location"]).text
    r = console.post("/escalations/e0/shelve", csrf=token, reason="waiting for the fitter",
                     duration_min="10")
    assert r.status_code == 303 and console.state("e0") == "shelved"
    assert console.backend.get("e0").shelved_until_at == console.clock() + 600
    r = console.post("/escalations/e1/decide", csrf=token, option="reroute", reason="due today")
    assert r.status_code == 303
    e = console.backend.get("e1")
    assert (e.state, e.decided_by, e.decision) == ("resolved", "ann", "reroute")
    assert console.backend.audit()[-1] == {
        "at": console.clock(), "escalation": "e1", "user": "ann", "action": "decide",
        "reason": "due today", "detail": "reroute"}
    page = console.client.get("/escalations/e1").text
    assert "Decided by <strong>ann</strong>" in page and 'id="decide"' not in page


def test_admin_may_act_too(console):
    console.login("ada")
    token = console.csrf("/escalations/e0")
    assert console.post("/escalations/e0/acknowledge", csrf=token).status_code == 303


@pytest.mark.parametrize("data,message", [
    ({"reason": "   ", "duration_min": "10"}, "A reason is required to shelve."),
    ({"reason": "lunch", "duration_min": "31"}, "at most 30 minutes"),
    ({"reason": "lunch", "duration_min": "0"}, "more than 0"),
    ({"reason": "lunch", "duration_min": "soon"}, "must be a number"),
])
def test_shelve_rules(console, data, message):
    console.login("ann")
    token = console.csrf("/escalations/e1")
    r = console.post("/escalations/e1/shelve", csrf=token, **data)
    assert r.status_code == 400 and message in r.text
    assert console.state("e1") == "unacknowledged"


def test_illegal_and_unknown_actions_show_a_message(console):
    console.login("ann")
    token = console.csrf("/escalations/e1")
    r = console.post("/escalations/e1/decide", csrf=token, option="teleport")
    assert r.status_code == 409 and "offers no option &#39;teleport&#39;" in r.text
    r = console.post("/escalations/e1/decide", csrf=token)
    assert r.status_code == 400 and "Choose one of the options" in r.text
    console.post("/escalations/e1/decide", csrf=token, option="reroute")
    r = console.post("/escalations/e1/acknowledge", csrf=token)
    assert r.status_code == 409 and "it is resolved" in r.text
    assert console.post("/escalations/zz/acknowledge", csrf=token).status_code == 404
    assert console.client.get("/escalations/zz").status_code == 404
    assert console.post("/escalations/e1/explode", csrf=token).status_code == 404


def test_escalation_text_is_escaped(console):
    console.backend.raise_escalation(priority=1, cause="<script>alert(1)</script>",
                                     consequence="x", options=[], safe_default="",
                                     deadline_at=0, escalation_id="e9")
    console.login("ann")
    for path in ("/", "/escalations/e9"):
        page = console.client.get(path).text
        assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)" in page


def test_idle_timeout_sends_back_to_login(users):
    c = Console(users, idle_timeout_s=60, absolute_timeout_s=3600)
    c.login("ann")
    c.clock.t += 59
    assert c.client.get("/").status_code == 200
    c.clock.t += 59                           # the request above was activity
    assert c.client.get("/", headers={"X-Console-Fragment": "1"}).status_code == 200
    c.clock.t += 2                            # a live-update fetch is not activity
    r = c.client.get("/escalations/e1")
    assert r.status_code == 303 and r.headers["location"].startswith("/login?expired=1&next=")
    assert "Your session has expired" in c.client.get(r.headers["location"]).text


def test_absolute_timeout_and_a_post_after_expiry(users):
    c = Console(users, idle_timeout_s=60, absolute_timeout_s=100)
    c.login("ann")
    token = c.csrf("/")
    for _ in range(2):
        c.clock.t += 50
        c.client.get("/")
    r = c.post("/escalations/e1/acknowledge", csrf=token)
    assert r.status_code == 401 and c.state("e1") == "unacknowledged"


def test_fragment_request_after_expiry_is_401(users):
    c = Console(users, idle_timeout_s=60)
    c.login("ann")
    c.clock.t += 61
    assert c.client.get("/", headers={"X-Console-Fragment": "1"}).status_code == 401


def test_logout_ends_the_session(console):
    console.login("ann")
    token = console.csrf("/")
    assert console.post("/logout", csrf=token).headers["location"] == "/login"
    assert console.client.get("/").status_code == 303


def test_flood_banner(console):
    for k in range(10):
        console.backend.raise_escalation(priority=2, cause="agv fault", consequence="slow",
                                         options=[], safe_default="", deadline_at=0,
                                         context={"resource": "agv-2"})
    console.login("ann")
    page = console.client.get("/").text
    assert "Flood: 12 escalations in the last 10 minutes" in page
    assert "+9 related (agv fault, AGV 2)" in page


# -- a store shaped like the escalation core's (agents.escalation.store) -----------------


class CoreLikeStore:
    """Records with ``raised_at``/``final_deadline_at``, option objects, audit ``actor`` and
    ``details``, ``cell_now()``, ``deadlines.max_shelve_s`` and a ``listeners`` list — the
    shape of the escalation core's store, which the integrator binds."""

    class Deadlines:
        max_shelve_s = 600.0

    def __init__(self) -> None:
        from dataclasses import dataclass, replace

        @dataclass(frozen=True)
        class Option:
            id: str
            label: str
            effect: str

        @dataclass(frozen=True)
        class Record:
            id: str
            priority: int
            cause: str
            consequence: str
            raised_at: float
            final_deadline_at: float
            options: tuple
            safe_default: str
            order: str = ""
            resource: str = ""
            state: str = "rtn_unacknowledged"
            decided_by: str = ""
            decision: str = ""
            group: str = ""

        self._replace = replace
        self.deadlines = self.Deadlines()
        self.listeners: list = []
        self.now_at = 500.0
        self.records = {"c1": Record("c1", 1, "no live resource", "o-7 waits", 480.0, 800.0,
                                     (Option("reroute", "Re-route to mill-2", "+3 min"),),
                                     "reroute", order="o-7", resource="mill-1")}
        self.entries: list = [type("Entry", (), {"actor": "order-o-7", "action": "raise",
                                                 "escalation": "c1", "details": {}})()]

    def cell_now(self) -> float:
        return self.now_at

    def list(self):
        return list(self.records.values())

    def get(self, eid):
        return self.records[eid]

    def audit(self):
        return self.entries

    def _put(self, eid, user, action, **details):
        self.entries.append(type("Entry", (), {"actor": user, "action": action,
                                               "escalation": eid, "details": details})())
        for listener in self.listeners:
            listener(self.records[eid])
        return self.records[eid]

    def acknowledge(self, eid, user, now):
        self.records[eid] = self._replace(self.records[eid], state="acknowledged")
        return self._put(eid, user, "acknowledge")

    def shelve(self, eid, user, reason, duration_s, now):
        self.records[eid] = self._replace(self.records[eid], state="shelved")
        return self._put(eid, user, "shelve", reason=reason, duration_s=duration_s)

    def decide(self, eid, user, option_id, reason, now):
        assert now == self.now_at       # decisions are stamped with cell time
        self.records[eid] = self._replace(self.records[eid], state="resolved", decided_by=user,
                                          decision=option_id)
        return self._put(eid, user, "decide", option=option_id, reason=reason)


def test_a_store_shaped_like_the_escalation_core_binds_unchanged(users):
    store = CoreLikeStore()
    client = TestClient(create_app(store, users, ConsoleSettings(cell="core")),
                        follow_redirects=False)
    token = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
    client.post("/login", data={"username": "ann", "password": PASSWORDS["ann"], "csrf": token})
    page = client.get("/escalations/c1").text
    assert "back to normal, unacknowledged" in page and 'id="acknowledge"' in page
    assert 'data-remaining-s="300.0"' in page          # final_deadline_at - cell_now()
    assert "minutes (at most 10)" in page               # deadlines.max_shelve_s
    assert "Re-route to mill-2" in page and "+3 min" in page
    token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    r = client.post("/escalations/c1/shelve", data={"csrf": token, "reason": "x",
                                                    "duration_min": "11"})
    assert r.status_code == 400 and "at most 10 minutes" in r.text
    seen = []
    from ops.console.app import _subscribe
    unsubscribe = _subscribe(store, seen.append)
    r = client.post("/escalations/c1/decide", data={"csrf": token, "option": "reroute",
                                                    "reason": "due today"})
    assert r.status_code == 303 and seen == ["c1"]
    unsubscribe()
    assert store.listeners == []
    page = client.get("/escalations/c1").text
    assert "Decided by <strong>ann</strong>: Re-route to mill-2" in page   # words, not ids
    assert "order-o-7</span> raised" in page
    assert "ann</span> decided: Re-route to mill-2 — “due today”" in page


def test_shelving_past_the_safe_default_deadline_warns_and_asks_to_confirm(console):
    console.login("ann")
    token = console.csrf("/escalations/e0")                        # deadline in 15 min
    r = console.post("/escalations/e0/shelve", csrf=token, reason="fitter", duration_min="20")
    assert r.status_code == 409 and console.state("e0") == "unacknowledged"
    assert "will apply while this is shelved" in r.text and 'id="shelve-anyway"' in r.text
    assert 'name="confirm" value="1"' in r.text and 'name="duration_min" value="20"' in r.text
    r = console.post("/escalations/e0/shelve", csrf=token, reason="fitter", duration_min="20",
                     confirm="1")
    assert r.status_code == 303 and console.state("e0") == "shelved"
