"""Never false reassurance (issue 18): the console says so when no cell is connected, when
the cell's heartbeat is stale, and when the run has ended, naming since when; "Nothing needs
you" only while a live cell reports in; the cell clock is shown as a time of day."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from agents.escalation.store import EscalationStore
from ops.console.app import ConsoleSettings, create_app
from ops.console.store_backend import StoreBackend
from ops.console.users import UserStore
from ops.console.views import clock_time, link_status

T0 = 1_780_000_000.0     # a wall time


@pytest.mark.parametrize(("liveness", "now", "state", "since"), [
    (None, T0, "no_store", T0 - 60),
    ({}, T0, "never", T0 - 60),
    ({"cell_at": 500.0, "wall_at": T0 - 0.5, "speed": 10.0, "every_s": 0.2}, T0, "live", 0.0),
    ({"cell_at": 500.0, "wall_at": T0 - 2.9, "speed": 1.0, "every_s": 0.2}, T0, "live", 0.0),
    ({"cell_at": 500.0, "wall_at": T0 - 3.1, "speed": 1.0, "every_s": 0.2}, T0, "lost", T0 - 3.1),
    ({"cell_at": 500.0, "wall_at": T0 - 9.0, "speed": 1.0, "every_s": 2.0}, T0, "live", 0.0),
    ({"cell_at": 500.0, "wall_at": T0 - 11.0, "speed": 1.0, "every_s": 2.0}, T0, "lost",
     T0 - 11.0),
    ({"cell_at": 500.0, "wall_at": T0 - 1, "stopped_wall_at": T0 - 1}, T0, "ended", T0 - 1),
], ids=["no store", "no heartbeat", "live at speed 10", "within the floor", "past the floor",
        "within 5 intervals", "past 5 intervals", "run ended"])
def test_link_status(liveness, now, state, since):
    link = link_status(liveness, now, started_at=T0 - 60, where="x.db")
    assert (link.state, link.since_at, link.live) == (state, since, state == "live")
    if state != "live":
        assert clock_time(since) in link.headline and link.advice


def test_the_cell_clock_maps_to_wall_time_by_the_heartbeat():
    link = link_status({"cell_at": 500.0, "wall_at": T0, "speed": 10.0, "every_s": 0.2}, T0, T0)
    assert link.wall_of(600.0) == T0 + 10.0 and link.wall_of(500.0) == T0


class Wall:
    t = T0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def site(tmp_path: Path):
    users = UserStore(tmp_path / "users.db")
    users.add("ann", "supervisor", "ann-password")
    wall = Wall()
    db = tmp_path / "esc.db"
    app = create_app(StoreBackend(db, wall_clock=wall), users, ConsoleSettings(cell="t"),
                     clock=wall)
    client = TestClient(app, follow_redirects=False)
    token = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
    r = client.post("/login", data={"username": "ann", "password": "ann-password",
                                    "csrf": token, "next": "/"})
    assert r.status_code == 303
    return client, wall, db


def test_pages_say_when_no_cell_reports_in(site):
    client, wall, db = site
    page = client.get("/").text                                  # no store yet
    assert "No cell connected since " + clock_time(T0) in page and str(db) in page
    assert "Nothing needs you" not in page and 'id="no-open"' in page

    store = EscalationStore(db)
    page = client.get("/").text                                  # a store, never a heartbeat
    assert "No cell has reported in since" in page and "Nothing needs you" not in page

    store.heartbeat(1234.0, T0, 1.0, 0.2)
    wall.t = T0 + 1.0
    page = client.get("/").text                                  # live
    assert 'role="alert" id="link-lost"' not in page and "Nothing needs you" in page
    assert f"<time>{clock_time(T0)}</time>" in page           # cell time 1234 s was at T0
    assert "(1234 s)" in page and 'title="cell time 1234.0 s"' in page

    wall.t = T0 + 30.0
    page = client.get("/").text                                  # the heartbeat is stale
    assert f"Communication with the cell lost since {clock_time(T0)}" in page
    assert "Nothing needs you" not in page

    store.heartbeat(1264.0, T0 + 30.0, 1.0, 0.2)
    store.stopped(T0 + 31.0)
    wall.t = T0 + 32.0
    page = client.get("/").text                                  # the run has ended
    assert f"The run has ended (at {clock_time(T0 + 31.0)})" in page
    assert "Nothing needs you" not in page
    store.heartbeat(1300.0, T0 + 40.0, 1.0, 0.2)                 # a new run beats again
    wall.t = T0 + 40.5
    assert "Nothing needs you" in client.get("/").text
