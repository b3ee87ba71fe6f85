"""Plant KPIs from the plant's event log: OEE and its factors, MTBF, MTTR, FPY, throughput,
tardiness, energy per unit — per machine and for the cell.

Theory of operation
-------------------
Pure code: events in, figures out.  :class:`KpiTracker` consumes the event
dicts the plant records (``op_start``, ``op_done``, ``op_abort``, ``fault``,
``repaired``) and the order agents log (``order_completed``), one at a
time, in time order; :meth:`KpiTracker.snapshot` turns what it has seen
into figures for the window ``[start_at, now]``, closing open operations
and open repairs at ``now``.  The same tracker serves the run report
(``autocell run``: all events, then one snapshot at the end) and the
simulator process's Prometheus gauges (``autocell sim``: events as they
happen, a snapshot per scrape).  :func:`compute` is the one-shot form.

Every machine's time in the window is split into processing, setup, down
and idle; the factors follow ISO 22400-2 (planned busy time = the window):

* availability  = processing / window
* performance   = ideal time of the operations completed / processing
* quality       = good units / units produced
* OEE           = availability × performance × quality

docs/kpis.md states every formula and works one example through; the
unit test asserts that example's numbers.  A figure with no denominator
(MTBF without a failure, quality without output) is ``None``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from agents.cell.specs import KpiSpec

from .energy import EnergyMeter

HOUR_S = 3600.0
DIGITS = 6


@dataclass
class _Running:
    task: str
    order: str
    start_at: float
    setup_s: float


@dataclass
class _Machine:
    processing_s: float = 0.0
    setup_s: float = 0.0
    down_s: float = 0.0
    down_since: float | None = None
    running: _Running | None = None
    faults: int = 0
    repairs: int = 0
    repair_s: float = 0.0
    units_produced: int = 0
    units_good: int = 0
    ideal_s: float = 0.0
    first_pass: int = 0
    first_pass_ok: int = 0
    planned: int = 0                # maintenance (issue 16): planned stops are no faults
    planned_s: float = 0.0
    planned_down: bool = False

    def split(self, run: _Running, end_at: float) -> tuple[float, float]:
        """(setup, processing) seconds of an operation interval ending at ``end_at``."""
        elapsed = max(0.0, end_at - run.start_at)
        setup = min(elapsed, run.setup_s)
        return setup, elapsed - setup


class KpiTracker:
    """Folds plant and order events into running totals; see the module docstring."""

    def __init__(self, spec: KpiSpec, start_at: float = 0.0) -> None:
        self.spec = spec
        self.start_at = start_at
        self.machines = {m: _Machine() for m in spec.machines}
        self.judged: set[str] = set()          # tasks with a completed (quality-judged) run
        self.scrapped_orders: set[str] = set()
        self.finished_orders: set[str] = set()  # last operation done ok
        self.orders_completed = 0
        self.cancelled_orders: set[str] = set()  # cancelled by a supervisor: not escalated
        self.tardiness_s = 0.0
        self.tardy_orders = 0
        self.lot_units: dict[str, int] = {}    # task prefix of a split order's lot -> units
        self.maintenance_seen = False          # planned maintenance in the log (issue 16)
        self.meter = EnergyMeter({mid: m.power_model for mid, m in spec.machines.items()},
                                 spec.energy, start_at)
        # the cap in force now: the contracted one, or a raise a supervisor approved (the
        # energy manager's cap_raised ... cap_restored); what the headroom gauge is under
        self.cap_now_kw = spec.energy.peak_cap_kw if spec.energy is not None else None

    def on_events(self, events: Iterable[Mapping[str, Any]]) -> None:
        for e in events:
            self.on_event(e)

    def on_event(self, e: Mapping[str, Any]) -> None:
        ev = e.get("ev")
        if ev == "lot_split":            # a split order: each lot's operations count its units
            self.lot_units.update({str(k): int(v) for k, v in dict(e.get("lots", {})).items()})
            return
        if ev in ("cap_raised", "cap_restored") and self.spec.energy is not None:
            self.cap_now_kw = (float(e["cap_kw"]) if ev == "cap_raised"
                               else self.spec.energy.peak_cap_kw)
            return
        if ev == "order_cancelled":
            self.cancelled_orders.add(str(e.get("order", "")))
            return
        if ev == "order_completed":
            self.orders_completed += 1
            late = float(e.get("tardiness_s", 0.0))
            self.tardiness_s += late
            self.tardy_orders += late > 0
            return
        m = self.machines.get(str(e.get("machine", "")))
        if m is None:
            return                       # robots, and events of no machine
        t = float(e["t"])
        mid = str(e["machine"])
        if ev == "op_start":
            m.running = _Running(str(e["task"]), str(e.get("order", "")), t,
                                 float(e.get("setup_s", 0.0)))
            self.meter.op_start(mid, t, m.running.setup_s,
                                self.spec.capability(m.running.order, m.running.task))
        elif ev == "power_state":
            self.meter.power_state(mid, t, str(e["state"]), str(e.get("from", "")))
        elif ev in ("op_done", "op_abort") and m.running is not None:
            self.meter.op_end(mid, t)
            run, m.running = m.running, None
            setup, processing = m.split(run, t)
            m.setup_s += setup
            m.processing_s += processing
            if ev == "op_done":
                self._judge(m, str(e["machine"]), run, processing, e.get("quality") == "ok")
        elif ev == "fault" and m.down_since is None:
            self.meter.down(mid, t)
            m.down_since = t
            m.planned_down = e.get("reason") == "maintenance"
            self.maintenance_seen |= m.planned_down
            m.planned += m.planned_down
            m.faults += not m.planned_down
        elif ev == "repaired" and m.down_since is not None:
            self.meter.up(mid, t)
            d = t - m.down_since
            m.down_s += d
            if m.planned_down:          # planned maintenance: downtime, but no repair
                m.planned_s += d
            else:
                m.repair_s += d
                m.repairs += 1
            m.down_since = None
        elif ev == "maintenance_done":
            self.maintenance_seen = True

    def _judge(self, m: _Machine, machine: str, run: _Running, processing_s: float,
               ok: bool) -> None:
        spec = self.spec.orders.get(run.order)
        units = spec.quantity if spec is not None else 1
        ideal = self.spec.ideal_s(machine, run.order, run.task)
        lot = self.lot_units.get(run.task.rpartition("/")[0])
        if lot is not None and spec is not None:
            ideal = None if ideal is None else ideal * lot / spec.quantity
            units = lot
        m.ideal_s += processing_s if ideal is None else ideal
        m.units_produced += units
        if run.task not in self.judged:
            self.judged.add(run.task)
            m.first_pass += 1
            m.first_pass_ok += ok
        if ok:
            m.units_good += units
            k = self.spec.op_index(run.task)
            if spec is not None and k is not None and k == len(spec.routing) - 1:
                self.finished_orders.add(run.order)
        else:
            self.scrapped_orders.add(run.order)

    # -- figures ------------------------------------------------------------------------------
    def snapshot(self, now: float) -> dict[str, Any]:
        """``{"window_s": ..., "cell": {...}, "machines": {id: {...}}}`` at time ``now``."""
        window = max(0.0, now - self.start_at)
        energy = self.meter.snapshot(now)
        rows = {mid: self._machine_row(mid, m, now, window, energy["machines"][mid])
                for mid, m in sorted(self.machines.items())}
        cell = self._cell_row(rows, window)
        if self.spec.energy is not None:
            cell.update(_energy_cell(rows, energy["peak"], cell, self.spec.energy.tariff.has_co2))
        return {"window_s": _r(window), "cell": cell,
                "machines": {mid: _public(row) for mid, row in rows.items()}}

    def _machine_row(self, mid: str, m: _Machine, now: float, window: float,
                     meter: Mapping[str, Any]) -> dict[str, Any]:
        setup, processing = m.setup_s, m.processing_s
        if m.running is not None:
            s, p = m.split(m.running, now)
            setup, processing = setup + s, processing + p
        down = m.down_s + (max(0.0, now - m.down_since) if m.down_since is not None else 0.0)
        idle = max(0.0, window - processing - setup - down)
        row: dict[str, Any]   # counts and seconds, then ratios that may be None
        row = {"processing_s": processing, "setup_s": setup, "down_s": down, "idle_s": idle,
               "window_s": window, "uptime_s": window - down, "ideal_s": m.ideal_s,
               "faults": m.faults, "repairs": m.repairs, "repair_s": m.repair_s,
               "units_produced": m.units_produced, "units_good": m.units_good,
               "first_pass": m.first_pass, "first_pass_ok": m.first_pass_ok,
               "energy_kwh": meter["kwh"]}
        if self.spec.energy is not None:
            row.update({"energy_by_state_kwh": {k: _r(v) for k, v in meter["by_state_kwh"].items()},
                        "energy_cost": meter["cost"], "co2_kg": meter["co2_kg"]})
        row.update(_factors(window, processing, m.ideal_s, m.units_good, m.units_produced))
        row["mtbf_s"] = _div(window - down, m.faults)
        if self.maintenance_seen:       # downtime split planned / unplanned; MTBF: unplanned
            planned = m.planned_s + (max(0.0, now - m.down_since)
                                     if m.down_since is not None and m.planned_down else 0.0)
            row.update({"planned_maintenances": m.planned, "down_planned_s": planned,
                        "down_unplanned_s": down - planned})
        row["mttr_s"] = _div(m.repair_s, m.repairs)
        row["first_pass_yield"] = _div(m.first_pass_ok, m.first_pass)
        row["throughput_units_per_h"] = _div(m.units_good * HOUR_S, window)
        row["energy_per_unit_kwh"] = _div(row["energy_kwh"], m.units_good)
        return row

    def _cell_row(self, rows: Mapping[str, Mapping[str, Any]], window: float) -> dict[str, Any]:
        def total(key: str) -> float:
            return sum(float(r[key]) for r in rows.values())

        qty = {o: s.quantity for o, s in self.spec.orders.items()}
        finished_units = sum(qty.get(o, 1) for o in self.finished_orders)
        decided = self.finished_orders | self.scrapped_orders
        passed = self.finished_orders - self.scrapped_orders
        energy = total("energy_kwh")
        out: dict[str, Any] = _factors(total("window_s"), total("processing_s"), total("ideal_s"),
                                       total("units_good"), total("units_produced"))
        out.update({
            "mtbf_s": _div(total("uptime_s"), total("faults")),
            "mttr_s": _div(total("repair_s"), total("repairs")),
            "first_pass_yield": _div(sum(qty.get(o, 1) for o in passed),
                                     sum(qty.get(o, 1) for o in decided)),
            "throughput_units_per_h": _div(finished_units * HOUR_S, window),
            "units_finished": finished_units,
            "orders_completed": self.orders_completed,
            "orders_cancelled": len(self.cancelled_orders),
            "tardiness_s": self.tardiness_s,
            "tardy_orders": self.tardy_orders,
            "energy_kwh": energy,
            "energy_per_unit_kwh": _div(energy, finished_units),
            "faults": int(total("faults")),
            "down_s": total("down_s"),
        })
        if self.maintenance_seen:
            out.update({k: total(k) for k in ("down_planned_s", "down_unplanned_s")})
            out["planned_maintenances"] = int(total("planned_maintenances"))
        return _public(out)


def _energy_cell(rows: Mapping[str, Mapping[str, Any]], peak: Mapping[str, Any],
                 cell: Mapping[str, Any], has_co2: bool) -> dict[str, Any]:
    """The cell's energy figures beyond kWh, for a cell with an ``energy:`` section."""
    cost = sum(float(r["energy_cost"]) for r in rows.values())
    out: dict[str, Any] = {
        "energy_cost": _r(cost),
        "energy_cost_per_unit": _r(_div(cost, cell.get("units_finished") or 0)),
        "co2_kg": _r(sum(float(r["co2_kg"]) for r in rows.values())) if has_co2 else None,
        "energy_by_state_kwh": {s: _r(sum(float(r["energy_by_state_kwh"][s]) for r in rows.values()))
                                for s in next(iter(rows.values()))["energy_by_state_kwh"]},
    }
    out.update({k: _r(v) for k, v in peak.items()})
    return out


