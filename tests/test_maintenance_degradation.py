"""The simulator's degradation model (sim_bridge/degradation.py) against its specification:
the mean time to failure, wear that follows load, readings that follow wear, maintenance
that restores, and common random numbers across policies."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest
import simpy
from pytest import approx

from agents.cell.specs import MachineSpec
from agents.cell.maintenance import Degradation
from agents.protocol.actions import Command
from sim_bridge.degradation import WearProcess, stream
from sim_bridge.plant import EmbeddedPlant

MTTF = 10_000.0


def _lives(spec: Degradation, seed: int, n: int) -> list[float]:
    w = WearProcess(spec, wear=stream(seed, "m", "wear"), threshold=stream(seed, "m", "threshold"))
    out = []
    for _ in range(n):
        out.append(w.failure_exposure())
        w.new_life()
    return out


@pytest.mark.parametrize("wear_cv", [0.15, 0.3, 0.6])
def test_the_mean_time_to_failure_is_the_configured_one(wear_cv: float) -> None:
    spec = Degradation(mttf_s=MTTF, wear_cv=wear_cv, reading_interval_s=60.0)
    lives = [t for seed in range(40) for t in _lives(spec, seed, 50)]     # 2000 lives
    mean, sem = float(np.mean(lives)), float(np.std(lives) / np.sqrt(len(lives)))
    assert abs(mean - MTTF) < max(4 * sem, 0.03 * MTTF), (mean, sem)


def test_the_wear_path_does_not_depend_on_when_it_is_looked_at() -> None:
    spec = Degradation(mttf_s=MTTF)
    a = WearProcess(spec, wear=stream(1, "m", "wear"), threshold=stream(1, "m", "threshold"))
    b = WearProcess(spec, wear=stream(1, "m", "wear"), threshold=stream(1, "m", "threshold"))
    seen = [a.wear_at(e) for e in np.linspace(0, 3 * MTTF, 997)]
    assert b.wear_at(2 * MTTF) == approx(a.wear_at(2 * MTTF))
    assert all(x <= y for x, y in zip(seen, seen[1:], strict=False))     # wear never heals
    assert a.failure_exposure() == b.failure_exposure()


def test_partial_maintenance_postpones_the_failure_of_the_same_life() -> None:
    spec = Degradation(mttf_s=MTTF, restore=0.5)
    w = WearProcess(spec, wear=stream(2, "m", "wear"), threshold=stream(2, "m", "threshold"))
    before = w.failure_exposure()
    at = 0.8 * before
    worn = w.wear_at(at)
    assert not w.restore(at, 0.5)
    assert w.wear_at(at) == approx(worn / 2)
    assert w.failure_exposure() > before and w.life == 1


# --------------------------------------------------------------------------- in the plant


class _Plant:
    def __init__(self, spec: Degradation, seed: int = 0) -> None:
        self.env = simpy.Environment()
        self.log: list[dict[str, Any]] = []
        self.readings: list[tuple[float, dict[str, float]]] = []
        self.plant = EmbeddedPlant(
            self.env, [MachineSpec("m", location="bay", degradation=spec)], [], seed=seed,
            emit=self._emit,
            record=lambda ev, **f: self.log.append({"t": self.env.now, "ev": ev, **f}),
            breakdowns=False)
        self.dm = self.plant.backend.degrading["m"]

    def _emit(self, ev: Any) -> None:
        if ev.event == "reading":
            self.readings.append((self.env.now, dict(ev.data or {})))

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.log if e["ev"] == name]


def test_an_idle_machine_wears_at_its_idle_rate_and_fails_at_its_threshold() -> None:
    spec = Degradation(mttf_s=MTTF, idle_wear=0.25, reading_interval_s=120.0)
    p = _Plant(spec)
    first_life = p.dm.wear.failure_exposure()
    p.env.run(until=40 * MTTF)
    faults = p.events("fault")
    assert faults[0]["reason"] == "wear"
    assert faults[0]["t"] == approx(first_life / 0.25, abs=1.5)     # idle: a quarter the rate
    done = p.events("maintenance_done")
    assert [d["kind"] for d in done] == ["corrective"] * len(done)
    assert len(p.events("repaired")) >= len(done) > 2


def test_readings_follow_the_wear() -> None:
    spec = Degradation(mttf_s=MTTF, idle_wear=1.0, reading_interval_s=60.0)
    p = _Plant(spec, seed=3)
    truth: list[float] = []

    def sample() -> Any:
        while True:
            yield p.env.timeout(60.0)
            truth.append(p.dm.wear_now())
    p.env.process(sample())
    p.env.run(until=p.dm.wear.failure_exposure() - 1.0)
    vib = [r["vibration_mm_s"] for _, r in p.readings]
    assert len(vib) > 50 and p.events("reading")
    n = min(len(vib), len(truth))
    assert np.corrcoef(vib[:n], truth[:n])[0, 1] > 0.8
    assert np.mean(vib[-10:]) > np.mean(vib[:10]) + 0.5 * spec.vibration_mm_s.per_wear


def test_maintenance_takes_the_machine_down_for_its_duration_and_renews_it() -> None:
    spec = Degradation(mttf_s=MTTF, idle_wear=1.0, maintenance_s=600.0, repair_s=3000.0)
    p = _Plant(spec)
    p.env.run(until=0.5 * MTTF * 0.8)
    worn = p.dm.wear_now()
    assert worn > 0 and p.dm.maintain()
    assert not p.dm.maintain()                          # already in it
    p.plant.command(Command("start_operation", "m", "o/0",
                            {"award_epoch": 1, "duration_s": 50.0, "order": "o"}))
    p.env.run(until=0.5 * MTTF * 0.8 + 600.0 + 1e-6)
    assert p.dm.wear_now() == approx(0.0, abs=1e-9) and p.dm.wear.life == 2
    assert [e["reason"] for e in p.events("fault")] == ["maintenance"]
    assert p.events("maintenance_done")[0]["kind"] == "planned"
    assert not p.events("op_start")                     # the gateway refused: machine down


def test_the_same_seed_gives_the_same_lives_whatever_a_policy_does() -> None:
    """Common random numbers: life k's threshold and path do not depend on maintenance."""
    spec = Degradation(mttf_s=MTTF, idle_wear=1.0, maintenance_s=100.0, repair_s=1000.0)
    reactive, planned = _Plant(spec, seed=7), _Plant(spec, seed=7)

    def every(p: _Plant, period_s: float) -> Any:
        while True:
            yield p.env.timeout(period_s)
            p.dm.maintain()
    planned.env.process(every(planned, 0.3 * MTTF))
    thresholds: dict[str, list[float]] = {"r": [], "p": []}
    for key, p in (("r", reactive), ("p", planned)):
        def note(p: _Plant = p, key: str = key) -> Any:
            last = 0
            while True:
                if p.dm.wear.life != last:
                    last = p.dm.wear.life
                    thresholds[key].append(p.dm.wear.threshold)
                yield p.env.timeout(50.0)
        p.env.process(note())
        p.env.run(until=20 * MTTF)
    n = min(len(thresholds["r"]), len(thresholds["p"]))
    assert n > 5 and thresholds["r"][:n] == thresholds["p"][:n]
    assert len(planned.events("fault")) > len(reactive.events("fault")) / 2
    assert sum(e["reason"] == "wear" for e in planned.events("fault")) < \
        sum(e["reason"] == "wear" for e in reactive.events("fault"))


