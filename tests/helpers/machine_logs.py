"""Event logs of one simulated machine fed operations, for the estimators' training tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import simpy

from agents.cell.maintenance import Degradation
from agents.cell.specs import MachineSpec
from agents.protocol.actions import Command
from sim_bridge.plant import EmbeddedPlant


def machine_log(seed: int, until_s: float, spec: Degradation,
                idle_after: Callable[[int], float | None] = lambda k: None
                ) -> list[dict[str, Any]]:
    """Machine ``m`` of the embedded plant given 100-s operations one after another until
    ``until_s`` (run to failure, no breakdowns), held idle ``idle_after(k)`` seconds after
    starting its ``k``-th (``None``: not held): its event log, one dict an event with its
    time ``t``."""
    env = simpy.Environment()
    log: list[dict[str, Any]] = []
    plant = EmbeddedPlant(env, [MachineSpec("m", location="bay", degradation=spec)], [],
                          seed=seed, emit=lambda e: None,
                          record=lambda ev, **f: log.append({"t": env.now, "ev": ev, **f}),
                          breakdowns=False)
    m = plant.backend.machines["m"]

    def feed() -> Any:
        k = 0
        while True:
            if m.up and not m.task:
                k += 1
                plant.command(Command("start_operation", "m", f"o/{k}",
                                      {"award_epoch": 1, "duration_s": 100.0, "order": "o"}))
                idle = idle_after(k)
                if idle is not None:
                    yield env.timeout(idle)
            yield env.timeout(1.0 if m.task else 5.0)
    env.process(feed())
    env.run(until=until_s)
    return log
