"""``autocell bench maintenance --set PATH=VALUE``: the policies on a changed cell.

The change is ``replay --what-if --set``'s (ops/cell_change.py ``with_sets``): checked
before any run, with the path by name and "did you mean"; applied, it changes what the
runs measure (a cost rate here) and nothing else of the cell.
"""

from __future__ import annotations

import pytest

from ops.bench.maintenance import demo_cell, run_once, with_orders
from ops.cell_change import with_sets
from ops.cli import main
from security.errors import ConfigurationError


def test_a_set_changes_that_setting_and_keeps_the_rest() -> None:
    base = demo_cell()
    cfg = with_sets(base, ["maintenance.risk=0.1", "maintenance.decide=risk"])
    assert cfg.maintenance is not None and base.maintenance is not None
    assert (cfg.maintenance.risk, cfg.maintenance.decide) == (0.1, "risk")
    assert (base.maintenance.risk, base.maintenance.decide) != (0.1, "risk")
    assert cfg.maintenance.parts == base.maintenance.parts
    assert cfg.machines == base.machines and cfg.orders == base.orders
    assert with_sets(base, []) is base


@pytest.mark.parametrize("text, says", [
    ("maintenance.rsk=0.1", "did you mean 'risk'"),
    ("maintenance.risk=2", "maintenance.risk"),
    ("maintenance.risk", "expected PATH=VALUE"),
])
def test_a_wrong_set_is_named_before_anything_runs(text: str, says: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigurationError, match=says.replace("'", ".")):
        with_sets(demo_cell(), [text])
    assert main(["bench", "maintenance", "--cell", "demo", "--seeds", "1", "--set", text]) == 2
    err = capsys.readouterr().err
    assert says in err and "training" not in err


def test_a_cost_rate_set_changes_the_measured_cost() -> None:
    cfg = with_orders(demo_cell(), 1, 1.0)
    dear = with_sets(cfg, ["maintenance.costs.downtime_per_h=6000"])
    plain, _ = run_once(cfg, 1, "run_to_failure", {}, 3600.0)
    ten, _ = run_once(dear, 1, "run_to_failure", {}, 3600.0)
    assert plain["unplanned_failures"] >= 1 and plain["cost_downtime"] > 0
    assert ten["unplanned_failures"] == plain["unplanned_failures"]
    assert ten["cost_downtime"] == pytest.approx(10 * plain["cost_downtime"])
