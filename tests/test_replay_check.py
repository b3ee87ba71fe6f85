"""``autocell replay LOG --check`` (ops/replay.py): recorded runs re-run offline, no divergence.

Each case records a virtual-time run with the decision log on, then feeds
every agent its recorded inputs and expects the recorded actions back: the
demo cell, each fault scenario of cell_configs/faults/ (crashes and restarts
included), a chaos seed.  A log whose plant event was tampered with diverges
at that event, and the report names agent, input, expected and actual.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ops.cli import main
from ops.replay import record_virtual, replay_check

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "cell_configs" / "demo_cell.yaml")
FAULTS = ["breakdowns", "crash", "long_outage", "lossy_network", "partition",
          "mispredicted_failure"]
# a scenario played on another cell than the demo's, with the options it is written for
PLAYED_ON = {"mispredicted_failure": (str(ROOT / "cell_configs" / "demo_cell_maintenance.yaml"),
                                      ["--maintenance-policy", "predictive"])}


def record(tmp_path: Path, *extra: str, cell: str = DEMO) -> Path:
    log = tmp_path / "d.jsonl"
    assert main(["run", cell, "--quiet", "--seed", "1", "--decision-log", str(log),
                 "--report", str(tmp_path / "report.json"), *extra]) == 0
    return log


@pytest.fixture(scope="module")
def demo_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return record(tmp_path_factory.mktemp("demo"))


def test_the_demo_cell_replays_without_divergence(demo_log: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    rep = replay_check(demo_log)
    assert rep.ok and rep.agents == 31 and rep.entries > 5000
    assert main(["replay", str(demo_log), "--check"]) == 0
    assert capsys.readouterr().out.startswith("replay OK")


@pytest.mark.parametrize("fault", FAULTS)
def test_each_fault_scenario_replays_without_divergence(tmp_path: Path, fault: str) -> None:
    assert sorted(FAULTS) == sorted(p.stem for p in (ROOT / "cell_configs" / "faults").glob(
        "*.yaml"))                                  # a new scenario is replayed too
    cell, extra = PLAYED_ON.get(fault, (DEMO, []))
    log = record(tmp_path, "--faults", str(ROOT / "cell_configs" / "faults" / f"{fault}.yaml"),
                 *extra, cell=cell)
    rep = replay_check(log)
    assert rep.ok, rep.divergence
    if fault == "crash":
        assert rep.restarts > 0
    if fault == "mispredicted_failure":             # the scenario played: the miss happened
        assert json.loads((tmp_path / "report.json").read_text())["prediction_misses"] == 1


def test_a_chaos_seed_replays_without_divergence(tmp_path: Path) -> None:
    from ops.config import load_cell
    from ops.run import trimmed
    from sim_bridge.chaos import random_scenario
    from sim_bridge.virtual import VirtualCell

    cfg = trimmed(load_cell(DEMO), 8)
    cell = VirtualCell(cfg, seed=5, faults=random_scenario(cfg, 5))
    path = tmp_path / "chaos.jsonl"
    with path.open("wb") as sink:
        log = record_virtual(cell, sink)
        cell.run()
        log.close()
    rep = replay_check(path)
    assert rep.ok and rep.entries > 100, rep.divergence


def test_replay_until_stops_early(demo_log: Path) -> None:
    assert 0 < replay_check(demo_log, until=100.0).entries < replay_check(demo_log).entries


@pytest.mark.parametrize("argv, words", [
    (["--what-if", "lowest_cost", "--until", "100"], "--until 100 applies to --check only"),
    (["--set", "orders.o-001.due_at=3600", "--until", "100"], "--until 100 applies to"),
    (["--check", "--what-if", "lowest_cost"], "--check and --what-if/--set exclude each other"),
    (["--check", "--set", "orders.o-001.due_at=3600"], "exclude each other"),
])
def test_options_replay_cannot_honour_are_refused(demo_log: Path, argv: list[str], words: str,
                                                  capsys: pytest.CaptureFixture) -> None:
    """Before, --until was silently ignored by --what-if and --check by --what-if."""
    assert main(["replay", str(demo_log), *argv]) == 2
    captured = capsys.readouterr()
    assert words in captured.err and captured.out == ""


def test_a_tampered_plant_event_diverges_at_that_event(demo_log: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    lines = demo_log.read_text().splitlines(keepends=True)
    n = next(i for i, line in enumerate(lines)
             if '"kind":"plant"' in line and '"event":"operation_done"' in line)
    entry = json.loads(lines[n])
    entry["in"]["event"] = "fault"          # the machine reports a fault instead of done
    lines[n] = json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n"
    bad = tmp_path / "tampered.jsonl"
    bad.write_text("".join(lines))
    rep = replay_check(bad)
    assert rep.divergence is not None
    d = rep.divergence
    assert (d.entry, d.agent) == (n, entry["agent"]) and d.input["event"] == "fault"
    assert d.expected == entry["out"] and d.actual != d.expected
    assert main(["replay", str(bad), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["divergence"]["entry"] == n and not out["ok"]


def test_what_if_re_runs_the_recorded_run_and_another_strategy(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture
                                                               ) -> None:
    from ops.replay import WHAT_IF_KPIS, what_if

    log, report = tmp_path / "d.jsonl", tmp_path / "r.json"
    assert main(["run", DEMO, "--quiet", "--seed", "2", "--decision-log", str(log),
                 "--report", str(report),
                 "--faults", str(ROOT / "cell_configs" / "faults" / "breakdowns.yaml")]) == 0
    recorded = json.loads(report.read_text())
    w = what_if(log, "lowest_cost")
    assert w["strategies"] == {"recorded": "earliest_finish", "what_if": "lowest_cost"}
    assert set(w["kpis"]) == set(WHAT_IF_KPIS)
    for k in WHAT_IF_KPIS:       # the recorded run comes out again, faults included
        assert w["kpis"][k]["recorded"] == recorded[k], k
        assert w["kpis"][k]["what_if"] is not None
    assert recorded["reroutes"] > 0
    assert w["invariants"] == {"recorded": True, "what_if": True}
    assert main(["replay", str(log), "--what-if", "lowest_cost"]) == 0
    assert "lowest_cost" in capsys.readouterr().out


def test_what_if_on_a_log_of_up_needs_the_machine_hosts_logs(tmp_path: Path) -> None:
    from agents.runtime.recorder import DecisionLog
    from ops.replay import what_if
    from security.crypto import SigningKey
    from security.errors import ConfigurationError

    path = tmp_path / "decisions-orders-1.jsonl"
    with path.open("wb") as sink:
        DecisionLog(sink, SigningKey.generate(), host="orders",
                    run={"driver": "host", "host": "orders"}).close()
    with pytest.raises(ConfigurationError, match="hold no finished operation"):
        what_if(path, "lowest_cost")


def test_a_recorded_plant_is_the_durations_and_faults_the_log_holds(tmp_path: Path) -> None:
    """ops/recorded_plant.py on a virtual run's log (the same entries a machine host
    writes): every operation's duration, every injected breakdown with its repair time;
    played on the cell under the recorded strategy, the run comes out the same."""
    from ops.recorded_plant import play, read_recorded_plant
    from ops.replay import WHAT_IF_KPIS
    from sim_bridge.report import build_report
    from sim_bridge.virtual import VirtualCell
    from ops.config import load_cell_or_instance
    from ops.config.fault_files import load_faults

    log, report = tmp_path / "d.jsonl", tmp_path / "r.json"
    scenario = ROOT / "cell_configs" / "faults" / "breakdowns.yaml"
    assert main(["run", DEMO, "--quiet", "--seed", "2", "--decision-log", str(log),
                 "--report", str(report), "--faults", str(scenario)]) == 0
    recorded = json.loads(report.read_text())
    history = read_recorded_plant([log])
    assert len(history.durations) == recorded["operations"]
    cfg = load_cell_or_instance(DEMO)
    injected = {(b.resource, b.at_s, b.repair_s)
                for b in load_faults(scenario, cfg).breakdowns}
    assert injected <= {(b.resource, round(b.at_s, 6), round(b.repair_s, 6))
                        for b in history.breakdowns}
    cell = VirtualCell(cfg, seed=2, faults=history.scenario())
    play(cell, history)
    cell.run()
    again = build_report(cell)
    for k in WHAT_IF_KPIS:      # the run again, from its plant's history alone
        assert again[k] == recorded[k], k


def test_a_lost_entry_is_where_replay_check_stops(demo_log: Path, tmp_path: Path) -> None:
    """An input the recorder could not encode is a ``lost`` entry (ADR 95): its decisions
    cannot be checked, so ``--check`` names it as the divergence rather than skip it."""
    lines = demo_log.read_text().splitlines(keepends=True)
    k = [i for i, line in enumerate(lines) if '"k":"in"' in line][60]
    e = json.loads(lines[k])
    lines[k] = json.dumps({"k": "lost", "n": e["n"], "t": e["t"], "agent": e["agent"],
                           "error": "does not encode: test"}) + "\n"
    edited = tmp_path / "lost.jsonl"
    edited.write_text("".join(lines))
    rep = replay_check(edited)
    assert rep.divergence is not None
    assert (rep.divergence.entry, rep.divergence.agent) == (e["n"], e["agent"])
    assert rep.divergence.actual == [["lost", "does not encode: test"]]
