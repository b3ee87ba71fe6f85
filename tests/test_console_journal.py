"""The alarm journal (issue 18): every escalation and every action, filtered by priority,
state, cause, resource and wall-clock time range, searchable, and exported as CSV."""

from __future__ import annotations

import csv
import io
import re
from datetime import datetime

import pytest
from starlette.testclient import TestClient

from ops.console.app import ConsoleSettings, create_app
from ops.console.backend import InMemoryBackend
from ops.console.users import UserStore

T0 = datetime(2026, 12, 3, 9, 0, 0).timestamp()


class Clock:
    t = T0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def client(tmp_path):
    users = UserStore(tmp_path / "users.db")
    users.add("ann", "supervisor", "ann-password")
    clock = Clock()
    b = InMemoryBackend(clock=clock)
    opts = [{"id": "wait", "label": "Wait for repair", "effect": ""},
            {"id": "cancel", "label": "Cancel the order", "effect": ""}]
    for k, (prio, cause, res) in enumerate([(1, "no_capable_resource", "lathe1"),
                                            (2, "repeat_faults", "agv-2"),
                                            (3, "quality_reject", "cmm-1")]):
        clock.t = T0 + 600 * k                                  # 09:00, 09:10, 09:20
        b.raise_escalation(priority=prio, cause=cause, consequence="c", options=opts,
                           safe_default="wait", deadline_at=clock.t + 3600,
                           context={"resource": res, "order": f"o-{k}"}, escalation_id=f"e{k}")
    clock.t = T0 + 1800                                         # 09:30
    b.acknowledge("e1", "ann", clock.t)
    b.decide("e0", "ann", "cancel", "=HYPERLINK(\"x\") fitter says a week", clock.t)
    c = TestClient(create_app(b, users, ConsoleSettings(cell="j"), clock=clock),
                   follow_redirects=False)
    token = re.search(r'name="csrf" value="([^"]+)"', c.get("/login").text).group(1)
    assert c.post("/login", data={"username": "ann", "password": "ann-password",
                                  "csrf": token, "next": "/"}).status_code == 303
    return c


def count(page: str) -> int:
    return int(re.search(r'id="journal-count">(\d+)<', page).group(1))


@pytest.mark.parametrize(("query", "n"), [
    ("", 5),                                         # 3 raised, 1 acknowledged, 1 decided
    ("priority=1", 2), ("state=acknowledged", 2), ("cause=repeat_faults", 2),
    ("resource=cmm-1", 1), ("resource=Lathe 1", 2), ("resource=o-1", 2),
    ("text=week", 1), ("text=AGV", 2),
    ("since=2026-12-03T09:05&until=2026-12-03T09:25", 2),
    ("since=2026-12-03T09:25", 2), ("priority=4", 0),
], ids=lambda v: str(v))
def test_the_journal_filters(client, query, n):
    assert count(client.get(f"/journal?{query}").text) == n


def test_the_journal_reads_as_words_with_wall_times(client):
    page = client.get("/journal").text
    assert "decided: Cancel the order" in page and "No machine can do the next step" in page
    assert 'title="cell time' in page and 'datetime="2026-12-03T09:30:00"' in page
    assert page.index("decided: Cancel") < page.index("raised")         # newest first


def test_the_journal_exports_csv(client):
    r = client.get("/journal.csv?priority=1")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert 'filename="j-alarm-journal.csv"' in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [(x["action"], x["who"]) for x in rows] == [("decide", "ann"), ("raised", "the console")]
    assert rows[0]["time"] == "2026-12-03T09:30:00" and rows[1]["time"] == "2026-12-03T09:00:00"
    assert rows[0]["what"].startswith("decided: Cancel the order — “=HYPERLINK")


def test_a_formula_is_never_exported_as_one():
    from ops.console.journal import JournalRow, to_csv

    row = JournalRow(None, 1.0, "=e", 1, "open", "+c", "-t", "@r", "o", "a", "=cmd|x", "t")
    line = to_csv([row]).splitlines()[1]
    assert ",'=e," in line and ",'+c,'-t,'@r," in line and ",'=cmd|x," in line


def test_the_journal_needs_a_login(tmp_path):
    c = TestClient(create_app(InMemoryBackend(), UserStore(tmp_path / "u.db"),
                              ConsoleSettings()), follow_redirects=False)
    assert c.get("/journal").status_code == 303 and c.get("/journal.csv").status_code == 303
