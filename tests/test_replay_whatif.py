"""``autocell replay LOG --what-if cell:PATH | --set PATH=VALUE`` (ops/replay.py,
ops/cell_change.py).

"Would a second lathe have saved these orders?": the demo cell recorded with
the lathe down for most of an hour (cell_configs/faults/long_outage.yaml),
re-run on its recorded plant with a copy of the lathe.  All in virtual time.
The figures are compared with the recorded run's own report, never with
constants: the recorded column is the run again, the what-if column has
fewer late orders, and every order it lists was late before and is less late
now.  An unchanged cell gives the same KPIs; a wrong override is exit 2 with
a message naming the option and the nearest known name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ops.cell_change import Override, apply_overrides, cell_change
from ops.cli import main
from ops.replay import WHAT_IF_KPIS, print_what_if, what_if, what_if_args

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "cell_configs" / "demo_cell.yaml")
LONG_OUTAGE = str(ROOT / "cell_configs" / "faults" / "long_outage.yaml")


@pytest.fixture(scope="module")
def outage(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The demo cell, seed 2, lathe1 down 900–4200 s: its decision log and its report."""
    d = tmp_path_factory.mktemp("outage")
    log, report = d / "d.jsonl", d / "r.json"
    assert main(["run", DEMO, "--quiet", "--seed", "2", "--decision-log", str(log),
                 "--report", str(report), "--faults", LONG_OUTAGE]) == 0
    return log, json.loads(report.read_text())


def run_what_if(log: Path, *sets: str, given: str | None = None) -> dict[str, Any]:
    strategy, change = what_if_args(log, given, list(sets))
    return what_if(log, strategy, change=change)


def test_a_second_lathe_saves_orders_the_long_outage_made_late(
        outage: tuple[Path, dict[str, Any]], capsys: pytest.CaptureFixture) -> None:
    log, recorded = outage
    assert main(["replay", str(log), "--set", "machines.lathe2=copy:lathe1", "--json"]) == 0
    w = json.loads(capsys.readouterr().out)
    kpis = w["kpis"]
    for k in WHAT_IF_KPIS:          # the recorded column is the run again, from its plant
        assert kpis[k]["recorded"] == recorded[k], k
    assert recorded["tardy_orders"] > 0
    assert kpis["tardy_orders"]["what_if"] < kpis["tardy_orders"]["recorded"]
    assert kpis["tardiness_total"]["what_if"] < kpis["tardiness_total"]["recorded"]
    assert kpis["orders_completed"]["what_if"] == recorded["orders_completed"]
    assert w["utilisation"]["what_if"]["lathe2"] > 0 and "lathe2" not in w["utilisation"][
        "recorded"]
    assert w["invariants"] == {"recorded": True, "what_if": True}
    # the orders listed are those whose lateness changed, each from the runs' own data
    rows = {r["order"]: r for r in w["orders_changed"]}
    assert len([r for r in rows.values() if r["recorded_late_s"]]) == recorded["tardy_orders"]
    for r in rows.values():
        assert r["what_if_late_s"] is not None and r["recorded_late_s"] is not None
        assert r["what_if_late_s"] < r["recorded_late_s"]
    assert w["change"]["added"] == {"machines": ["lathe2"]}
    assert w["change"]["nominal_times"] == ["lathe2"]
    # the recorded plant: every operation, the lathe's fault with its repair time
    h = w["history"]
    assert h["operations"] == recorded["operations"] and h["faults"] >= 1
    assert h["drives"] > 0 and h["verdicts"] >= recorded["operations"]
    print_what_if(w)                # the table says the same
    out = capsys.readouterr().out
    assert "added machines: lathe2" in out and "utilisation lathe2" in out
    assert "orders whose lateness changed" in out and "on time" in out


