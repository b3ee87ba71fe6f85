"""Escalations and Gantt bars linked to their stories (issue 19 item 2, issue 18's Gantt):
one recorded virtual-time run of the demo cell's long outage (a decision log from
``autocell run --decision-log``, the escalation store from ``--escalations-db``, the Gantt
from ``--gantt``), then the chart and the console read back over it."""

from __future__ import annotations

import html
import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from ops.cli import main
from ops.console.app import ConsoleSettings, create_app
from ops.console.store_backend import StoreBackend
from ops.console.users import UserStore
from ops.config import load_cell_or_instance
from ops.gantt import Bar, Mark, Schedule, gantt_html, gantt_svg, write
from ops.stories import LiveStories, Stories, resolve

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "cell_configs" / "demo_cell.yaml"
OUTAGE = ROOT / "cell_configs" / "faults" / "long_outage.yaml"
SVG = "{http://www.w3.org/2000/svg}"
ESC = "o-011/e1"          # raised at 900 s when lathe1 goes down, resolved by its safe default


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("run")
    assert main(["run", str(DEMO), "--quiet", "--faults", str(OUTAGE), "--decision-log",
                 str(d / "decisions.jsonl"), "--escalations-db", str(d / "esc.db"),
                 "--gantt", str(d / "g.html"), "--events", str(d / "events.jsonl")]) == 0
    return d


def _titles(page: str, cls: str) -> list[str]:
    svg = ET.fromstring(page[page.index("<svg"):page.index("</svg>") + 6])
    return [g.findtext(f"{SVG}title") or "" for g in svg.iter(f"{SVG}g") if g.get("class") == cls]


def test_a_bar_carries_the_story_of_its_award(run: Path) -> None:
    page = (run / "g.html").read_text()
    bars = _titles(page, "bar")
    bar = next(t for t in bars if t.startswith("o-002 · o-002/0 "))
    assert "task o-002/0" in bar
    assert "awarded o-002/0 to lathe1 (" in bar and "lathe1: started o-002/0" in bar
    # the bar links to the same story in the panel below the chart
    anchor = re.search(r'<details class="story" id="(story-\d+)"><summary>o-002/0 \(o-002\)',
                       page)
    assert anchor and f'href="#{anchor.group(1)}"' in page
    # a robot's move tells its own award; the fault band tells the resource's down time
    assert any("awarded o-001/0/m1 to agv" in t for t in bars)
    fault = next(t for t in _titles(page, "fault") if t.startswith("lathe1 down 900.0 s"))
    assert "plant: fault (injected" in fault and "refused o-011/0 to o-011 (down)" in fault


def test_an_escalation_mark_carries_its_story(run: Path) -> None:
    marks = _titles((run / "g.html").read_text(), "escalation")
    mark = next(t for t in marks if ESC in t)
    assert f"escalated {ESC}: no_capable_resource" in mark
    assert f"sent decision wait_for_repair on {ESC}" in mark


def test_without_a_decision_log_the_chart_is_as_before(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "g.html"
    events = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()]
    write(str(out), events, load_cell_or_instance(DEMO), "no log")
    page = out.read_text()
    assert 'class="story"' not in page and "#story-" not in page
    assert "awarded" not in "".join(_titles(page, "bar"))


def test_gantt_of_an_up_state_dir_reads_the_logs_its_report_names(run: Path,
                                                                   tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    shutil.copy(run / "events.jsonl", state / "events-sim.jsonl")
    shutil.copy(run / "decisions.jsonl", state / "decisions-cell-1.jsonl")
    (state / "report.json").write_text(json.dumps(
        {"decision_logs": [{"file": "decisions-cell-1.jsonl", "host": "cell", "boot": 1}]}))
    out = tmp_path / "up.html"
    assert main(["gantt", str(state), "--cell", str(DEMO), "--out", str(out)]) == 0
    assert any("awarded o-002/0 to lathe1 (" in t for t in _titles(out.read_text(), "bar"))
    assert main(["gantt", str(state), "--cell", str(DEMO), "--out", str(out),
                 "--no-stories"]) == 0
    assert "awarded" not in "".join(_titles(out.read_text(), "bar"))


class _Hostile:
    logs = ["<b>log</b>"]

    def of(self, subject: str) -> list[str]:
        return [f'task {subject}', '<script>alert("x")</script> & "quotes"']

    def between(self, resource: str, start: float, end: float | None) -> list[str]:
        return self.of(resource)


def test_ids_and_stories_are_escaped() -> None:
    evil = '"><script>alert(1)</script>'
    s = Schedule([(evil, "machine")], [evil],
                 [Bar(evil, 0.0, 5.0, evil, evil, task=f"{evil}/0")], [],
                 [Mark(evil, 1.0, 1, evil, escalation=evil)], 10.0)
    for text in (gantt_svg(s, evil, _Hostile()), gantt_html(s, evil, _Hostile())):  # type: ignore[arg-type]
        assert "<script>alert" not in text
        ET.fromstring(text[text.index("<svg"):text.index("</svg>") + 6])   # well-formed
    assert html.escape('<script>alert("x")</script>') in gantt_html(s, "", _Hostile())  # type: ignore[arg-type]


def test_stories_of_unknown_subjects_are_empty(run: Path) -> None:
    stories = Stories.load([run / "decisions.jsonl"])
    assert stories is not None
    assert stories.of("o-999/e7") == [] and stories.of("nobody") == []
    assert stories.of(ESC)[0] == f"escalation {ESC}"
    assert Stories.load([]) is None
    assert resolve([run]) == [run / "decisions.jsonl"]       # a directory: the logs in it


def test_live_stories_read_a_growing_log_again_at_most_every_interval(run: Path,
                                                                     tmp_path: Path) -> None:
    log = tmp_path / "decisions.jsonl"
    lines = (run / "decisions.jsonl").read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:2]))
    now = [0.0]
    live = LiveStories(lambda: [log], every_s=10.0, clock=lambda: now[0])
    first = live.get()
    assert first is not None and not first.mentions(ESC)
    log.write_text("".join(lines))                     # the run went on
    now[0] = 5.0
    assert live.get() is first                         # not yet read again
    now[0] = 10.0
    again = live.get()
    assert again is not first and again is not None and again.mentions(ESC)
    now[0] = 30.0
    assert live.get() is again                         # unchanged: not read again
    assert LiveStories(list).get() is None


