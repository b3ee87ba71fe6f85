"""``autocell bench energy --json`` on one small instance: the keys, and what must hold.

A three-job, two-machine flexible job shop named like a Brandimarte instance
(``mk99``) in a temporary ``bks.csv`` directory: the same code path as mk01–mk10,
in a few seconds of virtual time.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ops.bench.energy import FIGURES, METHODS, energy_extension, figures_cell, means, run
from ops.cli import main
from sim_bridge.instances import instance_to_cell_dict, load_instance

SMALL = """3 2 1.5
2 2 1 3 2 5 1 2 4
2 1 2 2 2 1 3 2 2
3 1 1 2 2 2 3 1 1 1 2 3
"""


@pytest.fixture
def bench_dir(tmp_path: Path) -> Path:
    (tmp_path / "mk99.fjs").write_text(SMALL)
    (tmp_path / "bks.csv").write_text(
        "instance,format,jobs,machines,lower_bound,best_known_upper,source\n"
        "mk99,fjs,3,2,7,7,made up for this test\n")
    return tmp_path


def test_the_json_has_the_documented_keys(bench_dir: Path, capsys: pytest.CaptureFixture[str]
                                          ) -> None:
    assert main(["bench", "energy", str(bench_dir), "--instances", "mk99", "--json"]) == 0
    out, err = capsys.readouterr()
    r = json.loads(out)
    assert set(r) == {"instances", "mean"}
    assert set(r["mean"]) == set(METHODS) == {"energy_blind", "energy_aware",
                                              "energy_aware_capped", "rule"}
    for method in METHODS:
        assert set(r["mean"][method]) == set(FIGURES) == {
            "energy_cost", "kwh", "peak_kw", "makespan", "tardiness", "cap_violations"}
    [entry] = r["instances"]
    assert entry["instance"] == "mk99"
    assert "mk99 energy_aware_capped:" in err          # the progress lines
    # under power leases the cap holds; the agents finish every order
    capped = entry["energy_aware_capped"]
    assert capped["cap_violations"] == 0 and capped["invariants_hold"]
    assert all(entry[m]["orders_completed"] == entry[m]["orders_total"]
               for m in METHODS if m != "rule")
    assert entry["rule"]["best_rule"] in ("SPT", "MWKR", "FIFO")
    # the diagnosis: the prices over the blind run's horizon, and the machine-choice bound
    diag = entry["diagnosis"]
    assert sum(diag["prices_in_run"].values()) == pytest.approx(1.0, abs=0.01)
    assert diag["machine_choice_bound_pct"] <= 0.0 and diag["shift_bound_pct"] < 0.0
    # moving work later (seventh round, ops/bench/energy_shift.py): the float and the
    # order's weighing only narrow the loose bound; the run starts at 14:00, the price
    # first falls at 21:00
    assert diag["later_shift_bound_pct"] <= diag["later_shift_float_pct"] <= 0.0
    assert diag["later_shift_bound_pct"] <= diag["later_shift_weighed_pct"] <= 0.0
    assert 0.0 <= diag["peak_work_share"] <= 1.0 and diag["price_first_falls_s"] == 25200.0
    # the priced right-justifying pass (eighth round) only takes strictly cheaper starts
    assert diag["right_shift_pct"] <= 0.0
    assert "slots" not in entry["energy_aware"]
    assert "by_machine_state_kwh" not in entry["energy_blind"]
    # standby (fifth round): the blind agents never sleep; the aware ones save no more
    # than the clairvoyant best on their own schedule, and never less than nothing
    assert entry["energy_blind"]["standby_saved_kwh"] == pytest.approx(0.0, abs=1e-9)
    aware = entry["energy_aware"]
    assert -1e-9 <= aware["standby_saved_kwh"] <= aware["standby_clairvoyant_kwh"] + 1e-9
    assert 0.0 <= entry["standby_vs_clairvoyant"] <= 1.0


def test_the_energy_extension_is_seeded_and_documented(bench_dir: Path) -> None:
    cell = instance_to_cell_dict(load_instance(bench_dir / "mk99.fjs"))
    a, b = energy_extension(cell, "mk99", 0), energy_extension(cell, "mk99", 0)
    assert a == b and a != energy_extension(cell, "mk99", 1)
    for m in a["machines"]:
        p = m["power_kw"]
        assert 0.5 <= p["idle"] <= 2.0 and 3.0 <= p["busy"] - p["idle"] <= 10.01
        assert p["standby"] <= 0.3 * p["idle"] + 0.01
    assert len({p["price"] for p in a["energy"]["tariff"]["periods"]}) == 3


def test_an_unknown_instance_is_named(bench_dir: Path) -> None:
    from security.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="unknown instance.*mk42.*known: demo, mk99"):
        run(bench_dir, instances=["mk42"])


def test_the_pareto_front_of_a_weight_sweep(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Means per strategy over seeds; the front keeps what nothing beats on both axes."""
    from ops.bench.energy import pareto

    runs = [("blind", 1, 3100, 2.3), ("blind", 2, 3110, 2.2), ("w1", 1, 3000, 2.0),
            ("w1", 2, 3020, 2.0), ("w2", 1, 3200, 1.9), ("w2", 2, 3200, 1.9),
            ("w3", 1, 3300, 1.95), ("w3", 2, 3300, 1.95)]
    rows = [{"strategy": s, "seed": str(k), "status": "ok", "makespan": str(m),
             "energy.cost": str(c)} for s, k, m, c in runs]
    means, front = pareto(rows)
    assert means["blind"] == pytest.approx((3105, 2.25))
    assert front == ["w1", "w2"]            # blind and w3 are beaten on both axes
    (tmp_path / "runs.csv").write_text(
        "strategy,seed,status,makespan,energy.cost\n"
        + "".join(f"{s},{k},ok,{m},{c}\n" for s, k, m, c in runs))
    assert main(["bench", "energy-pareto", str(tmp_path)]) == 0
    assert (tmp_path / "plots" / "pareto_cost_makespan.png").stat().st_size > 0
    assert capsys.readouterr().out.startswith("front: w1 (3010 s, 2.000), w2")


