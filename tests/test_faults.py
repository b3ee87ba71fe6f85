"""Fault scenarios: the shipped files, bad input as FILE:LINE, and what each fault does.

Three layers:

* **Shipped scenarios** (``cell_configs/faults/*.yaml``) through ``ops.cli.main``:
  each validates against the demo cell and plays to the end with every
  invariant (docs/architecture.md) holding and every order completed.
* **Bad input**, table-driven: ``BASE`` is a valid scenario whose line numbers
  are pinned below; each row replaces one line and names the
  ``FILE:LINE: path`` the issue must carry, via :func:`load_faults` and
  through the CLI (exit 2).
* **Semantics** in virtual time on the demo cell, one fault kind at a time
  (``mtbf_breakdowns: false``, so only the listed fault happens).  Times are
  picked from the fault-free run of seed 1, where mill1 runs ``o-012/0`` over
  [940.3, 1090.3) and the machines host holds several leases at t = 1000; a
  lease lives 3 × 5 s + 0.05 s = 15.05 s without a heartbeat.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest

from agents.cell.faults import FaultScenario
from ops.cli import main
from ops.config import CellConfig, ConfigError, ConfigIssue, cell_from_dict, load_cell
from ops.config.fault_files import load_faults
from sim_bridge.invariants import parse
from sim_bridge.report import build_report
from sim_bridge.virtual import VirtualCell

ROOT = Path(__file__).resolve().parents[1]
CELLS = ROOT / "cell_configs"
DEMO = CELLS / "demo_cell.yaml"
SCENARIOS = sorted((CELLS / "faults").glob("*.yaml"))
CFG = load_cell(DEMO)
MACHINES_HOST = ["mill1", "mill2", "lathe1", "drill1", "station1"]


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def assert_every_invariant(report: dict[str, Any]) -> None:
    assert report["invariant_violations"] == {}
    assert all(report["invariants"].values()), report["invariants"]


def play(scenario: dict[str, Any], cfg: CellConfig = CFG, **kw: Any,
         ) -> tuple[VirtualCell, dict[str, Any], list[dict[str, Any]]]:
    """Run ``cfg`` to the end under ``scenario``; the cell, its report and its parsed events."""
    cell = VirtualCell(cfg, faults=FaultScenario.model_validate(scenario), **kw)
    cell.run()
    return cell, build_report(cell), parse(cell.events)


def only(name: str, **faults: Any) -> dict[str, Any]:
    """A scenario with just ``faults`` (no random MTBF breakdowns on top)."""
    return {"name": name, "mtbf_breakdowns": False, **faults}


def assert_all_orders_complete(cell: VirtualCell, report: dict[str, Any]) -> None:
    assert cell.ended_by == "completed"
    assert report["orders_completed"] == report["orders_total"] == 24
    assert report["orders_lost"] == 0
    assert_every_invariant(report)


# -- shipped scenarios ----------------------------------------------------------------------------

def test_the_four_scenarios_are_shipped() -> None:
    assert {"breakdowns.yaml", "crash.yaml", "lossy_network.yaml", "partition.yaml"} <= {
        p.name for p in SCENARIOS}


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_shipped_scenario_validates_against_the_demo_cell(
        path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capsys, "validate", str(DEMO), "--faults", str(path))
    assert code == 0, err
    assert f"{path}: OK — scenario " in out
    assert err == ""


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_shipped_scenario_runs_with_every_invariant(
        path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report_path = tmp_path / "report.json"
    code, out, err = run_main(capsys, "run", str(DEMO), "--faults", str(path), "--quiet",
                              "--report", str(report_path))
    assert code == 0, err
    assert out == ""
    report = json.loads(report_path.read_text())
    assert_every_invariant(report)
    assert report["ended_by"] == "completed"
    assert report["orders_completed"] == report["orders_total"] == 24
    assert report["orders_lost"] == 0
    for key in ("reroutes", "lease_expiries", "restarts"):
        assert isinstance(report[key], int) and report[key] >= 0, key
    for key in ("detection_latency", "recovery_latency"):
        assert set(report[key]) == {"max", "p95"}, key
        assert 0.0 <= report[key]["p95"] <= report[key]["max"], key
    if path.stem == "crash":
        assert report["restarts"] > 0
    if path.stem == "breakdowns":
        assert report["reroutes"] > 0
    if path.stem == "partition":           # its 2 s clock skew is inside the 60 s window
        assert "clock_skew" not in report["messages_rejected_by_reason"]


# -- bad input: FILE:LINE: path -------------------------------------------------------------------

BASE = """\
name: bad-scenario
description: every kind of fault, once
mtbf_breakdowns: false
breakdowns:
  - {resource: mill1, at_s: 600, repair_s: 420}
