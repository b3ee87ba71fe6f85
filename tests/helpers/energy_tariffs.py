"""The day/night tariff and the power draw the energy tests compute by hand."""

from __future__ import annotations

from typing import Any

from agents.cell.energy import EnergySettings, PowerDraw
from agents.cell.tariff import TimeOfUse


def day_night(clock_at_start: str) -> TimeOfUse:
    """Day 0.30 from 07:00 to 22:00, night 0.10 from 22:00 to 07:00; the run's clock starts
    at ``clock_at_start`` (e.g. ``"mon 21:00"``)."""
    return TimeOfUse.from_settings(EnergySettings.model_validate({
        "clock_at_start": clock_at_start,
        "tariff": {"periods": [{"from": "07:00", "to": "22:00", "price": 0.30},
                               {"from": "22:00", "to": "07:00", "price": 0.10}]}}))


#: idle 1, busy 5, setup 2, standby 0.2 kW; waking from standby takes 60 s and 0.05 kWh
DRAW = PowerDraw.model_validate({"idle": 1.0, "busy": 5.0, "setup": 2.0, "standby": 0.2,
                                 "wake": {"standby": {"time_s": 60, "energy_kwh": 0.05}}})

#: DRAW with an off state: 0 kW, waking from off takes 600 s and 0.5 kWh
COLD = PowerDraw.model_validate({"idle": 1.0, "busy": 5.0, "setup": 2.0, "standby": 0.2,
                                 "off": 0.0,
                                 "wake": {"standby": {"time_s": 60, "energy_kwh": 0.05},
                                          "off": {"time_s": 600, "energy_kwh": 0.5}}})


def cold_plant(emit: Any = None) -> tuple[Any, Any, list[dict[str, Any]]]:
    """One machine ``m`` drawing :data:`COLD` on the embedded plant, no breakdowns, no
    readings: its SimPy environment, the plant, and the plant's log (``t`` added).
    ``emit``: where the plant's events go (default: nowhere)."""
    import simpy

    from agents.cell.specs import MachineSpec, PowerModel
    from sim_bridge.plant import EmbeddedPlant

    env = simpy.Environment()
    log: list[dict[str, Any]] = []
    plant = EmbeddedPlant(env, [MachineSpec("m", location="bay",
                                            power=PowerModel.from_draw(COLD))], [], seed=0,
                          emit=emit or (lambda e: None),
                          record=lambda ev, **f: log.append({"t": env.now, "ev": ev, **f}),
                          sensor_interval_s=0.0, breakdowns=False)
    return env, plant, log
