"""The console's core without HTTP: users, sessions, throttling, views, the in-memory backend."""

from __future__ import annotations

import io
import os
import sqlite3
import stat

import pytest

from ops.cli import build_parser, main
from ops.console.backend import (
    EscalationNotFound,
    IllegalAction,
    InMemoryBackend,
    demo_backend,
)
from ops.console.security import LoginThrottle, SessionStore, csrf_ok
from ops.console.users import UserError, UserStore, role_allows
from ops.console.views import FLOOD_COUNT, countdown, flood, group_list, view


class Clock:
    def __init__(self, t: float = 1_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


# -- users -------------------------------------------------------------------------------


def test_users_hash_with_scrypt_and_verify(tmp_path):
    store = UserStore(tmp_path / "u.db")
    store.add("ann", "supervisor", "correct horse")
    assert store.verify("ann", "correct horse").role == "supervisor"
    assert store.verify("ann", "correct hors") is None
    assert store.verify("nobody", "correct horse") is None
    row = sqlite3.connect(tmp_path / "u.db").execute(
        "SELECT salt, hash, n, r, p FROM users").fetchone()
    assert len(row[0]) == 16 and len(row[1]) == 32 and row[2:] == (2**14, 8, 1)
    assert b"correct horse" not in (tmp_path / "u.db").read_bytes()


def test_users_salt_differs_per_user(tmp_path):
    store = UserStore(tmp_path / "u.db")
    store.add("a1", "viewer", "same password")
    store.add("a2", "viewer", "same password")
    rows = sqlite3.connect(tmp_path / "u.db").execute("SELECT salt, hash FROM users").fetchall()
    assert rows[0][0] != rows[1][0] and rows[0][1] != rows[1][1]


def test_users_file_is_private(tmp_path):
    path = tmp_path / "sub" / "u.db"
    with pytest.raises(UserError, match="does not exist; create it first"):
        UserStore(path).add("ann", "admin", "correct horse")   # a directory it was not asked for
    assert not path.parent.exists()
    UserStore(path, make_parent=True).add("ann", "admin", "correct horse")   # the default place
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700


@pytest.mark.parametrize("name,role,password,message", [
    ("ann", "boss", "correct horse", "unknown role 'boss'"),
    ("-ann", "viewer", "correct horse", "bad user name"),
    ("ann", "viewer", "short", "password too short"),
])
def test_users_refuse_bad_input(tmp_path, name, role, password, message):
    with pytest.raises(UserError, match=message):
        UserStore(tmp_path / "u.db").add(name, role, password)


def test_users_refuse_existing_name(tmp_path):
    store = UserStore(tmp_path / "u.db")
    store.add("ann", "viewer", "correct horse")
    with pytest.raises(UserError, match="already exists"):
        store.add("ann", "admin", "another one")
    assert store.get("ann").role == "viewer"


def test_roles_are_ordered():
    assert role_allows("admin", "supervisor") and role_allows("supervisor", "supervisor")
    assert not role_allows("viewer", "supervisor") and not role_allows("nobody", "viewer")


def test_users_cli(tmp_path, monkeypatch, capsys):
    db = str(tmp_path / "u.db")
    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse\n"))
    assert main(["users", "add", "ann", "--role", "supervisor", "--password-stdin",
                 "--users", db]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse\n"))
    assert main(["users", "add", "ann", "--role", "viewer", "--password-stdin",
                 "--users", db]) == 2
    assert "user 'ann' already exists" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse\n"))
    assert main(["users", "add", "bob", "--role", "king", "--password-stdin",
                 "--users", db]) == 2
    assert "unknown role 'king'; valid roles: viewer, supervisor, admin" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO(""))   # not a terminal, no --password-stdin
    assert main(["users", "add", "cy", "--role", "viewer", "--users", db]) == 2
    assert "use --password-stdin" in capsys.readouterr().err
    assert main(["users", "list", "--json", "--users", db]) == 0
    out = capsys.readouterr().out
    assert '"name": "ann"' in out and '"role": "supervisor"' in out and "bob" not in out
    assert "correct horse" not in out
    assert main(["users", "remove", "ann", "--users", db]) == 0
    assert main(["users", "remove", "ann", "--users", db]) == 2


def test_users_and_console_honour_autocell_users_db_like_the_cli_twin(tmp_path, monkeypatch,
                                                                     capsys):
    """`autocell users`, `autocell console` and `autocell escalations` find one users file:
    --users, else $AUTOCELL_USERS_DB, else .autocell/users.db."""
    from ops.console.server import _users
    from ops.escalations import authenticate

    env_db = tmp_path / "env" / "users.db"
    env_db.parent.mkdir(mode=0o700)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AUTOCELL_USERS_DB", str(env_db))
    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse\n"))
    assert main(["users", "add", "ann", "--role", "supervisor", "--password-stdin"]) == 0
    assert f"to {env_db}" in capsys.readouterr().out
    assert UserStore(env_db).get("ann").role == "supervisor"
    assert not (tmp_path / ".autocell").exists()
    assert main(["users", "list"]) == 0 and "ann" in capsys.readouterr().out
    args = build_parser().parse_args(["console", "--demo"])
    assert _users(args).path == env_db                       # the web console's
    twin = build_parser().parse_args(["escalations", "ack", "e1", "--user", "ann",
                                      "--password-stdin"])
    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse\n"))
    assert authenticate(twin) == "ann"                       # the CLI twin's
    other = tmp_path / "other.db"                            # --users still wins
    assert _users(build_parser().parse_args(["console", "--demo", "--users",
                                             str(other)])).path == other


# -- sessions and throttling -------------------------------------------------------------


def test_session_idle_and_absolute_timeouts():
    clock = Clock()
    store = SessionStore(idle_timeout_s=60, absolute_timeout_s=150, clock=clock)
    s = store.new("ann", "supervisor")
    cookie = store.cookie_value(s)
    for _ in range(2):                    # activity keeps it alive...
        clock.t += 50
        assert store.lookup(cookie, touch=True)[0] is s
    clock.t += 50                         # ...until the absolute limit (150 s after login)
    assert store.lookup(cookie, touch=True) == (None, True)
    s2 = store.new("ann", "supervisor")
    clock.t += 59
    assert store.lookup(store.cookie_value(s2), touch=False)[0] is s2   # no touch: not activity
    clock.t += 1
    assert store.lookup(store.cookie_value(s2), touch=True) == (None, True)


def test_session_cookie_is_signed():
    store = SessionStore()
    s = store.new("ann", "admin")
    sid, _, mac = store.cookie_value(s).partition(".")
    assert store.lookup(f"{sid}.{mac}", touch=False)[0] is s
    assert store.lookup(f"{sid}.{'0' * len(mac)}", touch=False) == (None, False)
    assert store.lookup(sid, touch=False) == (None, False)
    assert SessionStore().lookup(store.cookie_value(s), touch=False) == (None, False)  # other key


def test_login_replaces_the_anonymous_session():
    store = SessionStore()
    anon = store.new()
    s = store.login(anon, "ann", "viewer")
    assert s.id != anon.id and s.csrf != anon.csrf
    assert store.lookup(store.cookie_value(anon), touch=False)[0] is None


def test_csrf_compare():
    s = SessionStore().new()
    assert csrf_ok(s, s.csrf)
    assert not csrf_ok(s, s.csrf[:-1] + "x") and not csrf_ok(s, "") and not csrf_ok(s, None)
    assert not csrf_ok(None, s.csrf)


def test_throttle_locks_a_user_then_lets_go():
    clock = Clock()
    t = LoginThrottle(max_failures=3, max_client_failures=100, window_s=60, lockout_s=300,
                      clock=clock)
    for _ in range(2):
        t.failed("ann", "10.0.0.1")
    assert t.locked_for("ann", "10.0.0.1") == 0
    t.failed("ann", "10.0.0.2")          # third failure for the name, from another client
    assert t.locked_for("ann", "10.0.0.9") == 300
    assert t.locked_for("bob", "10.0.0.1") == 0
    clock.t += 300
    assert t.locked_for("ann", "10.0.0.1") == 0


def test_throttle_window_and_success_reset():
    clock = Clock()
    t = LoginThrottle(max_failures=3, window_s=60, lockout_s=300, clock=clock)
    t.failed("ann", "c")
    t.failed("ann", "c")
    clock.t += 61                        # old failures fall out of the window
    t.failed("ann", "c")
    assert t.locked_for("ann", "c") == 0
    t.failed("ann", "c")
    t.succeeded("ann")
    t.failed("ann", "c")
    assert t.locked_for("ann", "c") == 0


def test_throttle_locks_a_client_trying_many_names():
    t = LoginThrottle(max_failures=5, max_client_failures=4, clock=Clock())
    for name in ("a", "b", "c", "d"):
        t.failed(name, "10.0.0.7")
    assert t.locked_for("e", "10.0.0.7") > 0
    assert t.locked_for("e", "10.0.0.8") == 0


# -- views -------------------------------------------------------------------------------


def _esc(b: InMemoryBackend, priority: int, cause: str, resource: str, created_at: float,
         **kw):
    return b.raise_escalation(priority=priority, cause=cause, consequence="c",
                              options=[{"id": "x", "label": "X", "effect": "e"}],
                              safe_default="x", deadline_at=created_at + 600,
                              context={"resource": resource}, created_at=created_at, **kw)


def test_list_sorted_by_open_priority_state_age_and_grouped():
    b = InMemoryBackend(clock=Clock())
    a = _esc(b, 3, "quality", "cmm", 10)
    c = _esc(b, 1, "no resource", "mill-1", 30)
    d = _esc(b, 2, "faults", "agv-2", 20)
    e = _esc(b, 2, "faults", "agv-2", 40)
    f = _esc(b, 2, "late", "lathe", 5)
    g = _esc(b, 1, "burst", "mill-3", 50)
    b.acknowledge(c.id, "ann", 60)      # acknowledged P1 after unacknowledged P1
    b.decide(g.id, "ann", "x", "", 60)  # closed: last
    groups = group_list(b.list())
    assert [(gr.head.id, [o.id for o in gr.others]) for gr in groups] == [
        (c.id, []), (f.id, []), (d.id, [e.id]), (a.id, []), (g.id, [])]
    assert groups[2].size == 2 and groups[-1].head.state == "resolved"


def test_flood_counts_only_the_last_ten_minutes():
    b = InMemoryBackend(clock=Clock())
    for k in range(FLOOD_COUNT):
        _esc(b, 2, "faults", "agv-2", 1000 + k)
    assert flood(b.list(), now=1100) == 0            # ten is not a flood
    _esc(b, 2, "faults", "agv-2", 1050)
    assert flood(b.list(), now=1100) == FLOOD_COUNT + 1
    assert flood(b.list(), now=1000 + 601) == 0      # the first ones are out of the window
    assert len(group_list(b.list())) == 1            # and all are one group


def test_view_is_lenient_with_foreign_objects():
    v = view({"escalation": "e9", "priority": "2", "state": "acknowledged", "cause": "why",
              "options": [{"id": "reroute"}], "order": "o1",
              "context": {"resource": "m1", "recent_events": [{"at": 12.5, "text": "fault"},
                                                              "plain"]}})
    assert (v.id, v.priority, v.state, v.order, v.resource) == ("e9", 2, "acknowledged", "o1", "m1")
    assert v.options == ({"id": "reroute", "label": "reroute", "effect": ""},)
    assert v.recent_events == ("t=12.5 s: fault", "plain")
    assert v.group == "why/m1" and v.active
    assert view(object()).priority == 4 and not view({"state": "resolved"}).active


def test_countdown_format():
    assert [countdown(s) for s in (0, -5, 59.9, 61, 3725)] == [
        "overdue", "overdue", "0:59", "1:01", "1:02:05"]


# -- the in-memory backend ---------------------------------------------------------------


def test_backend_life_cycle_audit_and_notifications():
    clock = Clock(0.0)
    b = InMemoryBackend(max_shelve_s=600, clock=clock)
    seen: list[str | None] = []
    unsubscribe = b.subscribe(seen.append)
    e = _esc(b, 1, "no resource", "mill-1", 0.0)
    with pytest.raises(IllegalAction, match="reason is required"):
        b.shelve(e.id, "ann", "  ", 60, 1.0)
    with pytest.raises(IllegalAction, match="between 0 and 600"):
        b.shelve(e.id, "ann", "tool change", 601, 1.0)
    b.shelve(e.id, "ann", "tool change", 60, 1.0)
    with pytest.raises(IllegalAction, match="cannot acknowledge .* it is shelved"):
        b.acknowledge(e.id, "ann", 2.0)
    assert b.tick(61.0) == [e.id] and b.get(e.id).state == "unacknowledged"
    b.acknowledge(e.id, "bob", 62.0)
    with pytest.raises(IllegalAction, match="offers no option 'zap'"):
        b.decide(e.id, "bob", "zap", "", 63.0)
    b.decide(e.id, "bob", "x", "parts waiting", 63.0)
    assert (b.get(e.id).state, b.get(e.id).decided_by) == ("resolved", "bob")
    with pytest.raises(EscalationNotFound):
        b.get("nope")
    assert [(a["user"], a["action"]) for a in b.audit()] == [
        ("system", "raised"), ("ann", "shelve"), ("system", "unshelve"), ("bob", "acknowledge"),
        ("bob", "decide")]
    assert seen == [e.id] * 5
    unsubscribe()
    _esc(b, 2, "late", "m", 70.0)
    assert len(seen) == 5


def test_backend_applies_the_safe_default_at_the_deadline():
    b = InMemoryBackend(clock=Clock(0.0))
    e = _esc(b, 1, "no resource", "mill-1", 0.0)
    assert b.tick(599.0) == []
    assert b.tick(600.0) == [e.id]
    got = b.get(e.id)
    assert (got.state, got.decided_by, got.decision) == ("resolved", "system", "x")
    assert b.audit()[-1]["action"] == "safe_default"


def test_demo_backend_shows_every_kind_of_case():
    items = [view(e) for e in demo_backend(Clock(0.0)).list()]
    assert len(items) >= 6 and {e.priority for e in items} >= {1, 2, 3}
    assert all(e.options and e.safe_default in {o["id"] for o in e.options} for e in items)
    assert any(len(g.others) >= 2 for g in group_list(items))