# -- the console ----------------------------------------------------------------------------

PASSWORD = "ann-password"


def _console(run: Path, tmp_path: Path, logs: list[Path]) -> TestClient:
    users = UserStore(tmp_path / "users.db")
    users.add("ann", "supervisor", PASSWORD)
    app = create_app(StoreBackend(run / "esc.db"), users, ConsoleSettings(cell="demo"),
                     stories=LiveStories(lambda: logs))
    return TestClient(app, follow_redirects=False)


def _login(client: TestClient) -> None:
    token = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text)
    assert token
    r = client.post("/login", data={"username": "ann", "password": PASSWORD,
                                    "csrf": token.group(1), "next": "/"})
    assert r.status_code == 303


def test_the_escalation_page_links_to_its_story(run: Path, tmp_path: Path) -> None:
    client = _console(run, tmp_path, [run / "decisions.jsonl"])
    assert client.get(f"/story/{ESC}").status_code == 303           # login required
    _login(client)
    detail = client.get(f"/escalations/{ESC}").text
    assert 'id="story-link"' in detail and 'href="/story/o-011/e1"' in detail
    r = client.get(f"/story/{ESC}")
    assert r.status_code == 200
    assert f"o-011: escalated {ESC}: no_capable_resource" in r.text
    assert f"console: sent decision wait_for_repair on {ESC}" in r.text
    assert client.get("/story/o-999/e1").status_code == 404


def test_the_escalation_page_links_to_its_order_and_resource_stories(run: Path,
                                                                      tmp_path: Path) -> None:
    client = _console(run, tmp_path, [run / "decisions.jsonl"])
    _login(client)
    detail = client.get(f"/escalations/{ESC}").text
    assert 'id="order-story" href="/story/o-011?from=o-011/e1"' in detail
    assert 'id="resource-story" href="/story/lathe1?from=o-011/e1"' in detail
    order = client.get("/story/o-011?from=o-011/e1")
    assert order.status_code == 200
    assert "o-011 turn" in order.text or "o-011/0" in order.text
    assert 'href="/escalations/o-011/e1"' in order.text          # back to where it came from
    # the resource's story is told around the escalation's raise (900 s), not from 0 s
    lathe = client.get("/story/lathe1", params={"from": ESC})
    assert lathe.status_code == 200 and "plant: fault (injected" in lathe.text
    assert "earlier lines: autocell explain" in lathe.text
    whole = Stories.load([run / "decisions.jsonl"])
    assert whole is not None and not any("plant: fault" in x for x in whole.of("lathe1"))
    # a ``from`` that names no escalation links back to the list, not to a 404
    stray = client.get("/story/lathe1?from=nope")
    assert stray.status_code == 200 and 'href="/escalations/nope"' not in stray.text
    assert 'class="back">&larr; Escalations<' in stray.text


def test_without_decision_logs_there_is_no_story_link(run: Path, tmp_path: Path) -> None:
    client = _console(run, tmp_path, [])
    _login(client)
    page = client.get(f"/escalations/{ESC}").text
    assert 'id="story-link"' not in page and 'id="order-story"' not in page
    assert 'id="resource-story"' not in page
    r = client.get(f"/story/{ESC}")
    assert r.status_code == 404 and "--decision-logs" in r.text


def test_a_wrong_decision_logs_path_is_exit_2(run: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["console", str(DEMO), "--db", str(run / "esc.db"), "--users",
                 str(tmp_path / "users.db"), "--decision-logs", str(tmp_path / "nope")]) == 2
    assert "--decision-logs" in capsys.readouterr().err
