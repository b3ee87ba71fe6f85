"""The energy meter: power integrated per machine and state, priced by the tariff, and the peak.

Theory of operation
-------------------
Pure code, fed by :class:`~sim_bridge.kpis.KpiTracker` with the plant's events
in time order.  Each machine is always in one *power segment* that began at
``since``: ``idle``, ``down`` (broken; draws idle power), ``standby``, ``off``,
``wake`` (the wake-up energy drawn evenly over the wake-up time), or an
operation — ``setup`` for its first ``setup_s`` seconds, then ``busy`` (at the
power of the operation's capability).  An event closes the segment at its time
and opens the next: ``op_start`` → operation; ``op_done``/``op_abort`` → idle
(unless the machine went down first: the plant logs ``fault`` before the
aborted operation); ``fault`` → down; ``repaired`` → idle; ``power_state``
(logged only when something uses the plant's power hook) → its state.  A machine
that broke down asleep or waking is logged back in the state it slept in right
after its ``repaired`` (sim_bridge/plant.py, ADR 89), so its wake-up is paid when
it is next woken.

Closing a segment ``[a, b)`` at ``kw`` adds ``kw·(b − a)`` to the machine's
energy in that state; with a tariff it also adds ``tariff.cost(kw, a, b)`` and
the CO₂, both split exactly at the period boundaries, and the energy falling in
each peak window (windows of ``peak_window_s`` aligned to the tariff clock, as a
utility's meter aligns its quarter hours).  Every quantity is additive, so the
cell's figures are sums of the machines'.  The peak is the largest mean power
over a window — energy in the window over the part of it inside the run — and a
*cap violation* is a window whose mean exceeds the cap.

:meth:`EnergyMeter.snapshot` closes the open segments at ``now`` on a copy, so
a scrape in the middle of a run changes nothing.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agents.cell.specs import EnergySpec, PowerModel

__all__ = ["STATES", "EnergyMeter"]

HOUR_S = 3600.0
#: The states energy is reported in, in this order.
STATES = ("off", "standby", "wake", "idle", "setup", "busy", "down")


@dataclass
class _Segment:
    state: str                      # a STATES name, or "op" (setup then busy)
    since: float
    setup_until: float = 0.0
    capability: str | None = None
    wake_kw: float = 0.0


@dataclass
class _Totals:
    kws: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STATES, 0.0))  # kW·s
    cost: float = 0.0
    co2_kg: float = 0.0


class EnergyMeter:
    """Integrates each machine's power over its states; see the module docstring."""

    def __init__(self, machines: Mapping[str, PowerModel], energy: EnergySpec | None = None,
                 start_at: float = 0.0) -> None:
        self.power = dict(machines)
        self.energy = energy
        self.start_at = start_at
        self.open = {m: _Segment("idle", start_at) for m in machines}
        self.totals = {m: _Totals() for m in machines}
        self.windows: dict[int, float] = {}          # peak window index -> kW·s

    # -- events ------------------------------------------------------------------------------
    def op_start(self, machine: str, t: float, setup_s: float, capability: str | None) -> None:
        self._enter(machine, t, _Segment("op", t, t + setup_s, capability))

    def op_end(self, machine: str, t: float) -> None:
        if self.open[machine].state == "op":
            self._enter(machine, t, _Segment("idle", t))

    def down(self, machine: str, t: float) -> None:
        self._enter(machine, t, _Segment("down", t))

    def up(self, machine: str, t: float) -> None:
        if self.open[machine].state == "down":
            self._enter(machine, t, _Segment("idle", t))

    def power_state(self, machine: str, t: float, state: str, woken_from: str = "") -> None:
        """``standby``, ``off``, ``idle``, or ``wake`` (from ``woken_from``: standby or off)."""
        seg = _Segment(state, t)
        if state == "wake":
            p = self.power[machine]
            wake_s = p.wake_s.get(woken_from, 0.0)
            kwh = p.wake_kwh.get(woken_from, 0.0)
            if wake_s > 0:
                seg.wake_kw = kwh * HOUR_S / wake_s
            else:
                self._lump(machine, t, kwh)
        self._enter(machine, t, seg)

    # -- integration ---------------------------------------------------------------------------
    def _enter(self, machine: str, t: float, seg: _Segment) -> None:
        self._close(machine, self.open[machine], t, self.totals[machine], self.windows)
        self.open[machine] = seg

    def _close(self, machine: str, seg: _Segment, t: float, totals: _Totals,
               windows: dict[int, float]) -> None:
        p = self.power[machine]
        a = max(seg.since, self.start_at)
        if seg.state == "op":
            cut = min(max(a, seg.setup_until), t)
            self._add(totals, windows, "setup", p.kw("setup"), a, cut)
            self._add(totals, windows, "busy", p.kw("busy", seg.capability), cut, t)
        elif seg.state == "wake":
            self._add(totals, windows, "wake", seg.wake_kw, a, t)
        else:
            self._add(totals, windows, seg.state, p.kw(seg.state), a, t)

    def _add(self, totals: _Totals, windows: dict[int, float], state: str, kw: float,
             a: float, b: float) -> None:
        if b <= a:
            return
        totals.kws[state] += kw * (b - a)
        if self.energy is None or kw == 0:
            return
        tou = self.energy.tariff
        totals.cost += tou.cost(kw, a, b)
        totals.co2_kg += tou.co2_kg(kw, a, b)
        w = self.energy.peak_window_s
        k = math.floor((a + tou.offset_s) / w)
        while a < b:
            end = min(b, (k + 1) * w - tou.offset_s)
            windows[k] = windows.get(k, 0.0) + kw * (end - a)
            a, k = end, k + 1

    def _lump(self, machine: str, t: float, kwh: float) -> None:
        """Energy drawn at one instant (a wake-up that takes no time)."""
        totals = self.totals[machine]
        totals.kws["wake"] += kwh * HOUR_S
        if self.energy is not None and kwh:
            tou = self.energy.tariff
            totals.cost += kwh * tou.price_at(t)
            totals.co2_kg += kwh * (tou.co2_at(t) or 0.0)
            k = math.floor((t + tou.offset_s) / self.energy.peak_window_s)
            self.windows[k] = self.windows.get(k, 0.0) + kwh * HOUR_S

    # -- figures ------------------------------------------------------------------------------
    def power_now(self, now: float) -> dict[str, float]:
        """Each machine's power at ``now``, kW, from its open segment (for live gauges)."""
        out = {}
        for m, seg in self.open.items():
            p = self.power[m]
            if seg.state == "op":
                out[m] = p.kw("setup") if now < seg.setup_until else p.kw("busy", seg.capability)
            elif seg.state == "wake":
                out[m] = seg.wake_kw
            else:
                out[m] = p.kw(seg.state)
        return out

    def snapshot(self, now: float) -> dict[str, Any]:
        """Per machine ``{kwh, by_state_kwh, cost, co2_kg}``, and the peak (with a tariff)."""
        totals = copy.deepcopy(self.totals)
        windows = dict(self.windows)
        for m, seg in self.open.items():
            self._close(m, seg, now, totals[m], windows)
        machines = {m: {"kwh": sum(t.kws.values()) / HOUR_S,
                        "by_state_kwh": {s: t.kws[s] / HOUR_S for s in STATES},
                        "cost": t.cost, "co2_kg": t.co2_kg}
                    for m, t in totals.items()}
        return {"machines": machines, "peak": self._peak(windows, now)}

    def _peak(self, windows: Mapping[int, float], now: float) -> dict[str, Any] | None:
        if self.energy is None:
            return None
        w, off = self.energy.peak_window_s, self.energy.tariff.offset_s
        cap = self.energy.peak_cap_kw
        peak_kw, peak_at, violations = 0.0, None, 0
        for k, kws in sorted(windows.items()):
            a, b = max(k * w - off, self.start_at), min((k + 1) * w - off, now)
            if b <= a:
                continue
            mean_kw = kws / (b - a)
            if mean_kw > peak_kw:
                peak_kw, peak_at = mean_kw, a
            violations += cap is not None and mean_kw > cap + 1e-9
        return {"peak_kw": peak_kw, "peak_at": peak_at, "peak_cap_kw": cap,
                "peak_window_s": w, "cap_violations": violations}
