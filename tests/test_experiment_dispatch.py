"""Due-date tightness a sweep can vary, and resource strategies that sequence the booked queue."""

from __future__ import annotations

from pathlib import Path

import pytest

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