crashes:
  - {agent: o-003, at_s: 200, down_s: 2}
hosts:
  - {host: machines, action: kill, at_s: 1000, duration_s: 2}
network:
  loss: 0.05
  duplication: 0.02
partitions:
  - {agents: [mill1, mill2], at_s: 700, duration_s: 60}
clock_skew:
  - {agent: lathe1, offset_s: 2.0, at_s: 0}
"""
BASE_LINES = BASE.splitlines()
assert BASE_LINES[4].startswith("  - {resource:") and BASE_LINES[15].startswith("  - {agent:")

EVERY_AGENT = ", ".join(CFG.agent_ids())

# (line, replacement, line of the issue, its path, a fragment of its message)
BAD = [
    pytest.param(7, "  - {agent: o-999, at_s: 200, down_s: 2}", 7, "crashes[0].agent",
                 "unknown agent 'o-999' in cell 'demo-cell'", id="crash-unknown-agent"),
    pytest.param(16, "  - {agent: lathe9, offset_s: 2.0, at_s: 0}", 16, "clock_skew[0].agent",
                 "unknown agent 'lathe9'", id="skew-unknown-agent"),
    pytest.param(14, "  - {agents: [mill1, mill9], at_s: 700, duration_s: 60}", 14,
                 "partitions[0].agents[1]", "unknown agent 'mill9'",
                 id="partition-unknown-agent"),
    pytest.param(5, "  - {resource: o-001, at_s: 600, repair_s: 420}", 5,
                 "breakdowns[0].resource", "unknown resource 'o-001'",   # an order, no resource
                 id="breakdown-unknown-resource"),
    pytest.param(9, "  - {host: cloud, action: kill, at_s: 1000, duration_s: 2}", 9,
                 "hosts[0].host", "unknown host 'cloud' in cell 'demo-cell'; known: logistics, "
                 "machines, orders", id="unknown-host"),
    pytest.param(11, "  loss: 0.5", 11, "network.loss", "loss must be < 0.5",
                 id="loss-half"),
    pytest.param(11, "  loss: 1.5", 11, "network.loss", "less than or equal to 1",
                 id="loss-above-one"),
    pytest.param(12, "  duplication: 1.5", 12, "network.duplication", "less than or equal to 1",
                 id="duplication-above-one"),
    pytest.param(5, "  - {resource: mill1, at_s: -1, repair_s: 420}", 5, "breakdowns[0].at_s",
                 "greater than or equal to 0", id="negative-at_s"),
    pytest.param(5, "  - {resource: mill1, at_s: 600, repair_s: 0}", 5, "breakdowns[0].repair_s",
                 "greater than 0", id="zero-repair_s"),
    pytest.param(3, "mtbf_breakdown: false", 3, "mtbf_breakdown",
                 "unknown key 'mtbf_breakdown' (did you mean 'mtbf_breakdowns'?)",
                 id="unknown-key-top"),
    pytest.param(5, "  - {resource: mill1, at_s: 600, repiar_s: 420}", 5,
                 "breakdowns[0].repiar_s", "unknown key 'repiar_s' (did you mean 'repair_s'?)",
                 id="unknown-key-nested"),
    pytest.param(14, f"  - {{agents: [{EVERY_AGENT}], at_s: 700, duration_s: 60}}", 14,
                 "partitions[0].agents", "a partition must leave some agents on the other side",
                 id="partition-of-everyone"),
    pytest.param(9, "  - {host: machines, action: reboot, at_s: 1000, duration_s: 2}", 9,
                 "hosts[0].action", "'kill' or 'pause'", id="wrong-action"),
]


def edit(line: int, new: str) -> str:
    """BASE with 1-based ``line`` replaced; every other line keeps its number."""
    lines = list(BASE_LINES)
    lines[line - 1] = new
    return "\n".join(lines) + "\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scenario.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def issues_of(path: Path) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as caught:
        load_faults(path, CFG)
    return caught.value.issues


def test_base_scenario_is_valid(tmp_path: Path) -> None:
    scenario = load_faults(write(tmp_path, BASE), CFG)
    assert scenario.name == "bad-scenario"
    assert scenario.source == str(tmp_path / "scenario.yaml")
    assert len(scenario.breakdowns) == len(scenario.crashes) == len(scenario.hosts) == 1
    assert scenario.network.loss == 0.05 and scenario.partitions[0].agents == ["mill1", "mill2"]
    assert scenario.needs_journal()


@pytest.mark.parametrize(("line", "new", "want_line", "want_path", "want"), BAD)
def test_bad_scenario_names_file_line_and_path(tmp_path: Path, line: int, new: str,
                                               want_line: int, want_path: str, want: str) -> None:
    path = write(tmp_path, edit(line, new))
    issues = issues_of(path)
    found = [i for i in issues if want in i.message]
    assert found, [str(i) for i in issues]
    issue = found[0]
    assert (issue.file, issue.line, issue.path) == (str(path), want_line, want_path), str(issue)


@pytest.mark.parametrize(("line", "new", "want_line", "want_path", "want"), BAD)
def test_bad_scenario_through_the_cli_exits_2_with_file_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], line: int, new: str,
        want_line: int, want_path: str, want: str) -> None:
    path = write(tmp_path, edit(line, new))
    code, out, err = run_main(capsys, "validate", str(DEMO), "--faults", str(path))
    assert code == 2
    assert out == ""
    assert f"{path}:{want_line}: {want_path}: " in err, err
    assert want in err


def test_a_loss_of_one_half_is_refused_as_an_outage(tmp_path: Path) -> None:
    """The rate itself is refused (where the issue points: the row ``loss-half``)."""
    for loss in ("0.5", "0.9"):
        issues = issues_of(write(tmp_path, edit(11, f"  loss: {loss}")))
        want = (f"loss {float(loss)} is not a network, it is an outage: use a partition for "
                "that (loss must be < 0.5)")
        assert [i.message for i in issues] == [want]
        assert issues[0].path.startswith("network") and issues[0].line in (10, 11)
    load_faults(write(tmp_path, edit(11, "  loss: 0.49")), CFG)


def test_run_refuses_a_bad_scenario_before_running(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, edit(9, "  - {host: cloud, action: kill, at_s: 1000, duration_s: 2}"))
    report = tmp_path / "r.json"
    code, out, err = run_main(capsys, "run", str(DEMO), "--faults", str(path), "--quiet",
                              "--report", str(report))
    assert code == 2 and out == ""
    assert f"{path}:9: hosts[0].host: unknown host 'cloud'" in err
    assert not report.exists()


def test_every_problem_is_reported_at_once(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    lines = list(BASE_LINES)
    lines[2] = "mtbf_breakdown: false"                                          # line 3
    lines[4] = "  - {resource: robot9, at_s: -5, repair_s: 420}"               # line 5
    lines[8] = "  - {host: cloud, action: reboot, at_s: 1000, duration_s: 2}"  # line 9
    lines[11] = "  duplication: 2"                                              # line 12
    lines[15] = "  - {agent: nobody, offset_s: 2.0, at_s: 0}"                  # line 16
    path = write(tmp_path, "\n".join(lines) + "\n")
    got = [(i.line, i.path) for i in issues_of(path)]
    assert got == [                           # sorted by line; on one line, field errors
        (3, "mtbf_breakdown"),                # come before the checks against the cell
        (5, "breakdowns[0].at_s"),
        (5, "breakdowns[0].resource"),
        (9, "hosts[0].action"),
        (9, "hosts[0].host"),
        (12, "network.duplication"),
        (16, "clock_skew[0].agent"),
    ]
    code, _, err = run_main(capsys, "validate", str(DEMO), "--faults", str(path))
    assert code == 2
    assert len(err.strip().splitlines()) == len(got)
    for line, where in got:
        assert f"{path}:{line}: {where}: " in err


def test_a_scenario_is_checked_against_the_cell_it_is_played_on(tmp_path: Path) -> None:
    """Valid for the demo cell, wrong for the minimal one (no such machines; here without
    its one host, so no hosts at all)."""
    path = write(tmp_path, BASE)
    minimal = load_cell(CELLS / "minimal_cell.yaml").model_copy(update={"hosts": []})
    with pytest.raises(ConfigError) as caught:
        load_faults(path, minimal)
    by_path = {i.path: i for i in caught.value.issues}
    assert "the cell has no hosts" in by_path["hosts[0].host"].message
    assert by_path["breakdowns[0].resource"].line == 5
    assert by_path["crashes[0].agent"].line == 7


# -- semantics in virtual time --------------------------------------------------------------------

def test_a_breakdown_hands_the_running_work_back_and_it_is_rerouted() -> None:
    cell, report, evs = play(only("b", breakdowns=[
        {"resource": "mill1", "at_s": 1000, "repair_s": 300}]))
    assert_all_orders_complete(cell, report)
    injected = [e for e in evs if e["ev"] == "fault_injected"]
    assert injected == [{"t": 1000.0, "ev": "fault_injected", "kind": "breakdown",
                         "agents": ["mill1"]}]
    reroutes = [e for e in evs if e["ev"] == "reroute" and e["from"] == "mill1"]
    assert reroutes and all(e["t"] >= 1000.0 for e in reroutes)
    assert reroutes[0]["task"] == "o-012/0"
    task = reroutes[0]["task"]
    # the interrupted operation is finished elsewhere, once
    done = [e for e in evs if e["ev"] == "op_done" and e["task"] == task]
    assert [e["machine"] for e in done] == ["mill2"]
    assert any(e["ev"] == "op_abort" and e["task"] == task and e["machine"] == "mill1"
               and e["why"] == "fault" for e in evs)
    # mill1 takes no work while it is down, and is repaired 300 s later
    assert not [e for e in evs if e["ev"] == "op_start" and e["machine"] == "mill1"
                and 1000.0 <= e["t"] < 1300.0]
    assert {"t": 1300.0, "ev": "repaired", "machine": "mill1"} in evs
    assert report["reroutes"] >= 1


def test_a_partition_drops_messages_yet_every_order_completes() -> None:
    cell, report, evs = play(only("p", partitions=[
        {"agents": ["mill1"], "at_s": 950, "duration_s": 60}]))
    assert cell.stats.dropped_partition > 0
    assert_all_orders_complete(cell, report)
    assert {"t": 1010.0, "ev": "partition_healed", "agents": ["mill1"]} in evs
    # mill1's heartbeats were cut: its lease lapsed inside the partition...
    expired = [e for e in evs if e["ev"] == "lease_expired" and e["winner"] == "mill1"]
    assert expired and all(950.0 < e["t"] < 1010.0 for e in expired)
    # ...yet the operation it kept running is done exactly once (fenced, then taken late)
    task = expired[0]["task"]
    assert [e["machine"] for e in evs if e["ev"] == "op_done" and e["task"] == task] == ["mill1"]
    assert any(e["ev"] == "late_done" and e["task"] == task for e in evs)


def test_a_clock_skew_beyond_the_window_gets_the_agent_s_messages_rejected() -> None:
    cell, report, evs = play(only("s", clock_skew=[
        {"agent": "mill1", "offset_s": 600.0, "at_s": 950}]))
    rejected = [e for e in evs if e["ev"] == "rejected"]
    assert rejected
    assert {(e["sender"], e["reason"]) for e in rejected} == {("mill1", "clock_skew")}
    assert all(e["t"] >= 950.0 for e in rejected)
    assert dict(cell.stats.rejected) == {"clock_skew": len(rejected)}
    assert report["messages_rejected_by_reason"] == {"clock_skew": len(rejected)}
    # nothing mill1 says is believed any more: its lease lapses, it never wins again,
    # and the cell finishes its work without it
    assert any(e["ev"] == "lease_expired" and e["winner"] == "mill1" and e["t"] > 950.0
               for e in evs)
    assert not [e for e in evs if e["ev"] == "award" and e["winner"] == "mill1"
                and e["t"] > 950.0]
    assert not [e for e in evs if e["ev"] == "op_done" and e["machine"] == "mill1"
                and e["t"] > 960.5]
    assert_all_orders_complete(cell, report)


def test_a_clock_skew_inside_the_window_is_tolerated() -> None:
    cell, report, evs = play(only("s", clock_skew=[
        {"agent": "mill1", "offset_s": -30.0, "at_s": 0}]))
    assert cell.stats.rejected == {}
    assert not [e for e in evs if e["ev"] in ("rejected", "lease_expired")]
    assert_all_orders_complete(cell, report)


def test_a_host_pause_longer_than_the_lease_window_expires_leases() -> None:
    cell, report, evs = play(only("hp", hosts=[
        {"host": "machines", "action": "pause", "at_s": 1000, "duration_s": 40}]))
    assert [e["agent"] for e in evs if e["ev"] == "agent_pause"] == MACHINES_HOST
    assert sorted(e["agent"] for e in evs if e["ev"] == "agent_resume") == sorted(MACHINES_HOST)
    assert all(e["t"] == 1040.0 for e in evs if e["ev"] == "agent_resume")
    expired = [e for e in evs if e["ev"] == "lease_expired"]
    assert expired
    assert all(e["winner"] in MACHINES_HOST and 1000.0 < e["t"] < 1040.0 for e in expired)
    assert report["lease_expiries"] == len(expired)
    assert cell.stats.restarts == 0        # paused, not killed: nothing was rebuilt
    assert_all_orders_complete(cell, report)


def test_a_host_kill_restarts_every_agent_of_the_host() -> None:
    cell, report, evs = play(only("hk", hosts=[
        {"host": "machines", "action": "kill", "at_s": 1000, "duration_s": 2}]))
    assert cell.journal is not None        # a kill needs one; the driver made a memory journal
    crashed = [e for e in evs if e["ev"] == "agent_crash"]
    restarted = [e for e in evs if e["ev"] == "agent_restart"]
    assert [(e["agent"], e["t"]) for e in crashed] == [(a, 1000.0) for a in MACHINES_HOST]
    assert [(e["agent"], e["t"]) for e in restarted] == [(a, 1002.0) for a in MACHINES_HOST]
    assert all(e["inputs"] > 0 for e in restarted)
    assert cell.stats.restarts == len(MACHINES_HOST) == report["restarts"]
    # each rebuilt machine asked the plant how its running task ended
    recovered = {e["agent"]: e for e in evs if e["ev"] == "recovered"}
    assert sorted(recovered) == sorted(MACHINES_HOST)
    assert recovered["mill1"]["running"] == "o-012/0"
    assert_all_orders_complete(cell, report)


def test_faults_are_reproducible_for_a_seed() -> None:
    scenario = only("mix", breakdowns=[{"resource": "lathe1", "at_s": 980, "repair_s": 200}],
                    crashes=[{"agent": "o-012", "at_s": 1020, "down_s": 3}],
                    partitions=[{"agents": ["agv1"], "at_s": 700, "duration_s": 30}],
                    network={"loss": 0.02, "duplication": 0.02, "reorder": 0.02})
    a, ra, _ = play(scenario, seed=3)
    b, rb, _ = play(scenario, seed=3)
    assert a.event_log_sha256() == b.event_log_sha256() == ra["event_log_sha256"]
    assert ra == {**rb, "wall_s": ra["wall_s"], "sim_speedup": ra["sim_speedup"]}
    assert_all_orders_complete(a, ra)


# -- interrupted_operation: wait_for_repair vs restart_elsewhere ----------------------------------

@functools.cache
def two_machine_cell(policy: str) -> CellConfig:
    """One order, one operation; `fast` takes 100 s, the only alternative `slow` 400 s."""
    return cell_from_dict({
        "cell": "repair-cell",
        "layout": {"locations": [{"id": "bay", "x": 0.0, "y": 0.0}]},
        "machines": [{"id": "fast", "location": "bay", "capabilities": {"milling": 100.0}},
                     {"id": "slow", "location": "bay", "capabilities": {"milling": 400.0}}],
        "products": [{"id": "part", "routing": [{"op": "cut", "capability": "milling"}]}],
        "orders": [{"id": "o-1", "product": "part", "release_at": 0, "due_at": 2000}],
        "negotiation": {"interrupted_operation": policy},
    })


def break_fast_mid_operation(policy: str, repair_s: float) -> list[dict[str, Any]]:
    cell, report, evs = play({"name": "mid-op", "breakdowns": [
        {"resource": "fast", "at_s": 50, "repair_s": repair_s}]}, two_machine_cell(policy))
    assert cell.ended_by == "completed" and report["orders_completed"] == 1
    assert_every_invariant(report)
    # the fault really hit the operation half-way
    assert [(e["t"], e["machine"]) for e in evs if e["ev"] == "op_abort"] == [(50.0, "fast")]
    return evs


def finished_on(evs: list[dict[str, Any]]) -> list[str]:
    return [e["machine"] for e in evs if e["ev"] == "op_done" and e["task"] == "o-1/0"]


def test_wait_for_repair_waits_for_a_short_repair() -> None:
    evs = break_fast_mid_operation("wait_for_repair", repair_s=20)
    waits = [e for e in evs if e["ev"] == "wait_for_repair"]
    assert len(waits) == 1
    wait = waits[0]
    assert (wait["order"], wait["task"], wait["machine"], wait["until"]) == (
        "o-1", "o-1/0", "fast", 70.0)
    assert wait["best_alternative_finish_at"] > 400.0      # the slow machine's offer
    assert finished_on(evs) == ["fast"]
    restart = [e for e in evs if e["ev"] == "op_start"][-1]
    assert restart["machine"] == "fast" and restart["t"] >= 70.0
    assert not [e for e in evs if e["ev"] == "op_start" and e["machine"] == "slow"]


def test_restart_elsewhere_takes_the_slower_machine_at_once() -> None:
    evs = break_fast_mid_operation("restart_elsewhere", repair_s=20)
    assert not [e for e in evs if e["ev"] == "wait_for_repair"]
    assert finished_on(evs) == ["slow"]
    start = next(e for e in evs if e["ev"] == "op_start" and e["machine"] == "slow")
    assert 50.0 < start["t"] < 51.0


def test_wait_for_repair_reroutes_when_the_repair_is_too_long() -> None:
    evs = break_fast_mid_operation("wait_for_repair", repair_s=1000)
    assert not [e for e in evs if e["ev"] == "wait_for_repair"]
    assert finished_on(evs) == ["slow"]


def test_a_wait_for_repair_counts_as_a_deliberate_wait_not_as_recovery() -> None:
    _, report, evs = play({"name": "mid-op", "breakdowns": [
        {"resource": "fast", "at_s": 50, "repair_s": 20}]}, two_machine_cell("wait_for_repair"))
    assert [e["ev"] for e in evs if e["ev"] == "wait_for_repair"] == ["wait_for_repair"]
    assert report["deliberate_waits"] == 1
    assert report["recovery_latency"]["max"] < 1.0
