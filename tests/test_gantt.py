"""The schedule view (issue 18): `autocell run --gantt FILE` and `autocell gantt STATE_DIR`
draw machines and robots over time, operations coloured by order, faults, repairs and
escalations marked."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from ops.cli import main
from ops.gantt import colour, gantt_svg, schedule

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "cell_configs" / "demo_cell.yaml"
MINIMAL = ROOT / "cell_configs" / "minimal_cell.yaml"
OUTAGE = ROOT / "cell_configs" / "faults" / "long_outage.yaml"
SVG = "{http://www.w3.org/2000/svg}"

EVENTS = [
    {"t": 0.0, "ev": "move_start", "robot": "r1", "task": "o1/0/m1", "origin": "store",
     "destination": "bay"},
    {"t": 5.0, "ev": "arrived", "robot": "r1", "task": "o1/0/m1", "at": "bay"},
    {"t": 5.0, "ev": "op_start", "machine": "m1", "order": "o1", "task": "o1/0", "setup_s": 2.0},
    {"t": 15.0, "ev": "op_done", "machine": "m1", "order": "o1", "task": "o1/0",
     "quality": "scrap"},
    {"t": 16.0, "ev": "op_start", "machine": "m1", "order": "o2", "task": "o2/0"},
    {"t": 20.0, "ev": "fault", "machine": "m1", "reason": "breakdown"},
    {"t": 20.0, "ev": "op_abort", "machine": "m1", "task": "o2/0", "why": "fault"},
    {"t": 21.0, "ev": "escalation_raised", "escalation": "o2/e1", "cause": "no_capable_resource",
     "priority": 1, "order": "o2", "resource": "m1"},
    {"t": 22.0, "ev": "escalation_raised", "escalation": "host-a/e1", "cause": "reject_burst",
     "priority": 2, "resource": ""},
    {"t": 40.0, "ev": "repaired", "machine": "m1"},
    {"t": 41.0, "ev": "op_start", "machine": "m2", "order": "o2", "task": "o2/0"},
    {"t": 45.0, "ev": "fault", "robot": "r1", "reason": "injected"},
    {"t": 50.0, "ev": "order_completed", "order": "o1"},
]


def test_the_schedule_of_a_run() -> None:
    s = schedule(reversed(EVENTS), ["m1", "m2"], ["r1"], ["o1", "o2"])   # any order in
    assert s.rows == [("m1", "machine"), ("m2", "machine"), ("r1", "robot")]
    bars = {(b.row, b.order): b for b in s.bars}
    assert bars[("r1", "o1")].label == "store → bay" and bars[("r1", "o1")].end == 5.0
    first = bars[("m1", "o1")]
    assert (first.start, first.end, first.setup_s, first.scrapped) == (5.0, 15.0, 2.0, True)
    assert bars[("m1", "o2")].aborted and bars[("m1", "o2")].end == 20.0
    assert bars[("m2", "o2")].end == 50.0                  # still running when the log ends
    assert [(b.row, b.start, b.end) for b in s.bands] == [("m1", 20.0, 40.0), ("r1", 45.0, None)]
    assert [(m.row, m.priority) for m in s.marks] == [("m1", 1), ("", 2)]
    svg = ET.fromstring(gantt_svg(s, "t"))
    groups = {g.get("class") for g in svg.iter(f"{SVG}g")}
    assert groups == {"bar", "fault", "escalation"}
    fills = {r.get("fill") for g in svg.iter(f"{SVG}g") if g.get("data-order") == "o2"
             for r in g.iter(f"{SVG}rect") if r.get("fill", "").startswith("hsl")}
    assert fills == {colour(1)}                             # one colour per order, every row
    assert colour(0) != colour(1)


def test_run_gantt_draws_every_operation(tmp_path: Path) -> None:
    out, events = tmp_path / "g.svg", tmp_path / "e.jsonl"
    assert main(["run", str(MINIMAL), "--quiet", "--gantt", str(out),
                 "--events", str(events)]) == 0
    done = [e for e in map(json.loads, events.read_text().splitlines()) if e["ev"] == "op_done"]
    bars = [g for g in ET.fromstring(out.read_text()).iter(f"{SVG}g") if g.get("class") == "bar"]
    assert len(bars) == len(done) > 0


def test_faults_repairs_and_escalations_are_marked(tmp_path: Path) -> None:
    out = tmp_path / "g.html"
    assert main(["run", str(DEMO), "--quiet", "--faults", str(OUTAGE), "--gantt",
                 str(out)]) == 0
    page = out.read_text()
    assert page.startswith("<!doctype html>") and "<svg" in page
    assert 'class="fault"' in page and "lathe1 down 900.0 s → repaired" in page
    assert 'class="escalation"' in page and "no_capable_resource" in page


def test_a_gantt_file_must_be_svg_or_html(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(MINIMAL), "--quiet", "--gantt", str(tmp_path / "g.png")]) == 2
    assert "use a .svg or .html file" in capsys.readouterr().err
    assert not (tmp_path / "g.png").exists()


def test_gantt_of_a_finished_up_run(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    names = {"m1": "mill1", "m2": "mill2", "r1": "agv1"}          # the demo cell's resources
    events = [{k: names.get(v, v) if isinstance(v, str) else v for k, v in e.items()}
              for e in EVENTS]
    (state / "events-sim.jsonl").write_text("".join(
        json.dumps({**e, "boot": 1}) + "\n" for e in events if e["ev"] != "escalation_raised"))
    (state / "events-console.jsonl").write_text("".join(
        json.dumps({**e, "host": "console"}) + "\n" for e in events
        if e["ev"] == "escalation_raised") + '{"t": 1, "ev": "cut sh')     # a killed writer
    cell = tmp_path / "cell.yaml"
    cell.write_text(DEMO.read_text())
    out = tmp_path / "up.svg"
    assert main(["gantt", str(state), "--cell", str(cell), "--out", str(out)]) == 0
    svg = ET.fromstring(out.read_text())
    kinds = [g.get("class") for g in svg.iter(f"{SVG}g")]
    assert (kinds.count("bar"), kinds.count("fault"), kinds.count("escalation")) == (4, 2, 2)
    assert main(["gantt", str(tmp_path), "--cell", str(cell), "--out", str(out)]) == 2
