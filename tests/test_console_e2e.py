"""End to end: a paced run escalates, a supervisor decides in a real browser, the order completes.

Two real processes share one SQLite escalation store, as an operator would
run them (docs/console.md, "A run and its console"):

* ``autocell run CELL --faults F --speed 15 --escalations-db DB --report R`` —
  a one-saw cell whose saw breaks for 700 s; the order cannot continue and
  escalates ``no_capable_resource`` (wait for repair | cancel), with a
  response deadline of 660 and a final deadline of 680 simulated seconds
  (~44 s of wall time at speed 15: a decision later than the response
  deadline would meet a re-escalation, a second record, which a loaded
  machine once produced with a 350 s response deadline);
* ``autocell console CELL --db DB`` on a free port.

Playwright drives Debian's Chromium: the supervisor signs in before the run
starts, sees the escalation appear on the open list page (live, no reload),
opens it and decides "wait for repair".  The decision goes through the
store's outbox to the run's console agent, which signs and sends it naming
the user; the run ends with the order completed and every invariant true,
``autocell audit verify`` exits 0 and the audit log names the supervisor
(not "(safe default)").  An anonymous POST and a viewer's POST to decide
are refused (401/403) and change nothing in the store.

The paced run is the one wall-clock element, and it is the scenario: the
browser must decide before the final deadline.  Both people sign in before
the run starts, and the outage and deadlines leave ~45 s of wall time for
the rest, so a loaded machine still decides in time; every other wait is on
an event (tests/helpers/waiting.py), bounded only against a hang.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from helpers.waiting import BROWSER_BOUND_MS, PROCESS_BOUND_S, NotYet, wait_until
from playwright.sync_api import Page, expect

from agents.escalation.store import EscalationStore
from ops.console.users import UserStore

# several events in a row, each under the shared hang guard
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

EXE = Path(sys.executable).with_name("autocell")
PASSWORDS = {"sup": "sup-password", "vic": "vic-password"}
ESC = "o-1/e1"
SPEED = 15.0

CELL = """\
cell: e2e
layout:
  locations:
    - {id: bench, x: 0.0, y: 0.0}
machines:
  - id: saw1
    location: bench
    capabilities: {sawing: 12.0}
products:
  - id: blank
    routing:
      - {op: cut, capability: sawing}
orders:
  - {id: o-1, product: blank, quantity: 3, release_at: 0, due_at: 600}
escalation:
  no_capable_resource: {max_wait_s: 60}
  response_deadline_s: 1900
  final_deadline_s: 1950
"""

OUTAGE = """\
name: e2e_outage
description: saw1, the only saw, is down from 5 s to 705 s.
mtbf_breakdowns: false
breakdowns:
  - {resource: saw1, at_s: 5, repair_s: 700}
