"""Strategy plug-ins by entry point; the shipped slack_bidding strategy, its tutorial and sweep."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from agents.negotiation.slack import SlackBidding
from agents.negotiation.strategies import (
    ENTRY_POINT_GROUP,
    DefaultResource,
    OrderStrategy,
    order_strategy,
    plugin_names,
    resource_strategy,
)
from agents.protocol.messages import CallForProposals
from ops.cli import main
from ops.config import load_cell
from ops.config.fault_files import load_faults
from ops.experiment.sweep import expand, load_sweep
from security.errors import ConfigurationError
from sim_bridge.report import build_report
from sim_bridge.virtual import VirtualCell

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "cell_configs" / "demo_cell.yaml"
BREAKDOWNS = ROOT / "cell_configs" / "faults" / "breakdowns.yaml"


def cfp(task: str, *, due_at: float, start_at: float = 0.0, work_s: float = 0.0,
        priority: int = 1) -> CallForProposals:
    return CallForProposals(task=task, order=task.split("/")[0], kind="operation",
                            capability="milling", op="cut", quantity=1,
                            earliest_start_at=start_at, due_at=due_at, reply_by_at=start_at + 1,
                            priority=priority, work_remaining_s=work_s)


@pytest.fixture
def installed_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A real installed distribution (dist-info with entry_points.txt) on sys.path."""
    (tmp_path / "labplug.py").write_text(
        "from agents.negotiation.strategies import OrderStrategy, ResourceStrategy\n"
        "class LatestFinish(OrderStrategy):\n"
        "    name = 'latest_finish'\n"
        "    def score(self, cfp, proposal):\n"
        "        return -proposal.finish_at\n"
        "class NotAStrategy:\n"
        "    pass\n")
    dist = tmp_path / "labplug-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: labplug\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\n"
        "latest_finish = labplug:LatestFinish\n"
        "wrong_kind = labplug:NotAStrategy\n"
        "broken = labplug_missing_module:Thing\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("labplug", None)
    return tmp_path


def test_entry_points_resolve_by_name(installed_plugins: Path) -> None:
    assert {"latest_finish", "wrong_kind", "broken", "slack_bidding"} <= set(plugin_names())
    strategy = order_strategy("latest_finish")
    assert isinstance(strategy, OrderStrategy) and strategy.name == "latest_finish"


@pytest.mark.parametrize("spec, load, fragment", [
    ("wrong_kind", order_strategy, "not a subclass of OrderStrategy"),
    ("latest_finish", resource_strategy, "not a subclass of ResourceStrategy"),
    ("broken", order_strategy, ("cannot load strategy plug-in 'broken' "
                               "(labplug_missing_module:Thing)")),
    ("nope", order_strategy, "installed plug-ins: broken, latest_finish, slack_bidding"),
])
def test_bad_plugins_are_configuration_errors(installed_plugins: Path, spec: str, load,
                                              fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(fragment)):
        load(spec)


def test_entry_point_plugin_runs_a_cell(installed_plugins: Path) -> None:
    cfg = load_cell(ROOT / "cell_configs" / "minimal_cell.yaml")
    cell = VirtualCell(cfg, seed=1, order_strategy="latest_finish")
    cell.run()
    assert build_report(cell)["orders_completed"] == 1


def test_slack_bidding_is_installed_and_importable() -> None:
    assert isinstance(resource_strategy("slack_bidding"), SlackBidding)
    assert isinstance(resource_strategy("agents.negotiation.slack:SlackBidding"), SlackBidding)


def test_slack_bidding_serves_least_slack_first() -> None:
    calls = [
        cfp("a/0", due_at=1000, work_s=100),               # slack 900
        cfp("b/0", due_at=400, work_s=300),                # slack 100
        cfp("c/0", due_at=900, start_at=500, work_s=300),  # slack 100, more urgent
        cfp("d/0", due_at=900, start_at=500, work_s=300, priority=5),
        cfp("e/0", due_at=5000, work_s=400),               # most work, most slack
    ]
    slack = [c.task for c in sorted(calls, key=SlackBidding().rank)]
    assert slack == ["d/0", "b/0", "c/0", "a/0", "e/0"]
    default = [c.task for c in sorted(calls, key=DefaultResource().rank)]
    assert default[0] == "e/0"   # the default serves most work remaining first


