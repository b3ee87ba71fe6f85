"""The console's maintenance view (ops/console/maintenance.py): the fold of the run's event
logs into windows per machine and parts on the shelf; the page behind the login (Starlette
TestClient); and in a real browser (Playwright, Debian's Chromium) at 390 px, nothing
clipped."""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from helpers.waiting import BROWSER_BOUND_MS, EVENT_BOUND_S, wait_until
from playwright.sync_api import expect
from starlette.testclient import TestClient

from ops.console.app import ConsoleSettings, create_app
from ops.console.backend import InMemoryBackend
from ops.console.maintenance import Board, LiveBoard
from ops.console.users import UserStore

PASSWORD = "sup-password"
STOCK = {"spindle_bearing": 4, "chuck_bearing": 2}


def _run(now: float) -> list[dict[str, Any]]:
    """A run's maintenance lines as the machines' host and the plant log them: mill1 in its
    job, mill2 booked late, lathe1 still asking past its latest safe start, drill1 done."""
    return [
        {"t": 10, "ev": "maint_needed", "agent": "drill1", "job": "drill1/m1",
         "latest_start_at": 400},
        {"t": 11, "ev": "maint_window", "agent": "drill1", "job": "drill1/m1",
         "technician": "tech2", "start_at": 300, "end_at": 540, "latest_start_at": 400,
         "late": False},
        {"t": 300, "ev": "maint_begin", "agent": "drill1", "job": "drill1/m1",
         "technician": "tech2"},
        {"t": 301, "ev": "maintenance_start", "machine": "drill1", "kind": "planned",
         "technician": "tech2", "part_serial": "spindle_bearing#1"},
        {"t": 541, "ev": "maint_job_done", "agent": "drill1", "job": "drill1/m1"},
        {"t": 600, "ev": "maint_needed", "agent": "mill1", "job": "mill1/m1",
         "latest_start_at": now + 100},
        {"t": 601, "ev": "maint_window", "agent": "mill1", "job": "mill1/m1",
         "technician": "tech1", "start_at": now - 50, "end_at": now + 190,
         "latest_start_at": now + 100, "late": False},
        {"t": now - 50, "ev": "maint_begin", "agent": "mill1", "job": "mill1/m1",
         "technician": "tech1"},
        {"t": now - 49, "ev": "maintenance_start", "machine": "mill1", "kind": "planned",
         "technician": "tech1", "part_serial": "spindle_bearing#2"},
        {"t": 700, "ev": "maint_needed", "agent": "mill2", "job": "mill2/m3",
         "latest_start_at": now + 200},
        {"t": 701, "ev": "maint_window", "agent": "mill2", "job": "mill2/m3",
         "technician": "tech2", "start_at": now + 400, "end_at": now + 640,
         "latest_start_at": now + 200, "late": True},
        {"t": 800, "ev": "maint_needed", "agent": "lathe1", "job": "lathe1/m2",
         "latest_start_at": now - 10},
        {"t": 801, "ev": "maint_window", "agent": "lathe1", "job": "lathe1/m2",
         "technician": "tech1", "start_at": now - 30, "end_at": now + 270,
         "latest_start_at": now - 10, "late": False},
        {"t": now - 5, "ev": "maint_window_lapsed", "agent": "lathe1", "job": "lathe1/m2",
         "technician": "tech1"},
        {"t": 900, "ev": "part_ordered", "part": "spindle_bearing", "qty": 4,
         "due_at": now + 1800},
        {"t": 901, "ev": "stock_out", "part": "chuck_bearing"},
    ]


def test_the_board_folds_windows_and_parts() -> None:
    now = 2000.0
    board = Board(STOCK)
    for e in _run(now):
        board.feed(e)
    rows = {w.machine: w for w in board.windows()}
    assert [w.machine for w in board.windows()] == ["mill1", "mill2", "lathe1"]
    assert "drill1" not in rows                                  # done: gone
    m1, m2, l1 = rows["mill1"], rows["mill2"], rows["lathe1"]
    assert (m1.phase, m1.technician, m1.start_at, m1.late(now)) == ("running", "tech1",
                                                                    now - 50, False)
    assert (m2.phase, m2.technician, m2.late(now)) == ("booked", "tech2", True)
    assert (l1.phase, l1.start_at, l1.technician, l1.late(now)) == ("asking", None, "", True)
    parts = {p.part: p for p in board.part_rows()}
    assert (parts["spindle_bearing"].stock, parts["spindle_bearing"].on_order) == (2, 4)
    assert parts["spindle_bearing"].due_at == [now + 1800]
    assert (parts["chuck_bearing"].stock, parts["chuck_bearing"].stock_outs) == (2, 1)
    board.feed({"t": now + 1800, "ev": "part_delivered", "part": "spindle_bearing", "qty": 4})
    assert (parts["spindle_bearing"].stock, parts["spindle_bearing"].on_order) == (6, 0)


