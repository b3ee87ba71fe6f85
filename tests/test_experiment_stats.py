"""Paired differences against a baseline and bootstrap intervals, on rows with a known answer."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import pytest

from ops.config import ConfigError
from ops.experiment.results import mean_ci95, summarise, t_quantile
from ops.experiment.stats import MIN_BOOTSTRAP_RUNS, bootstrap_ci95, paired_differences
from ops.experiment.sweep import load_sweep

MINIMAL = Path(__file__).resolve().parents[1] / "cell_configs" / "minimal_cell.yaml"


def row(strategy: str, seed: int, makespan: float, status: str = "ok",
        scenario: str = "none") -> dict[str, Any]:
    return {"run_id": f"{strategy}-{seed}", "cell": "c", "strategy": strategy,
            "scenario": scenario, "seed": seed, "repetition": 0, "status": status,
            "makespan": makespan}


def test_paired_difference_is_the_mean_of_per_seed_differences() -> None:
    # seeds differ a lot (10..40 s), the strategy is 1..4 s slower on each: the pairing
    # sees the difference the per-group intervals hide
    base = [10.0, 20.0, 30.0, 40.0]
    extra = [1.0, 2.0, 3.0, 4.0]
    rows = [row("base", i, b) for i, b in enumerate(base)]
    rows += [row("new", i, b + d) for i, (b, d) in enumerate(zip(base, extra))]
    (entry,) = paired_differences(rows, [], ["makespan"], "base")
    half = t_quantile(0.975, 3) * statistics.stdev(extra) / 2
    assert entry["strategy"] == "new" and entry["baseline"] == "base"
    assert entry["pairs"] == 4
    assert entry["diff_mean"] == pytest.approx(2.5)
    assert entry["diff_ci95"] == pytest.approx(half, abs=1e-6)
    assert half == pytest.approx(2.0543, abs=1e-4)   # t(0.975, 3) = 3.1824, s = 1.2910
    assert (entry["diff_lo"], entry["diff_hi"]) == (pytest.approx(2.5 - half, abs=1e-6),
                                                    pytest.approx(2.5 + half, abs=1e-6))
    assert (entry["baseline_mean"], entry["strategy_mean"]) == (25.0, 27.5)
    # the groups on their own: intervals of about ±20 s that overlap
    assert mean_ci95(base)[1] > 20


def test_only_seeds_both_ran_ok_are_paired_and_groups_stay_apart() -> None:
    rows = [row("base", s, 100.0 + s) for s in range(4)]
    rows += [row("new", 0, 90.0), row("new", 1, 91.0), row("new", 2, 0.0, status="failed")]
    rows += [row("base", 0, 500.0, scenario="faults"), row("new", 0, 450.0, scenario="faults")]
    by_scenario = {e["scenario"]: e for e in paired_differences(rows, [], ["makespan"], "base")}
    assert by_scenario["none"]["pairs"] == 2
    assert by_scenario["none"]["diff_mean"] == pytest.approx(-10.0)
    assert by_scenario["faults"]["pairs"] == 1
    assert by_scenario["faults"]["diff_mean"] == -50.0
    assert by_scenario["faults"]["diff_ci95"] is None   # one pair: no interval


def test_bootstrap_interval_of_a_non_negative_kpi_stays_at_or_above_zero() -> None:
    tardiness = [0.0, 0.0, 0.0, 0.0, 10.0]
    mean, half = mean_ci95(tardiness)
    assert mean - half < 0                          # what the t interval claimed
    lo, hi = bootstrap_ci95(tardiness)
    assert 0.0 <= lo <= mean <= hi <= 10.0
    assert bootstrap_ci95(tardiness) == (lo, hi)   # seeded: the same every time
    assert bootstrap_ci95([7.0, 7.0, 7.0]) == (7.0, 7.0)
    assert all(math.isnan(x) for x in bootstrap_ci95([3.0]))


def test_bootstrap_agrees_with_t_on_a_large_symmetric_sample() -> None:
    xs = [float(i) for i in range(1, 101)]
    mean, half = mean_ci95(xs)
    lo, hi = bootstrap_ci95(xs)
    assert lo == pytest.approx(mean - half, abs=1.0)
    assert hi == pytest.approx(mean + half, abs=1.0)


def test_summary_uses_bootstrap_for_non_negative_kpis_and_t_otherwise() -> None:
    makespans = [0.0] * 9 + [10.0]
    deltas = [-3.0, 1.0, 2.0, -1.0, 4.0, 0.5, -0.5, 2.0, 1.0, -2.0]
    rows = [row("s", i, v) for i, v in enumerate(makespans)]
    for r, d in zip(rows, deltas):
        r["delta"] = d
    (g,) = summarise(rows, [], ["makespan", "delta"])
    assert (g["makespan_lo"], g["makespan_hi"]) == tuple(round(x, 6)
                                                       for x in bootstrap_ci95(makespans))
    assert g["makespan_lo"] >= 0 and g["makespan_hi"] <= 10
    mean, half = mean_ci95(deltas)
    assert (g["delta_lo"], g["delta_hi"]) == (round(mean - half, 6), round(mean + half, 6))


def test_few_runs_get_the_t_interval_cut_at_zero_not_the_range_of_the_runs() -> None:
    """Two runs: the bootstrap's bounds would be the two values, an interval that covers
    the mean about half the time."""
    assert MIN_BOOTSTRAP_RUNS == 10
    (g,) = summarise([row("s", 0, 2857.2), row("s", 1, 2914.2)], [], ["makespan"])
    mean, half = mean_ci95([2857.2, 2914.2])
    assert (g["makespan_lo"], g["makespan_hi"]) == (round(mean - half, 6),
                                                   round(mean + half, 6))
    assert g["makespan_lo"] < 2857.2 and g["makespan_hi"] > 2914.2
    (g,) = summarise([row("s", i, v) for i, v in enumerate([0.0, 0.0, 0.0, 0.0, 10.0])],
                     [], ["makespan"])
    assert g["makespan_lo"] == 0.0 and g["makespan_hi"] > 10.0 / 5


def test_baseline_must_name_a_strategy_label(tmp_path: Path) -> None:
    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"""\