def test_brandimarte_mk01_to_mk10_are_shipped_as_published() -> None:
    """The bench's default directory: the ten instances, headers as published
    (cell_configs/benchmarks/fjsp/README.md), each loadable."""
    from ops.bench.energy import BENCHMARKS
    from sim_bridge.instances import instance_path, load_bks

    rows = load_bks(BENCHMARKS / "bks.csv")
    assert [r.instance for r in rows] == [f"mk{k:02d}" for k in range(1, 11)]
    sizes = {r.instance: (load_instance(instance_path(r, BENCHMARKS)).n_jobs,
                          load_instance(instance_path(r, BENCHMARKS)).n_machines) for r in rows}
    assert sizes == {"mk01": (10, 6), "mk02": (10, 6), "mk03": (15, 8), "mk04": (15, 8),
                     "mk05": (15, 4), "mk06": (10, 15), "mk07": (20, 5), "mk08": (20, 10),
                     "mk09": (20, 10), "mk10": (20, 15)}
    assert all((r.jobs, r.machines) == sizes[r.instance] for r in rows)


def test_the_clairvoyant_standby_saving_by_hand() -> None:
    """Idle 1 kW, standby 0.2 kW, waking 60 s for 0.05 kWh (break-even 210 s).  Gaps: 0 s
    before the first operation; 1000 s (saves 1000/3600 − 0.2·940/3600 − 0.05 kWh); 100 s
    before a fault (shorter than the break-even: 0); down from 2100 s to 2500 s (not out
    of work, the abort inside it ignored); 500 s to the end (no wake-up: 0.8·500/3600)."""
    from agents.cell.energy import PowerDraw
    from ops.bench.energy_standby import clairvoyant_standby_kwh, never_asleep

    d = PowerDraw.model_validate({"idle": 1.0, "busy": 5.0, "standby": 0.2,
                                  "wake": {"standby": {"time_s": 60, "energy_kwh": 0.05}}})
    evs = [{"t": 0.0, "ev": "op_start", "machine": "m"},
           {"t": 600.0, "ev": "op_done", "machine": "m"},
           {"t": 700.0, "ev": "power_state", "machine": "m", "state": "standby"},
           {"t": 1600.0, "ev": "op_start", "machine": "m"},
           {"t": 2000.0, "ev": "op_done", "machine": "m"},
           {"t": 2100.0, "ev": "fault", "machine": "m"},
           {"t": 2100.0, "ev": "op_abort", "machine": "m"},
           {"t": 2500.0, "ev": "repaired", "machine": "m"},
           {"t": 2200.0, "ev": "op_start", "machine": "robot"}]
    awake = never_asleep(evs)
    assert all(e["ev"] != "power_state" for e in awake) and len(awake) == len(evs) - 1
    expected = (1000 - 0.2 * 940) / 3600 - 0.05 + 0.8 * 500 / 3600
    assert clairvoyant_standby_kwh(awake, {"m": d}, 3000.0) == pytest.approx(expected)


def test_a_method_no_instance_ran_has_no_mean() -> None:
    """The rule runs on Brandimarte instances only: on the demo cell alone its mean is null,
    not zeros that read as a free, instant schedule."""
    ran = {f: 1.0 for f in FIGURES} | {"cap_violations": 2}
    entries = [{"instance": "demo", "energy_blind": ran, "energy_aware": ran,
                "energy_aware_capped": ran, "rule": None}]
    mean = means(entries)
    assert mean["rule"] is None
    assert mean["energy_blind"] == {f: 1.0 for f in FIGURES} | {"cap_violations": 2}
    half = {f: 3.0 for f in FIGURES} | {"cap_violations": 1}
    assert means(entries + [{"instance": "mk99", "energy_blind": half, "energy_aware": half,
                             "energy_aware_capped": half, "rule": half}])["rule"] == half


def test_the_human_table_shows_kwh_peak_and_tardiness(bench_dir: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("COLUMNS", "240")
    assert main(["bench", "energy", str(bench_dir), "--instances", "mk99"]) == 0
    out = capsys.readouterr().out
    assert main(["bench", "energy", str(bench_dir), "--instances", "mk99", "--json"]) == 0
    blind = json.loads(capsys.readouterr().out)["instances"][0]["energy_blind"]
    assert f"{blind['kwh']:.1f} kWh" in out and f"{blind['peak_kw']:.1f} kW" in out
    assert f"tardy {blind['tardiness']:.0f}" in out
    assert figures_cell(None) == "–"