@pytest.mark.parametrize("given, sets", [
    (f"cell:{DEMO}", []),                                   # the recorded cell's own file
    ("earliest_finish", ["machines.lathe1.setup_s=15"]),    # its strategy; a value it has
])
def test_an_unchanged_cell_gives_the_same_kpis(outage: tuple[Path, dict[str, Any]],
                                               given: str | None, sets: list[str]) -> None:
    log, recorded = outage
    w = run_what_if(log, *sets, given=given)
    assert w["change"]["lines"] == ["no change"]
    for k in WHAT_IF_KPIS:
        assert w["kpis"][k]["what_if"] == w["kpis"][k]["recorded"] == recorded[k], k
    assert w["orders_changed"] == []


@pytest.mark.parametrize("sets, message", [
    (["machines.lath1.setup_s=5"], "no machine 'lath1' in machines (did you mean 'lathe1'?)"),
    (["machines.lathe2=copy:lath1"], "no machine 'lath1' to copy in machines (did you mean "
                                     "'lathe1'?)"),
    (["machines.lathe1=copy:mill1"], "machine 'lathe1' exists already"),
    (["machines.agv1.load_s=3"], "'agv1' is a robot, not a machine (did you mean "
                                 "robots.agv1.load_s=3?)"),
    (["orders.o-011.due_ats=3600"], "orders.o-011.due_ats: unknown key 'due_ats' (did you "
                                    "mean 'due_at'?)"),
    (["orders.o-011.due_at=10"], "orders.o-011.due_at: due_at (10 s) is not after release_at"),
    (["machines.lathe1.capabilities.turn=120"], "no product's routing uses capability 'turn' "
                                                "(did you mean 'turning'?)"),
    (["machines.lathe1.setup_s=abc"], "machines.lathe1.setup_s: Input should be a valid number"),
    (["products.shaft.routing.7.capability=milling"], "index it 0–2, not '7'"),
    (["lathe2"], "expected PATH=VALUE"),
    (["machines..setup_s=1"], "empty key"),
])
def test_a_bad_override_is_exit_2_with_a_clear_message(
        outage: tuple[Path, dict[str, Any]], capsys: pytest.CaptureFixture,
        sets: list[str], message: str) -> None:
    log, _ = outage
    argv = ["replay", str(log)]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "--set" in err, err


