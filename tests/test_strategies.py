"""Strategy plug-ins: loading by name and dotted path, and the documented worked example."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated

import pytest
import yaml
from pydantic import Field

from agents.negotiation.strategies import (
    EarliestFinish,
    FirstComeResource,
    LowestCost,
    OrderStrategy,
    order_strategy,
    params_model,
    resource_strategy,
    strategy_problems,
)
from ops.config import CellConfig, cell_from_dict, load_cell
from security.errors import ConfigurationError
from sim_bridge.report import build_report
from sim_bridge.virtual import VirtualCell

ROOT = Path(__file__).resolve().parents[1]


def test_names_resolve() -> None:
    assert isinstance(order_strategy("earliest_finish"), EarliestFinish)
    assert isinstance(resource_strategy("first_come"), FirstComeResource)


@pytest.mark.parametrize("spec, fragment", [
    ("nope", "unknown strategy"),
    ("no_such_module_xyz:Thing", "cannot load strategy"),
    ("agents.negotiation.strategies:Slot", "not a subclass"),
])
def test_bad_names_are_configuration_errors(spec: str, fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        order_strategy(spec)


def test_worked_example_from_the_docs_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = (ROOT / "docs" / "strategies.md").read_text()
    code = re.search(r"```python\n(.*?)```", doc, re.S)
    assert code is not None
    pkg = tmp_path / "mylab"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "strategies.py").write_text(code.group(1))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("mylab", None)
    sys.modules.pop("mylab.strategies", None)
    cfg = load_cell(ROOT / "cell_configs" / "demo_cell.yaml")
    base = build_report(_run(cfg, None))
    slack = build_report(_run(cfg, "mylab.strategies:SlackAware"))
    for r in (base, slack):
        assert r["orders_completed"] == r["orders_total"]
        assert all(r["invariants"].values())
    assert base["event_log_sha256"] != slack["event_log_sha256"]
    # the two cell snippets: bare, and with params (which reach every order agent)
    snippets = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", doc, re.S)
                if "SlackAware" in b]
    bare, tuned = snippets
    assert "params" not in str(bare) and tuned["negotiation"]["strategy"]["order"]["params"]
    bare_cell = _run(_demo_with(bare), None)
    assert build_report(bare_cell)["event_log_sha256"] == slack["event_log_sha256"]
    tuned_cell = _run(_demo_with(tuned), None)
    weights = {a.strategy.energy_weight for a in tuned_cell.agents.values()
               if isinstance(a.strategy, OrderStrategy)}
    assert weights == {tuned["negotiation"]["strategy"]["order"]["params"]["energy_weight"]}
    report = build_report(tuned_cell)
    assert report["orders_completed"] == report["orders_total"]
    assert all(report["invariants"].values())
    # a parameter at its default value gives the bare name's run, byte for byte
    tuned["negotiation"]["strategy"]["order"]["params"]["energy_weight"] = 1000.0
    same = build_report(_run(_demo_with(tuned), None))
    assert same["event_log_sha256"] == slack["event_log_sha256"]


def _demo_with(snippet: dict) -> CellConfig:
    data = yaml.safe_load((ROOT / "cell_configs" / "demo_cell.yaml").read_text())
    data["negotiation"].update(snippet["negotiation"])
    return cell_from_dict(data, base_dir=ROOT / "cell_configs")


def _run(cfg, order: str | None) -> VirtualCell:  # noqa: ANN001
    cell = VirtualCell(cfg, seed=7, order_strategy=order)
    cell.run()
    return cell


# --------------------------------------------------------------------------- parameters


class _Tuned(OrderStrategy):
    """A dotted-path strategy with parameters of several kinds (for the tests below)."""

    name = "tuned"

    def __init__(self, *, weight: Annotated[float, Field(gt=0)] = 1.0, mode: str = "fast",
                 rounds: int = 3) -> None:
        if mode == "slow" and rounds > 5:
            raise ValueError("mode 'slow' takes at most 5 rounds")
        self.weight, self.mode, self.rounds = weight, mode, rounds

    def score(self, cfp, proposal):  # noqa: ANN001, ANN201
        return self.weight * proposal.finish_at


class _Required(OrderStrategy):
    def __init__(self, level: int) -> None:
        self.level = level


class _Open(OrderStrategy):
    def __init__(self, **options: object) -> None:
        self.options = options


TUNED = f"{__name__}:_Tuned"


@pytest.mark.parametrize("spec, cls", [
    ("earliest_finish", EarliestFinish), ("lowest_cost", LowestCost),
])
def test_a_bare_name_builds_the_same_object_as_before(spec: str, cls: type) -> None:
    # bare, and with empty params: exactly cls(), the object every existing cell got
    for form in (spec, {"name": spec}, {"name": spec, "params": {}}):
        built = order_strategy(form)
        assert type(built) is cls and vars(built) == vars(cls())
    assert vars(resource_strategy("slack_bidding")) == {"work_weight": 1.0,
                                                        "priority_weight_s": 0.0}


def test_params_reach_the_constructor_converted() -> None:
    built = order_strategy({"name": TUNED, "params": {"weight": 2, "mode": "exact"}})
    assert isinstance(built, _Tuned)
    assert (built.weight, built.mode, built.rounds) == (2.0, "exact", 3)
    assert type(built.weight) is float        # validated and converted by the type hint
    opened = order_strategy({"name": f"{__name__}:_Open", "params": {"anything": [1, 2]}})
    assert opened.options == {"anything": [1, 2]}   # **kwargs takes any name


def test_the_params_model_is_the_constructor_signature() -> None:
    fields = params_model(_Tuned).model_fields
    assert list(fields) == ["weight", "mode", "rounds"]
    assert fields["weight"].default == 1.0 and not fields["weight"].is_required()
    assert params_model(_Required).model_fields["level"].is_required()
    assert params_model(EarliestFinish).model_fields == {}


@pytest.mark.parametrize("params, fragment", [
    ({"wieght": 2}, "params.wieght: unknown parameter 'wieght' of strategy "
                    f"'{TUNED}' (did you mean 'weight'?); its parameters: weight, mode, rounds"),
    ({"weight": "heavy"}, "params.weight: Input should be a valid number"),
    ({"weight": 0}, "params.weight: Input should be greater than 0 (got 0)"),
    ({"rounds": 2.5}, "params.rounds: Input should be a valid integer"),
    ({"mode": "slow", "rounds": 9}, f"strategy '{TUNED}' refuses its parameters: "
                                    "mode 'slow' takes at most 5 rounds"),
])
def test_bad_params_are_configuration_errors(params: dict, fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(fragment)):
        order_strategy({"name": TUNED, "params": params})


def test_params_for_a_strategy_without_any_name_it() -> None:
    with pytest.raises(ConfigurationError, match=re.escape(
            "strategy 'earliest_finish' takes no parameters (got 'x')")):
        order_strategy({"name": "earliest_finish", "params": {"x": 1}})
    with pytest.raises(ConfigurationError, match="needs parameter 'level'"):
        order_strategy(f"{__name__}:_Required")


def test_strategy_problems_give_paths_for_the_loaders() -> None:
    assert strategy_problems("earliest_finish", "order") == []
    assert strategy_problems({"name": TUNED, "params": {"weight": 3}}, "order") == []
    assert [loc for loc, _ in strategy_problems("nope", "order")] == [()]
    assert [loc for loc, _ in strategy_problems({"name": "nope"}, "order")] == [("name",)]
    assert sorted(loc for loc, _ in strategy_problems(
        {"name": TUNED, "params": {"wieght": 1, "rounds": "x"}}, "order")) == [
        ("params", "rounds"), ("params", "wieght")]
    assert [loc for loc, _ in strategy_problems(
        {"name": "earliest_finish", "params": {"x": 1}}, "order")] == [("params",)]
    assert strategy_problems({"name": TUNED}, "resource")[0][1].endswith(
        "is not a subclass of ResourceStrategy")


def test_lowest_cost_prices_energy_only_when_asked() -> None:
    from agents.protocol.messages import Proposal
    cost = {"queue_s": 10.0, "setup_s": 0.0, "processing_s": 30.0, "transport_s": 0.0,
            "energy_kwh": 0.5}
    proposal = Proposal(task="o/0", kind="operation", start_at=0.0, finish_at=40.0, cost=cost,
                        hold_until_at=1.0)
    assert LowestCost().score(None, proposal) == 40.0  # type: ignore[arg-type]
    tuned = order_strategy({"name": "lowest_cost", "params": {"energy_s_per_kwh": 60}})
    assert tuned.score(None, proposal) == 70.0  # type: ignore[arg-type]


def test_params_in_the_cell_reach_every_agent(tmp_path: Path) -> None:
    from agents.cell.build import build_agents
    data = yaml.safe_load((ROOT / "cell_configs" / "demo_cell.yaml").read_text())
    data["negotiation"]["strategy"] = {
        "order": {"name": "lowest_cost", "params": {"energy_s_per_kwh": 60}},
        "resource": {"name": "slack_bidding", "params": {"priority_weight_s": 600}}}
    cfg = cell_from_dict(data, base_dir=ROOT / "cell_configs")
    agents = build_agents(cfg, seed=1)
    orders = [a for a in agents.values() if isinstance(a.strategy, OrderStrategy)]
    resources = [a for a in agents.values() if not isinstance(a.strategy, OrderStrategy)]
    assert orders and all(a.strategy.energy_s_per_kwh == 60.0 for a in orders)
    assert resources and all(a.strategy.priority_weight_s == 600.0 for a in resources)


def test_a_hint_only_imported_for_type_checkers_counts_as_any(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "hinted.py").write_text(
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "from agents.negotiation.strategies import OrderStrategy\n"
        "if TYPE_CHECKING:\n"
        "    from somewhere_else import Thing\n"
        "class Hinted(OrderStrategy):\n"
        "    def __init__(self, *, thing: Thing = None, rounds: int = 1) -> None:\n"
        "        self.thing, self.rounds = thing, rounds\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("hinted", None)
    built = order_strategy({"name": "hinted:Hinted", "params": {"thing": "x", "rounds": "2"}})
    assert (built.thing, built.rounds) == ("x", 2)   # the resolvable hint still converts