def test_slack_bidding_parameters_change_the_rank() -> None:
    urgent = cfp("u/0", due_at=400, work_s=300)                # slack 100, priority 1
    important = cfp("i/0", due_at=1000, work_s=100, priority=3)  # slack 900, priority 3
    def order(params: dict) -> list[str]:
        strategy = resource_strategy({"name": "slack_bidding", "params": params})
        return [c.task for c in sorted([urgent, important], key=strategy.rank)]
    assert order({}) == ["u/0", "i/0"]
    assert order({"priority_weight_s": 600}) == ["i/0", "u/0"]   # 900 - 1800 < 100 - 600
    long_job = cfp("l/0", due_at=5000, work_s=4900)              # slack 100, due late
    soon = cfp("s/0", due_at=1000, work_s=0)                      # slack 1000, due soon
    plain = resource_strategy("slack_bidding")
    by_due = resource_strategy({"name": "slack_bidding", "params": {"work_weight": 0}})
    assert [c.task for c in sorted([soon, long_job], key=plain.rank)] == ["l/0", "s/0"]
    assert [c.task for c in sorted([long_job, soon], key=by_due.rank)] == ["s/0", "l/0"]


def test_slack_bidding_under_breakdowns_keeps_the_invariants() -> None:
    cfg = load_cell(DEMO)
    faults = load_faults(BREAKDOWNS, cfg)
    reports = {}
    for name in ("default", "slack_bidding"):
        cell = VirtualCell(cfg, seed=2, resource_strategy=name, faults=faults)
        cell.run()
        reports[name] = build_report(cell)
    for report in reports.values():
        assert all(report["invariants"].values())
        assert report["orders_completed"] == report["orders_total"]
    assert reports["default"]["event_log_sha256"] != reports["slack_bidding"]["event_log_sha256"]


def test_the_tutorial_strategy_is_the_shipped_one(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    doc = (ROOT / "docs" / "research.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, re.DOTALL)
    assert blocks, "docs/research.md has no python block"
    pkg = tmp_path / "mylab"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "strategies.py").write_text(blocks[0])
    monkeypatch.syspath_prepend(str(tmp_path))
    for mod in ("mylab", "mylab.strategies"):
        sys.modules.pop(mod, None)
    mine = resource_strategy("mylab.strategies:SlackBidding")
    calls = [cfp(f"o{i}/0", due_at=d, start_at=s, work_s=w, priority=p)
             for i, (d, s, w, p) in enumerate([(1000, 0, 100, 1), (400, 0, 300, 2),
                                                (900, 500, 300, 1), (900, 500, 300, 3)])]
    assert [mine.rank(c) for c in calls] == [SlackBidding().rank(c) for c in calls]


def test_the_shipped_sweep_compares_both_under_breakdowns(
        capsys: pytest.CaptureFixture[str]) -> None:
    path = ROOT / "cell_configs" / "experiments" / "slack_vs_default.yaml"
    points = expand(load_sweep(path))
    assert len(points) == 20
    assert {p.strategy for p in points} == {"default", "slack"}
    assert {p.scenario for p in points} == {"none", "breakdowns"}
    assert main(["experiment", str(path), "--dry-run"]) == 0
    assert "20 runs" in capsys.readouterr().err


def test_the_documented_sweep_file_loads_with_its_labels(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    doc = (ROOT / "docs" / "research.md").read_text()
    block = next(b for b in re.findall(r"```yaml\n(.*?)```", doc, re.DOTALL) if "strategies:" in b)
    experiments = ROOT / "cell_configs" / "experiments"
    text = block.replace("../", f"{experiments.parent}/")   # the doc's paths are relative to
    path = tmp_path / "sweep.yaml"                         # cell_configs/experiments/
    path.write_text(text)
    points = expand(load_sweep(path))
    assert list(dict.fromkeys(p.strategy for p in points)) == [
        "default", "slack", "slack{priority_weight_s=600}"]
    tuned = next(p for p in points if p.strategy == "slack{priority_weight_s=600}")
    assert tuned.cell_data["negotiation"]["strategy"]["resource"] == {
        "name": "slack_bidding", "params": {"priority_weight_s": 600}}
    assert len({p.run_id for p in points}) == len(points)
    assert main(["experiment", str(path), "--dry-run"]) == 0
    assert "slack{priority_weight_s=600}" in capsys.readouterr().out
