"""KPI formulas against hand-computed examples (docs/kpis.md works the first one through)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.cell.specs import KpiSpec, MachineKpiSpec, OrderSpec
from ops.config import load_cell
from sim_bridge.kpis import KpiTracker, compute


def approx(x: float, **kw: float) -> object:
    """Report figures are rounded to 6 decimals."""
    return pytest.approx(x, **({"abs": 1e-6} | kw))


ROOT = Path(__file__).resolve().parents[1]

SPEC = KpiSpec(
    machines={"m1": MachineKpiSpec(idle_kw=1.0, busy_kw=5.0, capabilities={"mill": 100.0}),
              "m2": MachineKpiSpec(idle_kw=0.5, busy_kw=2.0, capabilities={"mill": 120.0})},
    orders={"o-1": OrderSpec(1, ("mill",)), "o-2": OrderSpec(2, ("mill",))})

# The worked example of docs/kpis.md: a setup, a breakdown mid-operation, a scrapped batch.
EXAMPLE = [
    {"t": 0, "ev": "op_start", "machine": "m1", "task": "o-1/0", "order": "o-1", "setup_s": 10},
    {"t": 110, "ev": "op_done", "machine": "m1", "task": "o-1/0", "order": "o-1", "quality": "ok"},
    {"t": 150, "ev": "order_completed", "order": "o-1", "tardiness_s": 0.0},
    {"t": 200, "ev": "op_start", "machine": "m1", "task": "o-2/0", "order": "o-2", "setup_s": 0},
    {"t": 250, "ev": "fault", "machine": "m1", "reason": "breakdown"},
    {"t": 250, "ev": "op_abort", "machine": "m1", "task": "o-2/0", "why": "fault"},
    {"t": 400, "ev": "repaired", "machine": "m1"},
    {"t": 400, "ev": "op_start", "machine": "m1", "task": "o-2/0", "order": "o-2", "setup_s": 0},
    {"t": 600, "ev": "op_done", "machine": "m1", "task": "o-2/0", "order": "o-2",
     "quality": "scrap"},
    {"t": 600, "ev": "op_start", "machine": "m1", "task": "o-2/0", "order": "o-2", "setup_s": 0},
    {"t": 800, "ev": "op_done", "machine": "m1", "task": "o-2/0", "order": "o-2", "quality": "ok"},
    {"t": 850, "ev": "order_completed", "order": "o-2", "tardiness_s": 150.0},
    {"t": 900, "ev": "fault", "robot": "agv1", "reason": "injected"},   # robots: not machines
]


def test_worked_example_machine() -> None:
    k = compute(EXAMPLE, SPEC, end_at=1000.0)
    m1 = k["machines"]["m1"]
    # time: processing 100 + 50 (aborted) + 200 (scrap) + 200 = 550, setup 10, down 150
    assert (m1["processing_s"], m1["setup_s"], m1["down_s"], m1["idle_s"]) == (550, 10, 150, 290)
    assert m1["availability"] == 0.55                         # 550 / 1000
    assert m1["performance"] == approx(500 / 550)      # ideal 100 + 200 + 200
    assert m1["quality"] == 0.6                               # good 1 + 2 of 5 units
    assert m1["oee"] == approx(0.3)
    assert m1["mtbf_s"] == 850.0 and m1["mttr_s"] == 150.0    # uptime / faults, repair / repairs
    assert m1["first_pass_yield"] == 0.5                      # o-1/0 first pass ok, o-2/0 not
    assert m1["throughput_units_per_h"] == approx(10.8)  # 3 good units in 1000 s
    assert m1["energy_kwh"] == approx((5 * 550 + 1 * 450) / 3600)   # 0.888889
    assert m1["energy_per_unit_kwh"] == approx(3200 / 3600 / 3)
    assert (m1["faults"], m1["repairs"], m1["units_produced"], m1["units_good"]) == (1, 1, 5, 3)


def test_worked_example_idle_machine_and_cell() -> None:
    k = compute(EXAMPLE, SPEC, end_at=1000.0)
    m2 = k["machines"]["m2"]
    assert m2["availability"] == 0.0 and m2["oee"] == 0.0
    assert m2["performance"] is None and m2["quality"] is None and m2["mtbf_s"] is None
    assert m2["energy_kwh"] == approx(0.5 * 1000 / 3600)
    cell = k["cell"]
    assert cell["availability"] == 0.275                      # 550 / (2 × 1000)
    assert cell["oee"] == approx(0.275 * 500 / 550 * 0.6)   # 0.15
    assert cell["mtbf_s"] == 1850.0 and cell["mttr_s"] == 150.0
    assert cell["first_pass_yield"] == approx(1 / 3)   # o-1 (1 unit) of o-1 + o-2 (3)
    assert cell["units_finished"] == 3
    assert cell["throughput_units_per_h"] == approx(10.8)
    assert cell["energy_kwh"] == approx(3700 / 3600)   # 3200 + 500 kJ
    assert cell["energy_per_unit_kwh"] == approx(3700 / 3600 / 3)
    assert (cell["tardiness_s"], cell["tardy_orders"], cell["orders_completed"]) == (150.0, 1, 2)
    assert cell["faults"] == 1                                # the robot's fault is not a machine's


def test_snapshot_closes_open_operation_and_open_repair_at_now() -> None:
    t = KpiTracker(SPEC)
    t.on_events(EXAMPLE[:5])       # o-2/0 running since 200, m1 down since 250 (not aborted yet)
    t.on_event({"t": 250, "ev": "op_abort", "machine": "m1", "task": "o-2/0"})
    k = t.snapshot(300.0)
    m1 = k["machines"]["m1"]
    assert m1["down_s"] == 50.0 and m1["processing_s"] == 150.0 and m1["setup_s"] == 10.0
    assert m1["mttr_s"] is None                               # no repair completed yet
    assert m1["mtbf_s"] == 250.0                              # 300 - 50 down, one fault
    t2 = KpiTracker(SPEC)
    t2.on_event({"t": 0, "ev": "op_start", "machine": "m1", "task": "o-1/0", "order": "o-1",
                 "setup_s": 10})
    k2 = t2.snapshot(4.0)                                     # still in setup
    assert k2["machines"]["m1"]["setup_s"] == 4.0 and k2["machines"]["m1"]["processing_s"] == 0


def test_no_time_no_figures() -> None:
    k = compute([], SPEC, end_at=0.0)
    assert k["cell"]["oee"] is None and k["cell"]["availability"] is None
    assert k["machines"]["m1"]["throughput_units_per_h"] is None


def test_slow_operation_lowers_performance_not_quality() -> None:
    evs = [{"t": 0, "ev": "op_start", "machine": "m1", "task": "o-1/0", "order": "o-1",
            "setup_s": 0},
           {"t": 125, "ev": "op_done", "machine": "m1", "task": "o-1/0", "order": "o-1",
            "quality": "ok"}]
    m1 = compute(evs, SPEC, end_at=250.0)["machines"]["m1"]
    assert m1["availability"] == 0.5 and m1["performance"] == 0.8 and m1["quality"] == 1.0
    assert m1["oee"] == approx(0.4)


def test_kpis_of_a_demo_run_are_consistent() -> None:
    from sim_bridge.report import build_report
    from sim_bridge.virtual import VirtualCell

    cfg = load_cell(ROOT / "cell_configs" / "demo_cell.yaml")
    cell = VirtualCell(cfg)
    cell.run()
    r = build_report(cell)
    k = r["kpis"]
    assert set(k["machines"]) == {m.id for m in cfg.machines}
    for row in [k["cell"], *k["machines"].values()]:
        for key in ("oee", "availability", "performance", "quality"):
            assert row[key] is None or 0.0 <= row[key] <= 1.0, (key, row)
    c = k["cell"]
    assert c["orders_completed"] == r["orders_completed"] == 24
    assert c["units_finished"] == sum(o.quantity for o in cfg.orders)
    assert c["tardiness_s"] == approx(r["tardiness_total"])
    assert c["faults"] + sum(1 for e in cell.events if '"robot"' in e and '"fault"' in e) \
        == r["faults"]
    assert sum(m["units_good"] for m in k["machines"].values()) >= c["units_finished"]
    assert c["energy_per_unit_kwh"] > 0
    for mid, m in k["machines"].items():   # the time split covers the window exactly
        assert m["processing_s"] + m["setup_s"] + m["down_s"] + m["idle_s"] == approx(
            k["window_s"]), mid
        # the plant's own busy time (setup + processing) agrees with the report's utilisation
        assert m["processing_s"] + m["setup_s"] == approx(
            r["utilisation"][mid] * r["makespan"], rel=1e-5, abs=1e-4), mid
    json.dumps(r)    # the report stays JSON


def test_docs_show_the_worked_example_numbers_asserted_here() -> None:
    text = (ROOT / "docs" / "kpis.md").read_text()
    k = compute(EXAMPLE, SPEC, end_at=1000.0)
    m1, cell = k["machines"]["m1"], k["cell"]
    shown = {"**0.55**": m1["availability"], "**0.9091**": round(m1["performance"], 4),
             "**0.6**": m1["quality"], "**0.30**": round(m1["oee"], 2),
             "**850 s**": m1["mtbf_s"], "**150 s**": m1["mttr_s"],
             "**10.8 units/h**": round(m1["throughput_units_per_h"], 1),
             "**0.8889 kWh**": round(m1["energy_kwh"], 4),
             "**0.2963 kWh**": round(m1["energy_per_unit_kwh"], 4),
             "**0.275**": cell["availability"], "**0.15**": round(cell["oee"], 2),
             "**1850 s**": cell["mtbf_s"], "**0.3426 kWh**": round(cell["energy_per_unit_kwh"], 4),
             "**0.333**": round(cell["first_pass_yield"], 3), "**0.5**": m1["first_pass_yield"]}
    for label, figure in shown.items():
        assert label in text, label
        assert label.strip("*").split()[0] == f"{figure:g}" or float(
            label.strip("*").split()[0]) == approx(figure, abs=1e-4), (label, figure)
