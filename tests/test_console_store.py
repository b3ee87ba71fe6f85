"""The console bound to the real escalation store (a SQLite file a virtual-time run wrote).

Starlette's TestClient drives the app over HTTP; the store behind it is the
file ``autocell run --escalations-db`` writes, and the console agent that
sends decisions is the real one, reading the same file.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from agents.cell.build import timing_of
from agents.escalation.console import ConsoleAgent
from agents.escalation.store import EscalationStore
from agents.protocol.actions import Send
from agents.protocol.messages import Decision
from ops.config import load_cell_or_instance
from ops.config.fault_files import load_faults
from ops.console.app import ConsoleSettings, create_app
from ops.console.store_backend import StoreBackend
from ops.console.users import UserStore
from sim_bridge.virtual import VirtualCell

ROOT = Path(__file__).resolve().parents[1]
PASSWORDS = {"ann": "ann-password", "vic": "vic-password"}
ESC = "o-014/e1"          # open at 1600 s in the long-outage run: wait_for_repair | cancel


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    """The store of the demo cell's long-outage run, stopped at 1600 s (two escalations
    open, one resolved by its safe default)."""
    cfg = load_cell_or_instance(ROOT / "cell_configs/demo_cell.yaml")
    db = tmp_path_factory.mktemp("run") / "esc.db"
    cell = VirtualCell(cfg, faults=load_faults(ROOT / "cell_configs/faults/long_outage.yaml",
                                               cfg), escalations_db=str(db))
    cell.run(until=1600)
    assert cell.console is not None
    cell.console.store.close()
    return db


@pytest.fixture(scope="module")
def users(tmp_path_factory) -> UserStore:
    store = UserStore(tmp_path_factory.mktemp("users") / "users.db")
    for name, role in (("ann", "supervisor"), ("vic", "viewer")):
        store.add(name, role, PASSWORDS[name])
    return store


class Console:
    def __init__(self, db: Path, users: UserStore) -> None:
        self.db = db
        self.backend = StoreBackend(db)
        self.client = TestClient(create_app(self.backend, users, ConsoleSettings(cell="demo")),
                                 follow_redirects=False)

    def csrf(self, path: str) -> str:
        r = self.client.get(path)
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
        return re.search(r'name="csrf" value="([^"]+)"', r.text).group(1)

    def login(self, name: str) -> None:
        r = self.client.post("/login", data={"username": name, "password": PASSWORDS[name],
                                             "csrf": self.csrf("/login"), "next": "/"})
        assert r.status_code == 303

    def store(self) -> EscalationStore:
        return EscalationStore(self.db)


@pytest.fixture
def console(recorded, users, tmp_path) -> Console:
    db = tmp_path / "esc.db"
    shutil.copy(recorded, db)
    return Console(db, users)


def test_the_list_and_the_detail_show_the_stores_records(console):
    console.login("ann")
    page = console.client.get("/").text
    assert page.count('href="/escalations/o-0') == 3
    assert page.index("o-014/e1") < page.index("o-011/e1")      # open before resolved
    r = console.client.get(f"/escalations/{ESC}")
    assert r.status_code == 200
    assert "no_capable_resource" in r.text and "lathe1" in r.text
    assert "Wait for repair" in r.text or "wait_for_repair" in r.text
    assert re.search(r"repair at (4200 s|\d\d:\d\d:\d\d)", r.text)   # context facts, as times
    assert f'action="/escalations/{ESC}/decide"' in r.text
    assert '<span class="who">o-014</span> raised as P' in r.text  # the timeline: who raised it
    assert console.client.get("/escalations/o-999/e1").status_code == 404


def test_decide_goes_through_the_store_its_audit_and_the_outbox(console):
    console.login("ann")
    token = console.csrf(f"/escalations/{ESC}")
    r = console.client.post(f"/escalations/{ESC}/decide",
                            data={"csrf": token, "option": "wait_for_repair",
                                  "reason": "fitter on site"})
    assert r.status_code == 303, r.text[:400]
    assert console.client.get(r.headers["location"]).status_code == 200
    store = console.store()
    rec = store.get(ESC)
    assert (rec.state, rec.outcome, rec.decision, rec.decided_by) == (
        "resolved", "decision", "wait_for_repair", "ann")
    last = store.audit()[-1]
    assert (last.actor, last.action, last.escalation, last.details["reason"]) == (
        "ann", "decide", ESC, "fitter on site")
    assert last.at == store.cell_now()                  # cell time, not the wall clock
    assert store.verify().ok
    assert [(e, to, o, u) for _, e, to, o, u, _ in store.pending_decisions()] == [
        (ESC, "o-014", "wait_for_repair", "ann")]
    # the running cell's console agent picks it up on its poll and signs a decision naming ann
    cfg = load_cell_or_instance(ROOT / "cell_configs/demo_cell.yaml")
    agent = ConsoleAgent(timing=timing_of(cfg), store=store, poll_s=1.0)
    sends = [a for a in agent.on_timer("poll", 1601.0) if isinstance(a, Send)]
    assert [(s.to, s.body) for s in sends] == [
        ("o-014", Decision(ESC, "wait_for_repair", "ann", "fitter on site"))]
    assert store.pending_decisions() == []
    # decided once: a second decision is refused on the page (409) and changes nothing
    n = len(store.audit())
    r = console.client.post(f"/escalations/{ESC}/decide",
                            data={"csrf": token, "option": "cancel"})
    assert r.status_code == 409 and "illegal transition" in r.text
    assert len(console.store().audit()) == n


def test_acknowledge_and_shelve_name_the_user(console):
    console.login("ann")
    token = console.csrf(f"/escalations/{ESC}")
    assert console.client.post(f"/escalations/{ESC}/acknowledge",
                               data={"csrf": token}).status_code == 303
    r = console.client.post("/escalations/o-017/e1/shelve",
                            data={"csrf": token, "reason": "fitter called", "duration_min": "10",
                                  "confirm": "1"})   # past its safe-default deadline: confirmed
    assert r.status_code == 303
    store = console.store()
    assert store.get(ESC).acknowledged_by == "ann"
    shelved = store.get("o-017/e1")
    assert shelved.state == "shelved" and shelved.shelve_reason == "fitter called"
    assert shelved.shelved_until_at == pytest.approx(store.cell_now() + 600)
    assert [(a.actor, a.action) for a in store.audit()[-2:]] == [
        ("ann", "acknowledge"), ("ann", "shelve")]
    assert all(a.details["wall_at"] > 1.6e9 for a in store.audit()[-2:])   # wall time too
    # beyond the policy's max_shelve_s (3600 s): refused, nothing changes
    n = len(store.audit())
    r = console.client.post(f"/escalations/{ESC}/shelve",
                            data={"csrf": token, "reason": "x", "duration_min": "61"})
    assert r.status_code == 400 and len(console.store().audit()) == n
    assert store.verify().ok


def test_unauthenticated_and_viewer_decisions_change_nothing(console):
    before = console.store().audit()
    token = console.csrf("/login")
    r = console.client.post(f"/escalations/{ESC}/decide",
                            data={"csrf": token, "option": "cancel"})
    assert r.status_code == 401
    console.login("vic")
    page = console.client.get(f"/escalations/{ESC}").text
    assert 'id="decide"' not in page
    token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    for action, data in (("decide", {"option": "cancel"}), ("acknowledge", {}),
                         ("shelve", {"reason": "x", "duration_min": "5"})):
        r = console.client.post(f"/escalations/{ESC}/{action}", data={"csrf": token, **data})
        assert r.status_code == 403
    store = console.store()
    assert store.audit() == before and store.pending_decisions() == []
    assert store.get(ESC).state == "unacknowledged"


def test_console_before_the_run_creates_no_file(users, tmp_path):
    db = tmp_path / "later.db"
    console = Console(db, users)
    console.login("ann")
    assert console.client.get("/").status_code == 200
    assert console.client.get(f"/escalations/{ESC}").status_code == 404
    assert not db.exists()
