"""The escalation store damaged while the console runs (issue 20's leftover, issue 18): every
page says so — the file, what to do — with 503, never a 500 and never a stale list that
looks current; a browser showing the list follows live."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from helpers.waiting import BROWSER_BOUND_MS
from playwright.sync_api import expect
from starlette.testclient import TestClient

from agents.escalation import lifecycle as lc
from agents.escalation.store import EscalationStore
from ops.console.app import ConsoleSettings, create_app
from ops.console.store_backend import StoreBackend
from ops.console.users import UserStore

pytestmark = pytest.mark.timeout(600)
GARBAGE = b"this is not an escalation store\n" * 200


def a_store(path: Path) -> None:
    store = EscalationStore(path)
    d = lc.Deadlines()
    rec = lc.new_record(id="o1/e1", priority=1, cause="no_capable_resource", consequence="w",
                        raised_by="o1", now=5.0, options=[lc.Option("wait", "Wait", "")],
                        safe_default="wait", deadlines=d, resource="lathe1")
    store.put(rec, actor="agent:o1", action="raise", now=5.0, details={})
    store.close()


def replace_with_garbage(path: Path) -> None:
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(GARBAGE)
    os.replace(tmp, path)                 # what a bad restore or a stray copy does


@pytest.fixture
def site(tmp_path: Path):
    users = UserStore(tmp_path / "users.db")
    users.add("ann", "supervisor", "ann-password")
    db = tmp_path / "esc.db"
    a_store(db)
    client = TestClient(create_app(StoreBackend(db), users, ConsoleSettings(cell="t")),
                        follow_redirects=False, raise_server_exceptions=False)
    token = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
    assert client.post("/login", data={"username": "ann", "password": "ann-password",
                                       "csrf": token, "next": "/"}).status_code == 303
    return client, db


def test_pages_say_the_store_is_damaged_and_what_to_do(site):
    client, db = site
    assert client.get("/").status_code == 200
    replace_with_garbage(db)
    for path in ("/", "/escalations/o1/e1"):
        r = client.get(path)
        assert r.status_code == 503, (path, r.status_code)
        assert "The escalation store is damaged" in r.text and str(db) in r.text
        assert f"mv {db} {db}.damaged" in r.text and "autocell audit verify" in r.text
        assert "Nothing needs you" not in r.text
    token = re.search(r'name="csrf" value="([^"]+)"', client.get("/").text).group(1)
    r = client.post("/escalations/o1/e1/acknowledge", data={"csrf": token})
    assert r.status_code == 503 and "is damaged" in r.text


def test_an_open_list_follows_live_when_the_store_is_damaged(tmp_path: Path,
                                                            browser: Any) -> None:
    from test_console_browser import serve

    users = UserStore(tmp_path / "users.db")
    users.add("ann", "supervisor", "ann-password")
    db = tmp_path / "esc.db"
    a_store(db)
    served = serve(StoreBackend(db), users, ConsoleSettings(cell="t", poll_s=0.2))  # type: ignore[arg-type]
    ctx = browser.new_context(viewport={"width": 390, "height": 800})
    ctx.set_default_timeout(BROWSER_BOUND_MS)
    try:
        page = ctx.new_page()
        page.goto(f"{served.url}/login")
        page.fill("input[name=username]", "ann")
        page.fill("input[name=password]", "ann-password")
        page.click("button[type=submit]")
        expect(page.locator("a.esc[data-id='o1/e1']")).to_be_visible(timeout=BROWSER_BOUND_MS)
        page.wait_for_selector("body[data-connected='1']")
        replace_with_garbage(db)
        expect(page.locator("h1")).to_have_text("The escalation store is damaged",
                                                timeout=BROWSER_BOUND_MS)
        expect(page.locator("#advice")).to_contain_text(f"mv {db} {db}.damaged")
    finally:
        ctx.close()
        served.stop()
