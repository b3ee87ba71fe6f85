"""Due-date tightness a sweep can vary, and resource strategies that sequence the booked queue."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from agents.negotiation.strategies import (
    QueuedTask,
    QueueRule,
    ResourceStrategy,
    dispatch_next,
    resource_strategy,
)
from agents.protocol.messages import CallForProposals
from ops.config import ConfigError
from ops.experiment.runner import execute_point
from ops.experiment.sweep import expand, load_sweep

ROOT = Path(__file__).resolve().parents[1]
MINIMAL = ROOT / "cell_configs" / "minimal_cell.yaml"


def test_due_date_factor_scales_each_orders_allowance(tmp_path: Path) -> None:
    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"""\
name: due
cells: [{MINIMAL}]
grid:
  due_date_factor: [0.2, 1, 2.5]
kpis: [tardiness_total, makespan]
""")
    points = {p.params["due_date_factor"]: p for p in expand(load_sweep(sweep))}
    # minimal cell: o-1 released at 0, due at 120
    assert {f: p.cell_data["orders"][0]["due_at"] for f, p in points.items()} == {
        0.2: 24.0, 1: 120.0, 2.5: 300.0}
    rows = {f: execute_point(p) for f, p in points.items()}
    assert all(r["status"] == "ok" for r in rows.values())
    assert rows[0.2]["tardiness_total"] > 0 == rows[1]["tardiness_total"] \
        == rows[2.5]["tardiness_total"]
    assert rows[0.2]["makespan"] == rows[1]["makespan"]   # only the due dates moved


def test_due_date_factor_values_are_checked(tmp_path: Path) -> None:
    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"name: due\ncells: [{MINIMAL}]\ngrid:\n  due_date_factor: [1, -1, fast]\n")
    with pytest.raises(ConfigError) as err:
        load_sweep(sweep)
    text = str(err.value)
    assert "s.yaml:4: grid.due_date_factor[1]: due_date_factor must be a number > 0 (got -1)" \
        in text
    assert "grid.due_date_factor[2]" in text
    sweep.write_text(f"name: due\ncells: [{MINIMAL}]\ngrid:\n  due_factor: [1]\n")
    with pytest.raises(ConfigError, match="did you mean 'due_date_factor'"):
        load_sweep(sweep)


# --------------------------------------------------------------------------- queue dispatch


@dataclass
class FakeTask:
    cfp: CallForProposals
    start_at: float
    finish_at: float
    ready: bool


def cfp(task: str, due_at: float, work_s: float, priority: int = 0) -> CallForProposals:
    return CallForProposals(task=task, order=task, kind="operation", capability="milling",
                            op="mill", quantity=1, earliest_start_at=0.0, due_at=due_at,
                            reply_by_at=0.2, priority=priority, work_remaining_s=work_s)


QUEUE = {
    "t1": FakeTask(cfp("t1", due_at=900, work_s=50), 0.0, 30.0, ready=True),
    "t2": FakeTask(cfp("t2", due_at=100, work_s=10, priority=3), 30.0, 40.0, ready=True),
    "t3": FakeTask(cfp("t3", due_at=50, work_s=500), 40.0, 45.0, ready=False),
    "t4": FakeTask(cfp("t4", due_at=400, work_s=400), 45.0, 50.0, ready=True),
}
PENDING = sorted((t.start_at, tid) for tid, t in QUEUE.items())


@pytest.mark.parametrize("rule, first", [
    ("fifo", "t1"),          # planned order
    ("edd", "t2"),           # t3 is due first but its parts are not there: non-delay
    ("spt", "t4"),           # 5 s
    ("mwkr", "t4"),          # 400 s (t3's 500 s is not ready)
    ("least_slack", "t4"),   # due − now − work: t4 400 − 10 − 400 = −10, t2 100 − 10 − 10 = 80
    ("priority", "t2"),
])
def test_queue_rules_pick_the_first_ready_task_of_their_order(rule: str, first: str) -> None:
    assert dispatch_next(QueueRule(rule=rule), QUEUE, PENDING, now=10.0) == first


def test_the_default_and_bid_only_strategies_leave_the_queue_to_the_planned_order() -> None:
    assert dispatch_next(resource_strategy("default"), QUEUE, PENDING, 0.0) is None
    assert dispatch_next(resource_strategy("slack_bidding"), QUEUE, PENDING, 0.0) is None
    assert resource_strategy("queue_rule").rule == "edd"   # type: ignore[attr-defined]


def test_a_partial_order_is_completed_in_planned_order() -> None:
    class OnlyT3(ResourceStrategy):
        def sequence(self, queue: tuple[QueuedTask, ...], now: float) -> list[str]:
            assert [q.task for q in queue] == ["t1", "t2", "t3", "t4"]
            assert queue[2] == QueuedTask("t3", QUEUE["t3"].cfp, 40.0, 5.0, False)
            return ["t3", "unknown"]

    assert dispatch_next(OnlyT3(), QUEUE, PENDING, 0.0) == "t1"


def test_a_queue_rule_runs_the_demo_cell_under_breakdowns() -> None:
    import yaml

    from ops.config import cell_from_dict
    from ops.config.fault_files import load_faults
    from ops.run import load_keys
    from sim_bridge.report import build_report
    from sim_bridge.virtual import VirtualCell

    def run(strategy: object) -> dict[str, object]:
        raw = yaml.safe_load((ROOT / "cell_configs" / "demo_cell.yaml").read_text())
        raw.setdefault("negotiation", {})["strategy"] = {"resource": strategy}
        cfg = cell_from_dict(raw, source="demo", base_dir=ROOT / "cell_configs")
        keys, base_at = load_keys(cfg)
        faults = load_faults(ROOT / "cell_configs" / "faults" / "breakdowns.yaml", cfg)
        cell = VirtualCell(cfg, seed=2, keys=keys, clock_base_at=base_at, faults=faults)
        cell.run()
        return build_report(cell)

    default = run("default")
    ruled = run({"name": "queue_rule", "params": {"rule": "edd"}})
    for report in (default, ruled):
        assert report["orders_completed"] == report["orders_total"] == 24
        assert all(report["invariants"].values())
    assert ruled["event_log_sha256"] != default["event_log_sha256"]   # the rule decided


def test_an_unknown_rule_is_a_config_error_with_the_choices(tmp_path: Path) -> None:
    cell = tmp_path / "cell.yaml"
    cell.write_text(MINIMAL.read_text() + "negotiation:\n  strategy:\n    resource: "
                    "{name: queue_rule, params: {rule: eddd}}\n")
    from ops.config import load_cell

    with pytest.raises(ConfigError) as err:
        load_cell(cell)
    assert "negotiation.strategy.resource.params.rule" in str(err.value)
    assert "'edd'" in str(err.value)