name: b
cells: [{MINIMAL}]
strategies:
  - {{name: default, resource: default}}
  - {{name: slack, resource: slack_bidding}}
baseline: defualt
""")
    with pytest.raises(ConfigError) as err:
        load_sweep(sweep)
    assert "s.yaml:6: baseline: no strategy labelled 'defualt' (did you mean 'default'?)" \
        in str(err.value)
    sweep.write_text(sweep.read_text().replace("defualt", "slack"))
    assert load_sweep(sweep).baseline_label == "slack"
    sweep.write_text(sweep.read_text().replace("baseline: slack\n", ""))
    assert load_sweep(sweep).baseline_label == "default"   # the first entry


def test_kpi_names_are_checked_against_the_report_with_did_you_mean(tmp_path: Path) -> None:
    energy_cell = MINIMAL.parent / "demo_cell_energy.yaml"
    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"""\
name: k
cells: [{energy_cell}]
kpis:
  - makespan
  - energy_per_unit
  - tardyness_total
  - messages_by_type.award
  - utilisation.mill1
  - energy.kwh_per_unit
""")
    with pytest.raises(ConfigError) as err:
        load_sweep(sweep)
    text = str(err.value)
    assert "s.yaml:5: kpis[1]: no KPI 'energy_per_unit' in the run report of the base cells " \
           "(did you mean 'energy.kwh_per_unit'?)" in text
    assert "s.yaml:6: kpis[2]: no KPI 'tardyness_total'" in text
    assert "(did you mean 'tardiness_total'?)" in text
    assert len(err.value.issues) == 2
    sweep.write_text(sweep.read_text().replace("  - energy_per_unit\n  - tardyness_total\n", ""))
    from ops.experiment.sweep import expand   # the energy cell's `off:` keys hash too

    assert len(expand(load_sweep(sweep))) == 1


def test_one_run_or_none_has_no_interval_at_all() -> None:
    from ops.experiment.stats import interval

    for xs in ([5.0], []):
        _, lo, hi, _ = interval(xs, non_negative=True)
        assert math.isnan(lo) and math.isnan(hi)