@pytest.mark.parametrize("repair_s", [300.0, 120.0])
def test_a_repair_no_longer_than_planned_maintenance_is_refused(repair_s: float,
                                                                tmp_path: Any) -> None:
    """``repair_s`` must exceed ``maintenance_s`` (agents/cell/maintenance.py): a corrective
    repair also finds and clears the failure.  Equal or shorter is refused, by the model and
    by the cell file's loader, which names the machine's block."""
    from pathlib import Path

    from pydantic import ValidationError

    from ops.config import ConfigError, load_cell

    says = f"repair_s ({repair_s:g}) must be longer than maintenance_s (300)"
    with pytest.raises(ValidationError, match=re.escape(says)):
        Degradation(mttf_s=2400.0, maintenance_s=300.0, repair_s=repair_s)
    assert Degradation(mttf_s=2400.0, maintenance_s=300.0, repair_s=301.0).repair_s == 301.0
    demo = Path(__file__).resolve().parents[1] / "cell_configs" / "demo_cell_maintenance.yaml"
    text = demo.read_text(encoding="utf-8")
    assert text.count("maintenance_s: 300, repair_s: 1200") == 1
    cell = tmp_path / "cell.yaml"
    cell.write_text(text.replace("maintenance_s: 300, repair_s: 1200",
                                 f"maintenance_s: 300, repair_s: {repair_s:g}"), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_cell(cell)
    assert says in str(caught.value) and "degradation" in str(caught.value)