def test_a_bad_cell_file_is_exit_2_with_its_line(outage: tuple[Path, dict[str, Any]],
                                                tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    log, _ = outage
    bad = tmp_path / "cell.yaml"
    bad.write_text(Path(DEMO).read_text().replace("setup_s: 15.0", "setup_s: fifteen"))
    assert main(["replay", str(log), "--what-if", f"cell:{bad}"]) == 2
    assert f"{bad}:" in capsys.readouterr().err


# -- the override syntax on its own ------------------------------------------------------------

CELL = {"machines": [{"id": "m1", "capabilities": {"a": 1.0}, "setup_s": 2.0},
                     {"id": "m.2", "capabilities": {"a": 3.0}}],
        "products": [{"id": "p", "routing": [{"op": "x", "capability": "a"}]}],
        "orders": [{"id": "o-1", "product": "p", "due_at": 10}], "robots": [],
        "hosts": [{"name": "h", "agents": ["m1", "m.2"]}]}


@pytest.mark.parametrize("sets, check", [
    (["machines.m3=copy:m1"], lambda d: d["machines"][2] == {
        "id": "m3", "capabilities": {"a": 1.0}, "setup_s": 2.0}),
    (["machines.m.2.setup_s=4"], lambda d: d["machines"][1]["setup_s"] == 4),   # dotted id
    (["machines.m1=remove"], lambda d: [m["id"] for m in d["machines"]] == ["m.2"]
        and d["hosts"][0]["agents"] == ["m.2"]),
    (["machines.m1.setup_s=remove"], lambda d: "setup_s" not in d["machines"][0]),
    (["orders.o-1.due_at=99"], lambda d: d["orders"][0]["due_at"] == 99),
    (["products.p.routing.0.capability=b"], lambda d: d["products"][0]["routing"][0][
        "capability"] == "b"),
    (["machines.m4={capabilities: {a: 5}}"], lambda d: d["machines"][2] == {
        "id": "m4", "capabilities": {"a": 5}}),
    (["machines.m1.power_kw.idle=1"], lambda d: d["machines"][0]["power_kw"] == {"idle": 1}),
    (["robots.r1={home: s}"], lambda d: d["robots"] == [{"home": "s", "id": "r1"}]),
    (["machines.m3=copy:m1", "machines.m3.setup_s=9"], lambda d: d["machines"][2][
        "setup_s"] == 9 and d["machines"][0]["setup_s"] == 2.0),
])
def test_overrides_edit_a_copy_of_the_cell(sets: list[str], check: Any) -> None:
    data = json.loads(json.dumps(CELL))
    out = apply_overrides(data, [Override.parse(s) for s in sets])
    assert check(out), out
    assert data == CELL                 # the recorded cell is left as it was


def test_what_a_change_takes_from_the_recording_and_what_from_the_cell(
        outage: tuple[Path, dict[str, Any]]) -> None:
    """A retimed machine, a new one, an order of another quantity: their times come from
    the changed cell; the rest keeps the recorded plant."""
    log, _ = outage
    header = json.loads(log.read_text().splitlines()[0])["run"]["cell"]
    change = cell_change(header, sets=["machines.lathe2=copy:lathe1",
                                       "machines.lathe1.capabilities.turning=20",
                                       "machines.mill1.scrap_rate=0.5",
                                       "orders.o-011.quantity=1", "orders.o-012.due_at=9000"])
    resources, orders, quality = change.fresh()
    assert resources == {"lathe1", "lathe2"} and orders == {"o-011"} and quality == {"mill1"}
    assert change.diff.changed["orders"] == {"o-011": ["quantity"], "o-012": ["due_at"]}


# -- the recorded plant: verdicts and drives --------------------------------------------------

def test_the_recorded_plant_gives_verdicts_and_drives(outage: tuple[Path, dict[str, Any]]
                                                      ) -> None:
    """Played on the cell, a verdict and a drive are the recording's, not the simulator's:
    one verdict turned to scrap is a scrapped part, one drive made 100 s longer is an
    arrival 100 s later."""
    from ops.config import cell_from_dict
    from ops.recorded_plant import play, read_recorded_plant
    from sim_bridge.invariants import parse
    from sim_bridge.report import build_report
    from sim_bridge.virtual import VirtualCell

    log, recorded = outage
    header = json.loads(log.read_text().splitlines()[0])["run"]
    history = read_recorded_plant([log])
    assert sum(len(v) for v in history.qualities.values()) == recorded["operations"]
    key = sorted(history.qualities)[0]
    history.qualities[key] = ["scrap"]
    (robot, task), (origin, drive_s) = sorted(history.drives.items())[0]
    history.drives[(robot, task)] = (origin, drive_s + 100.0)

    def arrived(cell: VirtualCell) -> float:
        return next(e["t"] for e in parse(cell.events) if e["ev"] == "arrived"
                    and e["task"] == task)

    recorded_arrival = next(e["t"] for e in map(json.loads, log.read_text().splitlines())
                            if e.get("k") == "in" and e["in"].get("event") == "arrived"
                            and e["in"]["task"] == task)
    cell = VirtualCell(cell_from_dict(header["cell"]), seed=header["seed"],
                       faults=history.scenario())
    play(cell, history)
    cell.run()
    assert recorded["scrapped"] == 0 and build_report(cell)["scrapped"] == 1
    assert arrived(cell) == pytest.approx(recorded_arrival + 100.0)


# -- a recorded `up` run ----------------------------------------------------------------------

@pytest.mark.slow
def test_what_if_a_second_lathe_on_a_recorded_up_run(tmp_path: Path) -> None:
    """Real processes (``autocell up``), the lathe down 300 s: the what-if with a second
    lathe runs on the plant the hosts recorded — operation times, quality verdicts, robot
    drives, the fault — and gives a complete report, both columns."""
    import yaml
    from test_processes import report, small_cell, up

    cell = small_cell(tmp_path)
    f = tmp_path / "breakdown.yaml"
    f.write_text(yaml.safe_dump({"name": "lathe", "mtbf_breakdowns": False, "breakdowns": [
        {"resource": "lathe1", "at_s": 100, "repair_s": 300}]}))
    state = tmp_path / "state"
    res = up(cell, state, "--faults", str(f))
    assert res.returncode == 0, res.stderr[-3000:]
    w = run_what_if(state / "decisions-orders-1.jsonl", "machines.lathe2=copy:lathe1")
    h = w["history"]
    assert h["operations"] > 0 and h["verdicts"] >= h["operations"] and h["drives"] > 0
    assert h["faults"] >= 1
    for k in WHAT_IF_KPIS:
        assert w["kpis"][k]["recorded"] is not None and w["kpis"][k]["what_if"] is not None, k
    assert w["invariants"] == {"recorded": True, "what_if": True}
    assert w["kpis"]["orders_completed"]["recorded"] == report(state)["orders_completed"]
    assert w["kpis"]["orders_completed"]["what_if"] == w["kpis"]["orders_completed"]["recorded"]
    assert w["utilisation"]["what_if"]["lathe2"] > 0
    assert w["kpis"]["tardiness_total"]["what_if"] <= w["kpis"]["tardiness_total"]["recorded"]


MAINT = ROOT / "cell_configs" / "demo_cell_maintenance.yaml"


def test_a_wearing_machine_fails_once_on_its_recorded_plant(tmp_path: Path) -> None:
    """ADR 74: mill1 wears (a ``degradation:`` block, its mean life cut to 400 busy seconds
    so it fails within the run).  On the recorded plant its wear failures are its model's
    again, not recorded breakdowns as well: before, it failed twice and the recorded
    column came out later than the run it replays."""
    cell = tmp_path / "wear.yaml"
    text = MAINT.read_text()
    assert "mttf_s: 1500 " in text
    cell.write_text(text.replace("mttf_s: 1500 ", "mttf_s: 400  "))
    log, report = tmp_path / "d.jsonl", tmp_path / "r.json"
    assert main(["run", str(cell), "--quiet", "--seed", "2", "--decision-log", str(log),
                 "--report", str(report)]) == 0
    recorded = json.loads(report.read_text())
    assert recorded["faults"] >= 1                              # it did wear out

    w = run_what_if(log, "machines.mill1.setup_s=8")           # a value it has: no change
    assert w["change"]["lines"] == ["no change"]
    for k in WHAT_IF_KPIS:          # the run again: each failure once, from the model
        assert w["kpis"][k]["recorded"] == w["kpis"][k]["what_if"] == recorded[k], k

    from agents.cell.faults import Breakdown
    from ops.config import load_cell
    from ops.recorded_plant import read_recorded_plant

    history = read_recorded_plant([log])
    assert len(history.wear_faults) == recorded["faults"] and not history.breakdowns
    assert w["history"]["wear_faults"] == len(history.wear_faults)

    # with the wear model gone from a machine, its recorded wear faults are history again
    cfg = load_cell(cell)
    assert history.scenario(cfg).breakdowns == []
    worn = {b.resource for b in history.wear_faults}
    plain = cfg.model_copy(update={"machines": [
        m.model_copy(update={"degradation": None}) for m in cfg.machines]})
    played = history.scenario(plain).breakdowns
    assert played == sorted(history.wear_faults, key=lambda b: (b.at_s, b.resource))
    assert all(isinstance(b, Breakdown) and b.resource in worn for b in played)
