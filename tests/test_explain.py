"""``autocell explain LOG SUBJECT`` (ops/explain.py) on hand-built scenarios.

* an order re-routed after a fault (the demo cell, seed 2, breakdowns:
  lathe1 fails o-011's turning at 900 s);
* an award that was not the earliest finish because of the strategy (the
  energy cell under ``lowest_cost`` that prices a kWh at 1000 s: o-002/1 goes
  to drill1 although mill2 finishes earlier);
* an idle machine (the minimal cell with a grinder no product needs) and a
  busy one at ``--at``;
* an escalation raised during a long outage.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from ops.cli import main
from ops.config import cell_from_dict, load_cell
from ops.explain import Recorded, explain
from ops.replay import record_virtual
from sim_bridge.virtual import VirtualCell

ROOT = Path(__file__).resolve().parents[1]
CELLS = ROOT / "cell_configs"


def record(tmp_path: Path, cfg: Any, seed: int, name: str, **kw: Any) -> Path:
    cell = VirtualCell(cfg, seed=seed, **kw)
    path = tmp_path / f"{name}.jsonl"
    with path.open("wb") as sink:
        log = record_virtual(cell, sink)
        cell.run()
        log.close()
    return path


def edited(path: Path, change: Any) -> Any:
    data = load_cell(path).model_dump(mode="json", exclude_none=True)
    data.pop("security", None)
    change(data)
    return cell_from_dict(data, source=f"{path.name} (edited by the test)")


def texts(story: dict[str, Any]) -> list[str]:
    return [x["text"] for x in story["lines"]]


def test_an_order_re_routed_after_a_fault(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from ops.config.fault_files import load_faults

    cfg = load_cell(CELLS / "demo_cell.yaml")
    log = record(tmp_path, cfg, 2, "breakdowns",
                 faults=load_faults(str(CELLS / "faults" / "breakdowns.yaml"), cfg))
    story = explain(Recorded.load(log), "o-011")
    said = texts(story)
    assert story["kind"] == "order"
    first = said.index("awarded o-011/0 to lathe1 (earliest_finish: score 1000 vs no other "
                       "bid); finish at 1000.1 s")
    failed = said.index("lathe1 failed o-011/0: lathe1 injected")
    rerouted = said.index("re-routed o-011/0 away from lathe1 (lathe1 injected)")
    refused = said.index("lathe1 refused o-011/0 (down, back at 1200.0 s)")
    assert first < failed < rerouted < refused
    again = [x for x in story["lines"] if x["text"].startswith("awarded o-011/0 to lathe1")]
    assert len(again) == 2 and again[1]["t"] > 1200.0       # awarded again after the repair
    retries = next(x for x in story["lines"] if x["text"].startswith("o-011/0 (turn): called "
                                                                     "lathe1 (attempt "))
    assert retries["repeats"] > 10                           # the retries told once
    assert said[-1] == "order completed, 148.7 s late" or said[-1].startswith("order completed")
    assert main(["explain", str(log), "o-011"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("order o-011\n") and "re-routed o-011/0 away from lathe1" in out


def test_an_award_that_was_not_the_earliest_finish(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    def lowest_cost(d: dict[str, Any]) -> None:
        d["negotiation"]["strategy"]["order"] = {"name": "lowest_cost",
                                                 "params": {"energy_s_per_kwh": 1000}}

    log = record(tmp_path, edited(CELLS / "demo_cell_energy.yaml", lowest_cost), 1, "cost")
    story = explain(Recorded.load(log), "o-002/1")
    award = next(x for x in story["lines"] if x["text"].startswith("o-002: awarded"))
    assert award["data"]["earliest_finish"] is False
    # the figures follow the energy cell (its tariff and cap); the story's shape is fixed
    assert re.fullmatch(
        r"o-002: awarded o-002/1 to drill1 \(lowest_cost: score [\d.]+ vs lathe1 [\d.]+, mill2 "
        r"[\d.]+\); not the earliest finish: mill2 would have finished at ([\d.]+) s, drill1 at "
        r"([\d.]+) s, but lowest_cost scores drill1 lower", award["text"])
    m = re.search(r"mill2 would have finished at ([\d.]+) s, drill1 at ([\d.]+) s", award["text"])
    assert m and float(m.group(1)) < float(m.group(2))
    assert main(["explain", str(log), "o-002/1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    why = next(x["data"]["award"] for x in data["lines"] if "award" in x.get("data", {}))
    assert {c["resource"] for c in why["candidates"]} == {"drill1", "lathe1", "mill2"}


def test_an_idle_machine_and_a_busy_one(tmp_path: Path) -> None:
    def grinder(d: dict[str, Any]) -> None:
        d["machines"].append({"id": "grind1", "location": "bench",
                              "capabilities": {"grinding": 5.0}})

    log = record(tmp_path, edited(CELLS / "minimal_cell.yaml", grinder), 1, "idle")
    rec = Recorded.load(log)
    story = explain(rec, "grind1")
    idle = [x for x in story["lines"] if x.get("data", {}).get("reason") == "no_calls"]
    assert len(idle) == 1 and idle[0]["data"]["idle_from"] == 0.0
    assert idle[0]["text"].endswith("no call for proposals reached it (no order needed it then)")
    saw = explain(rec, "saw1")
    started = next(x["t"] for x in saw["lines"] if x["text"].startswith("started o-1/0"))
    assert explain(rec, "saw1", at=started + 1.0)["then"].startswith("busy with o-1/0 since")
    assert explain(rec, "grind1", at=10.0)["then"] == "idle since 0.0 s"


def test_an_escalation(tmp_path: Path) -> None:
    from ops.config.fault_files import load_faults

    cfg = load_cell(CELLS / "demo_cell.yaml")
    log = record(tmp_path, cfg, 1, "outage",
                 faults=load_faults(str(CELLS / "faults" / "long_outage.yaml"), cfg))
    rec = Recorded.load(log)
    esc = next(e["in"]["body"]["escalation"] for e in rec.entries
               if e["k"] == "in" and e["in"]["kind"] == "message"
               and e["in"]["type"] == "escalate")
    story = explain(rec, esc)
    assert story["kind"] == "escalation"
    assert any(x["text"].startswith(f"console: escalation {esc} from ") for x in story["lines"])


def test_an_unknown_subject_is_an_error(tmp_path: Path) -> None:
    log = record(tmp_path, load_cell(CELLS / "minimal_cell.yaml"), 1, "min")
    assert main(["explain", str(log), "nobody"]) == 2


def test_scores_that_differ_never_read_as_a_tie() -> None:
    from ops.explain import _award_text

    w = {"award": "o-017/0/m1", "winner": "agv2", "strategy": "earliest_finish",
         "candidates": [{"resource": "agv1", "score": 1559.6, "finish_at": 1559.6},
                        {"resource": "agv2", "score": 1559.5, "finish_at": 1559.5}]}
    text, _ = _award_text(w)
    assert "score 1559.5 vs agv1 1559.6" in text
    w["candidates"][0]["score"] = 1200.25           # far apart: four digits are enough
    assert "score 1560 vs agv1 1200" in _award_text(w)[0]


def test_a_short_fold_shows_its_last_line_whose_numbers_may_matter() -> None:
    from ops.explain import Line, folded, render

    bids = [Line(1445.1, "proposed o-014/1 to o-014: finish 1540.1 s (queue 55 s)", "lathe1"),
            Line(1500.1, "proposed o-014/1 to o-014: finish 1540.1 s (queue 0 s)", "lathe1")]
    (one,) = folded(bids)
    text = render({"kind": "resource", "subject": "lathe1", "lines": [one.to_json()]})
    assert "(and 1 more like it; the last at t=1500.1 s: proposed o-014/1 to o-014: " \
           "finish 1540.1 s (queue 0 s))" in text
    calls = [Line(900.0 + i, f"called lathe1 (attempt {i})", "o-011") for i in range(1, 60)]
    (many,) = folded(calls)                  # a long retry stays one short line
    text = render({"kind": "order", "subject": "o-011", "lines": [many.to_json()]})
    assert text.endswith("(and 58 more like it until t=959.0 s)")


def test_a_non_routine_flag_is_told_as_what_it_is_not_as_an_escalation() -> None:
    from ops.explain import _log_text

    text = _log_text("non_routine", {"order": "o-017", "task": "o-017/2",
                                     "cause": "no_capable_resource", "capability": "assembly"})
    assert text.startswith("flagged o-017/2 as non-routine: no machine offering assembly bid")
    assert "escalation to a supervisor, if one follows, is told on its own line" in text