"""


@pytest.fixture(autouse=True, scope="module")
def _expect_waits_on_events() -> Iterator[None]:
    """Playwright's ``expect`` gives up after 5 s by default: a budget a loaded machine can
    miss.  Here it waits for the page to show what it must, under the shared hang guard."""
    expect.set_options(timeout=BROWSER_BOUND_MS)
    yield
    expect.set_options(timeout=None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Scene:
    dir: Path
    db: Path
    url: str
    console: subprocess.Popen[str]

    def run(self) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [str(EXE), "run", "cell.yaml", "--faults", "outage.yaml", "--speed", str(SPEED),
             "--escalations-db", str(self.db), "--report", "report.json", "--quiet"],
            cwd=self.dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def store(self) -> EscalationStore:
        return EscalationStore(self.db)


@pytest.fixture
def scene(tmp_path) -> Iterator[Scene]:
    (tmp_path / "cell.yaml").write_text(CELL)
    (tmp_path / "outage.yaml").write_text(OUTAGE)
    users = UserStore(tmp_path / "users.db")
    users.add("sup", "supervisor", PASSWORDS["sup"])
    users.add("vic", "viewer", PASSWORDS["vic"])
    port = _free_port()
    db = tmp_path / "esc.db"
    console = subprocess.Popen(
        [str(EXE), "console", "cell.yaml", "--db", str(db), "--port", str(port),
         "--users", "users.db"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"

    def serving() -> bool | NotYet:
        assert console.poll() is None, console.stdout.read() if console.stdout else ""
        try:
            return httpx.get(f"{url}/login", timeout=PROCESS_BOUND_S).status_code == 200
        except httpx.HTTPError as exc:
            return NotYet(exc)

    try:
        wait_until("the console serving its login page", serving)
    except BaseException:
        console.kill()
        console.wait()
        raise
    try:
        yield Scene(tmp_path, db, url, console)
    finally:
        console.terminate()
        console.wait(PROCESS_BOUND_S)


def login(page: Page, base: str, user: str) -> None:
    page.goto(f"{base}/login")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", PASSWORDS[user])
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")


def test_supervisor_decides_in_the_browser_and_the_run_completes(scene, browser):
    assert not scene.db.exists()            # the console waits for the run's store
    sup = browser.new_context(viewport={"width": 1024, "height": 768})
    vic = browser.new_context()
    for ctx in (sup, vic):
        ctx.set_default_timeout(BROWSER_BOUND_MS)
    # both sign in before the paced run starts: its clock leaves the browser ~125 s of
    # wall time to decide (the deadlines, 1900 and 1950 cell seconds after the escalation,
    # at 15×), and a machine loaded by another suite needs it for the rest; a decision in
    # time ends the run at the repair, ~50 s, whatever the deadlines
    page = sup.new_page()
    login(page, scene.url, "sup")
    vpage = vic.new_page()
    login(vpage, scene.url, "vic")
    run = scene.run()
    try:
        page.wait_for_selector("body[data-connected='1']")
        # the escalation appears on the open list page, live
        row = page.locator(f'a.esc[data-id="{ESC}"]')
        expect(row).to_be_visible(timeout=BROWSER_BOUND_MS)
        expect(row).to_contain_text("no_capable_resource")

        # an anonymous POST and a viewer's POST change nothing in the real store
        before = [a.hash for a in scene.store().audit()]
        r = httpx.post(f"{scene.url}/escalations/{ESC}/decide", data={"option": "cancel"})
        assert r.status_code == 401
        vpage.goto(f"{scene.url}/escalations/{ESC}")
        expect(vpage.locator("#decide")).to_have_count(0)
        token = vpage.locator("input[name=csrf]").first.get_attribute("value")
        r2 = vic.request.post(f"{scene.url}/escalations/{ESC}/decide",
                              form={"csrf": token, "option": "cancel"})
        assert r2.status == 403 and "A viewer cannot do this" in r2.text()
        store = scene.store()
        assert store.pending_decisions() == []
        assert store.get(ESC).open and not store.get(ESC).decided_by
        after = store.audit()
        assert [a.hash for a in after[:len(before)]] == before
        assert {a.actor for a in after} <= {"agent:o-1", "console"}   # no person acted

        # the supervisor opens it and decides "wait for repair"
        row.click()
        page.wait_for_url(f"{scene.url}/escalations/{ESC}")
        expect(page.locator("#cause")).to_have_text("No machine can do the next step")
        page.check("input[name=option][value=wait_for_repair]")
        page.fill("#decide-form textarea[name=reason]", "fitter is on the way")
        page.click("#decide")
        expect(page.locator("#done")).to_have_text("Decision sent to the agents.")
        expect(page.locator("#decided")).to_contain_text("sup")

        out, _ = run.communicate(timeout=PROCESS_BOUND_S)
    finally:
        if run.poll() is None:
            run.kill()
        sup.close()
        vic.close()
    assert run.returncode == 0, out
    report = json.loads((scene.dir / "report.json").read_text())
    assert report["orders_completed"] == report["orders_total"] == 1
    assert all(report["invariants"].values()), report["invariants"]
    assert report["escalations_by_outcome"] == {"decision": 1}

    verify = subprocess.run([str(EXE), "audit", "verify", "--db", str(scene.db)],
                            capture_output=True, text=True, timeout=PROCESS_BOUND_S, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    store = scene.store()
    decided = [a for a in store.audit() if a.action == "decide"]
    assert [(a.actor, a.escalation, a.details["option"], a.details["reason"])
            for a in decided] == [("sup", ESC, "wait_for_repair", "fitter is on the way")]
    rec = store.get(ESC)
    assert (rec.outcome, rec.decided_by) == ("decision", "sup")
    assert store.pending_decisions() == []      # the run's console agent sent it