def _factors(window: float, processing: float, ideal: float, good: float,
             produced: float) -> dict[str, float | None]:
    availability = _div(processing, window)
    performance = _div(ideal, processing)
    quality = _div(good, produced)
    if availability is None:
        oee = None
    elif performance is None or quality is None:
        oee = 0.0                 # nothing produced in the window
    else:
        oee = availability * performance * quality
    return {"oee": oee, "availability": availability, "performance": performance,
            "quality": quality}


_PUBLIC = ("oee", "availability", "performance", "quality", "mtbf_s", "mttr_s",
           "first_pass_yield", "throughput_units_per_h", "energy_kwh", "energy_per_unit_kwh",
           "units_produced", "units_good", "units_finished", "orders_completed",
           "orders_cancelled", "tardiness_s",
           "tardy_orders", "faults", "repairs", "processing_s", "setup_s", "down_s", "idle_s",
           "energy_by_state_kwh", "energy_cost", "co2_kg",
           "planned_maintenances", "down_planned_s", "down_unplanned_s")


def _public(row: Mapping[str, Any]) -> dict[str, Any]:
    """The reported keys, in a fixed order, floats rounded (the report must be stable)."""
    return {k: _r(row[k]) for k in _PUBLIC if k in row}


def _div(a: float, b: float) -> float | None:
    return a / b if b else None


def _r(x: Any) -> Any:
    return round(x, DIGITS) if isinstance(x, float) else x


def compute(events: Iterable[Mapping[str, Any]], spec: KpiSpec, *, end_at: float,
            start_at: float = 0.0) -> dict[str, Any]:
    """KPIs of a finished run: every event, then one snapshot at ``end_at``."""
    tracker = KpiTracker(spec, start_at)
    tracker.on_events(events)
    return tracker.snapshot(end_at)