def test_in_a_negotiating_cell_the_stores_agent_keeps_the_books() -> None:
    board = Board(STOCK, stores=True)
    for e in _run(2000.0):                                   # the plant's shelf: not counted
        board.feed(e)
    assert board.parts["spindle_bearing"].stock == 4
    for e in [{"t": 1, "ev": "part_held", "agent": "stores", "part": "spindle_bearing",
               "machine": "mill1", "job": "mill1/m1", "on_shelf": 3},
              {"t": 2, "ev": "part_order_placed", "agent": "stores", "part": "spindle_bearing",
               "order": "po-1", "qty": 4, "due_at": 1802.0},
              {"t": 3, "ev": "part_stock_out", "agent": "stores", "part": "chuck_bearing",
               "machine": "lathe1", "job": "lathe1/m1"}]:
        board.feed(e)
    parts = board.parts
    assert (parts["spindle_bearing"].stock, parts["spindle_bearing"].on_order) == (3, 4)
    assert parts["spindle_bearing"].due_at == [1802.0]
    assert parts["chuck_bearing"].stock_outs == 1
    board.feed({"t": 1802, "ev": "part_delivered", "agent": "stores", "part": "spindle_bearing",
                "order": "po-1", "qty": 4, "on_shelf": 7})
    assert (parts["spindle_bearing"].stock, parts["spindle_bearing"].on_order) == (7, 0)


def test_the_live_board_reads_whole_lines_on_from_where_it_left_off(tmp_path: Path) -> None:
    lines = [json.dumps(e) for e in _run(2000.0)]
    host, sim = tmp_path / "events-machines.jsonl", tmp_path / "events-sim.jsonl"
    host.write_text("\n".join(x for x in lines if "maint_" in x) + "\n")
    sim.write_text(lines[3] + "\n" + lines[8][:20])          # the plant mid-line
    live = LiveBoard(lambda: tmp_path, STOCK)
    assert live.get().parts["spindle_bearing"].stock == 3
    with sim.open("a") as f:
        f.write(lines[8][20:] + "\n")
    assert live.get().parts["spindle_bearing"].stock == 2    # read on, not again
    sim.write_text("")                                        # a new run in the directory
    host.write_text("")
    assert live.get().windows() == [] and live.get().parts["spindle_bearing"].stock == 4


# -- the page ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def users(tmp_path_factory: pytest.TempPathFactory) -> UserStore:
    store = UserStore(tmp_path_factory.mktemp("maint-console") / "users.db")
    store.add("sup", "supervisor", PASSWORD)
    return store


def _logs(tmp: Path, now: float) -> Path:
    (tmp / "events-machines.jsonl").write_text(
        "".join(json.dumps(e) + "\n" for e in _run(now)))
    return tmp


def _app(users: UserStore, tmp: Path, backend: InMemoryBackend) -> Any:
    return create_app(backend, users, ConsoleSettings(cell="maint-test"),
                      maintenance=LiveBoard(lambda: tmp, STOCK))


def _login(client: TestClient) -> None:
    token = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
    r = client.post("/login", data={"username": "sup", "password": PASSWORD, "csrf": token,
                                    "next": "/maintenance"})
    assert r.status_code == 303


def test_the_page_needs_a_login_and_shows_windows_and_parts(users: UserStore,
                                                            tmp_path: Path) -> None:
    backend = InMemoryBackend()
    client = TestClient(_app(users, _logs(tmp_path, backend.now()), backend),
                        follow_redirects=False)
    r = client.get("/maintenance")
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    _login(client)
    page = client.get("/maintenance")
    assert page.status_code == 200
    html = page.text
    assert 'id="nav-maintenance"' in html
    for machine in ("mill1", "mill2", "lathe1"):
        assert f'id="window-{machine}"' in html
    assert 'id="window-drill1"' not in html
    mill2 = html[html.index('id="window-mill2"'):html.index('id="window-lathe1"')]
    assert "late" in mill2 and "tech2" in mill2 and "window booked" in mill2
    mill1 = html[html.index('id="window-mill1"'):html.index('id="window-mill2"')]
    assert "in maintenance" in mill1 and "on time" in mill1
    assert 'id="part-spindle_bearing"' in html and "2 on the shelf" in html


def test_without_the_logs_there_is_no_maintenance_view(users: UserStore) -> None:
    client = TestClient(create_app(InMemoryBackend(), users, ConsoleSettings(cell="t")),
                        follow_redirects=False)
    _login(client)
    assert 'id="nav-maintenance"' not in client.get("/").text
    assert client.get("/maintenance").status_code == 404


# -- a real browser ------------------------------------------------------------------------------

@pytest.mark.timeout(600)
def test_the_maintenance_page_at_390_px_in_a_browser(users: UserStore, tmp_path: Path,
                                                     browser: Any) -> None:
    from test_browser_console import unclipped

    backend = InMemoryBackend()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(_app(users, _logs(tmp_path, backend.now()),
                                                backend),
                                           log_level="warning", timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until("uvicorn serving", lambda: server.started, poll_s=0.02)
        ctx = browser.new_context(viewport={"width": 390, "height": 800})
        ctx.set_default_timeout(BROWSER_BOUND_MS)
        page = ctx.new_page()
        url = f"http://127.0.0.1:{port}"
        page.goto(f"{url}/maintenance")
        page.fill("input[name=username]", "sup")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{url}/maintenance")
        expect(page.locator("#window-mill2 .maint-late")).to_have_text("late",
                                                                        timeout=BROWSER_BOUND_MS)
        expect(page.locator("#window-mill1 .maint-tech")).to_have_text("tech1")
        expect(page.locator("#part-spindle_bearing .part-stock")).to_have_text("2 on the shelf")
        assert unclipped(page) == []
        ctx.close()
    finally:
        server.should_exit = True
        thread.join(EVENT_BOUND_S)
