"""Whole-cell runs in virtual time with escalations: raised, grouped, decided, invariants."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.cell.build import roles_of
from agents.escalation.lifecycle import SAFE_DEFAULT_USER
from ops.config import load_cell
from ops.config.fault_files import load_faults
from security.keystore import ephemeral_cell
from sim_bridge.report import build_report
from sim_bridge.virtual import VirtualCell

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "cell_configs" / "demo_cell.yaml"
OUTAGE = ROOT / "cell_configs" / "faults" / "long_outage.yaml"


def outage_cell(seed: int = 1, **kw: object) -> VirtualCell:
    cfg = load_cell(DEMO)
    return VirtualCell(cfg, seed=seed, faults=load_faults(OUTAGE, cfg), **kw)  # type: ignore[arg-type]


def events(cell: VirtualCell, name: str) -> list[dict]:
    return [e for e in map(json.loads, cell.events) if e["ev"] == name]


def test_no_escalation_no_change_to_the_event_log() -> None:
    """The demo raises no escalation: its log is byte-identical to a run with no console
    agent at all (escalation off, as before the feature)."""
    cfg = load_cell(DEMO)
    with_console = VirtualCell(cfg)
    with_console.run()
    keys = ephemeral_cell(roles_of(cfg), seed=f"autocell/{cfg.cell}/{cfg.sim.seed}".encode())
    without = VirtualCell(cfg, keys=keys)
    assert without.console is None and with_console.console is not None
    without.run()
    assert not events(with_console, "escalation_raised")
    assert with_console.event_log_sha256() == without.event_log_sha256()


@pytest.fixture(scope="module")
def outage() -> tuple[VirtualCell, dict]:
    cell = outage_cell()
    cell.run()
    return cell, build_report(cell)


def test_long_outage_escalates_and_the_safe_default_applies(outage: tuple[VirtualCell, dict]
                                                            ) -> None:
    cell, report = outage
    cfg = cell.cfg.escalation
    raised = {e["escalation"]: e for e in events(cell, "escalation_raised")}
    assert report["escalations_by_cause"].get("no_capable_resource", 0) >= 1
    first = raised["o-011/e1"]
    assert (first["cause"], first["resource"], first["priority"]) == (
        "no_capable_resource", "lathe1", cfg.no_capable_resource.priority)
    assert first["t"] - 900.0 < 2.0                      # escalated within 2 s of the outage
    assert report["escalation_latency"]["max"] < 2.0
    resolved = {e["escalation"]: e for e in events(cell, "escalation_resolved")}
    assert set(resolved) == set(raised)                  # nobody decides: every one expires
    for esc_id, r in resolved.items():
        assert (r["outcome"], r["user"]) == ("safe_default", SAFE_DEFAULT_USER)
        assert r["t"] - raised[esc_id]["t"] == pytest.approx(cfg.final_deadline_s)
    applied = {e["escalation"] for e in events(cell, "decision_applied")}
    assert applied == set(raised)                        # the signed decision reached the raiser
    re = [e for e in events(cell, "escalation_re_escalate") if e["escalation"] == "o-011/e1"]
    assert re and re[0]["t"] - first["t"] == pytest.approx(cfg.response_deadline_s)
    # related escalations (same cause, same resource) are grouped
    assert report["escalation_groups"] < report["escalations_raised"]
    assert report["ended_by"] == "completed" and report["orders_completed"] == 24
    assert all(report["invariants"].values()), report["invariant_violations"]
    # the store has the records and an intact audit chain
    store = cell.console.store  # type: ignore[union-attr]
    assert {r.id for r in store.list()} == set(raised)
    assert store.verify().ok and len(store.audit()) > len(raised)


def test_same_seed_same_log_with_escalations(outage: tuple[VirtualCell, dict]) -> None:
    again = outage_cell()
    again.run()
    assert again.event_log_sha256() == outage[0].event_log_sha256()


def run_until_escalated(cell: VirtualCell, esc_id: str, until: float) -> None:
    cell.run(until=until)
    assert any(e["escalation"] == esc_id for e in events(cell, "escalation_raised"))


def finish(cell: VirtualCell) -> dict:
    cell.env.run(until=cell._all_done)
    cell.ended_by = "completed"
    return build_report(cell)


def test_a_supervisor_cancels_the_order(tmp_path: Path) -> None:
    cell = outage_cell(escalations_db=str(tmp_path / "esc.db"))
    run_until_escalated(cell, "o-011/e1", 950.0)
    cell.acknowledge("o-011/e1", "alice")
    cell.decide("o-011/e1", "alice", "cancel", "no lathe today")
    report = finish(cell)
    cancelled = events(cell, "order_cancelled")
    assert [(e["order"], e["user"], e["reason"]) for e in cancelled] == [
        ("o-011", "alice", "no lathe today")]
    assert report["orders_cancelled"] == 1 and report["orders_completed"] == 23
    assert not [e for e in events(cell, "op_start") if e["task"].startswith("o-011/")
                and e["t"] > 950.0]
    assert all(report["invariants"].values()), report["invariant_violations"]
    from agents.escalation.store import EscalationStore
    store = EscalationStore(tmp_path / "esc.db")               # survives: a fresh connection
    audit = [(a.actor, a.action, a.details.get("option")) for a in store.audit()
             if a.escalation == "o-011/e1"]
    assert ("alice", "decide", "cancel") in audit and ("alice", "acknowledge", None) in audit
    assert store.get("o-011/e1").decided_by == "alice" and store.verify().ok


def test_a_wait_decision_resumes_the_order_without_a_new_escalation() -> None:
    cell = outage_cell()
    run_until_escalated(cell, "o-011/e1", 950.0)
    cell.decide("o-011/e1", "bob", "wait_for_repair", "fitter says 1 h")
    report = finish(cell)
    mine = [e["escalation"] for e in events(cell, "escalation_raised") if e["order"] == "o-011"]
    assert mine == ["o-011/e1"]
    done = {e["order"] for e in events(cell, "order_completed")}
    assert "o-011" in done and report["orders_completed"] == 24
    applied = [e for e in events(cell, "decision_applied") if e["escalation"] == "o-011/e1"]
    assert [(e["option"], e["user"]) for e in applied] == [("wait_for_repair", "bob")]


def test_cancel_by_safe_default_would_break_the_invariant() -> None:
    from sim_bridge.invariants import orders_accounted
    evs = [{"ev": "order_cancelled", "order": "o1", "user": SAFE_DEFAULT_USER, "t": 1.0}]
    assert orders_accounted(evs, ["o1"], "completed")
    evs = [{"ev": "escalation_raised", "escalation": "e", "order": "o1", "t": 1.0}]
    assert orders_accounted(evs, ["o1"], "horizon") == []          # waiting on an open one
    evs.append({"ev": "escalation_resolved", "escalation": "e", "t": 2.0})
    assert orders_accounted(evs, ["o1"], "horizon")                 # resolved, then dropped


def test_a_storm_of_faults_is_grouped(tmp_path: Path) -> None:
    """50 faults in 2 minutes: at most 10 grouped escalations per 10 minutes."""
    cfg = load_cell(DEMO)
    resources = [m.id for m in cfg.machines] + [r.id for r in cfg.robots]
    rows = "\n".join(f"  - {{resource: {resources[i % len(resources)]}, at_s: {600 + 2.4 * i:.1f},"
                     f" repair_s: 5}}" for i in range(50))
    path = tmp_path / "storm.yaml"
    path.write_text(f"name: storm\nmtbf_breakdowns: false\nbreakdowns:\n{rows}\n")
    cell = VirtualCell(cfg, faults=load_faults(path, cfg))
    cell.run()
    report = build_report(cell)
    assert report["faults_total"] >= 40
    assert report["escalations_by_cause"].get("repeat_faults", 0) >= 1
    assert report["max_escalations_per_10min"] <= 10
    assert all(report["invariants"].values()), report["invariant_violations"]


def test_a_burst_of_rejected_messages_is_a_security_escalation() -> None:
    cell = VirtualCell(load_cell(DEMO))
    cell.run(until=10.0)
    burst = cell.cfg.escalation.reject_burst
    for i in range(burst.count):
        cell._deliver([b"mill1", b"forged body %d" % i, b"\0" * 64])   # bad signatures
    [raised] = events(cell, "escalation_raised")
    assert (raised["cause"], raised["priority"]) == ("reject_burst", burst.priority)
    rec = cell.console.store.get(raised["escalation"])  # type: ignore[union-attr]
    assert rec.raised_by == "host:virtual"
    assert rec.context["rejected_by_reason"] == {"bad_signature": burst.count}
    for _ in range(5):                                   # the same burst: no second one
        cell._deliver([b"mill1", b"more", b"\0" * 64])
    assert len(events(cell, "escalation_raised")) == 1
    cell.env.run(until=10.0 + cell.cfg.escalation.final_deadline_s + 1)
    [resolved] = events(cell, "escalation_resolved")
    assert (resolved["outcome"], resolved["decision"]) == ("safe_default", "continue")
    assert "misdirected" not in cell.stats.rejected   # nobody to send the decision to


def test_a_resource_taken_out_of_service_stays_down(tmp_path: Path) -> None:
    cfg = load_cell(DEMO)
    # mill1's MTBF (3600 s) predicts one fault per one-hour window: 3 + 1 trip the rule
    rows = "\n".join(f"  - {{resource: mill1, at_s: {600 + 10 * i}, repair_s: 2}}"
                     for i in range(4))
    path = tmp_path / "mill1.yaml"
    path.write_text(f"name: mill1\nmtbf_breakdowns: false\nbreakdowns:\n{rows}\n")
    cell = VirtualCell(cfg, faults=load_faults(path, cfg))
    cell.run(until=700.0)
    [raised] = events(cell, "escalation_raised")
    assert (raised["cause"], raised["resource"]) == ("repeat_faults", "mill1")
    cell.decide(raised["escalation"], "dora", "take_out_of_service", "spindle noise")
    report = finish(cell)
    assert not [e for e in events(cell, "op_start") if e["machine"] == "mill1" and e["t"] > 700]
    assert report["orders_completed"] == 24          # mill2 takes the milling
    assert all(report["invariants"].values()), report["invariant_violations"]


def _demo_variant(tmp_path: Path, *edits: tuple[str, str]) -> Path:
    text = DEMO.read_text()
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "demo_variant.yaml"
    path.write_text(text)
    return path


def test_the_repeat_fault_threshold_allows_for_the_specified_mtbf(tmp_path: Path) -> None:
    from agents.cell.build import build_agents, policy_of

    cfg = load_cell(DEMO)
    agents = build_agents(cfg, 1, escalation=policy_of(cfg))
    # window 3600 s: mill1 (MTBF 3600) and mill2 (5400, 0.67 rounds to 1) get one more;
    # drill1 has no MTBF; the lathe (7200 s, 0.5) rounds up too
    assert {a: agents[a].repeat_fault_threshold()  # type: ignore[attr-defined]
            for a in ("mill1", "mill2", "lathe1", "drill1", "agv1")} == {
        "mill1": 4, "mill2": 4, "lathe1": 4, "drill1": 3, "agv1": 3}
    plain = load_cell(_demo_variant(
        tmp_path, ("repeat_faults: {priority: 2, count: 3, window_s: 3600}",
                   "repeat_faults: {priority: 2, count: 3, window_s: 3600, beyond_mtbf: false}")))
    agents = build_agents(plain, 1, escalation=policy_of(plain))
    assert agents["mill1"].repeat_fault_threshold() == 3  # type: ignore[attr-defined]


@pytest.mark.parametrize("count", [1, 2])
def test_a_single_quality_reject_is_remade_and_a_repeated_one_escalates(
        tmp_path: Path, count: int) -> None:
    # every machine scraps a third of its operations: many single rejects, a few repeats
    path = _demo_variant(tmp_path, *[(f"scrap_rate: {r}", "scrap_rate: 0.33")
                                     for r in ("0.01\n", "0.015", "0.005")],
                         ("quality_reject: {priority: 3, count: 2}",
                          f"quality_reject: {{priority: 3, count: {count}}}"))
    cell = VirtualCell(load_cell(path))
    cell.run()
    report = build_report(cell)
    scraps = events(cell, "scrap")
    raised = [e for e in events(cell, "escalation_raised") if e["cause"] == "quality_reject"]
    by_task: dict[str, int] = {}
    for e in scraps:
        by_task[e["task"]] = by_task.get(e["task"], 0) + 1
    assert len(scraps) > 10
    if count == 1:
        assert len(raised) == len(scraps)          # every reject goes to a person
    else:
        # a first reject is re-made by the agents; only a second one of the same
        # operation is escalated (and each operation at most once per repeat)
        repeated = sum(1 for n in by_task.values() if n >= 2)
        assert 0 < len(raised) <= sum(n - 1 for n in by_task.values())
        assert len(raised) >= repeated
        assert len(raised) < len(scraps)
    assert report["orders_completed"] + report.get("orders_cancelled", 0) == 24
    assert all(report["invariants"].values()), report["invariant_violations"]
