"""Plain specs the drivers and reports build from a cell config: the plant's machines and
routes, the KPIs'.

The simulator (:mod:`sim_bridge.plant`) and the KPIs (:mod:`sim_bridge.kpis`)
know no pydantic model; they take these plain values, and the one
place that reads a :class:`~agents.cell.model.CellConfig` for them is here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agents.cell.routes import Route, RouteGraph
from agents.cell.tariff import TimeOfUse, standby_break_even_s
from agents.cell.maintenance import Degradation

if TYPE_CHECKING:
    from agents.cell.energy import EnergySettings, PowerDraw
    from agents.cell.model import CellConfig


@dataclass(frozen=True)
class PowerModel:
    """A machine's power by state, kW, defaults resolved (agents/cell/energy.py).

    ``down`` (broken) draws idle power, as the KPIs always counted it; ``wake``
    draws the wake-up energy evenly over the wake-up time."""

    idle_kw: float = 0.0
    busy_kw: float = 0.0
    setup_kw: float | None = None          # None: idle
    standby_kw: float | None = None        # None: idle
    off_kw: float = 0.0
    busy_by_capability: Mapping[str, float] = field(default_factory=dict)
    wake_s: Mapping[str, float] = field(default_factory=dict)      # "standby"/"off" -> s
    wake_kwh: Mapping[str, float] = field(default_factory=dict)    # "standby"/"off" -> kWh

    @classmethod
    def from_draw(cls, p: PowerDraw) -> PowerModel:
        return cls(p.idle, p.busy, p.setup_kw, p.standby_kw, p.off, dict(p.busy_by_capability),
                   {"standby": p.wake.standby.time_s, "off": p.wake.off.time_s},
                   {"standby": p.wake.standby.energy_kwh, "off": p.wake.off.energy_kwh})

    def break_even_s(self, asleep: str = "standby") -> float | None:
        """The shortest idle gap worth sleeping through in ``asleep`` (standby or off), in
        energy (:func:`agents.cell.tariff.standby_break_even_s`); None if it never pays."""
        return standby_break_even_s(self.idle_kw, self.kw(asleep), self.wake_s.get(asleep, 0.0),
                                    self.wake_kwh.get(asleep, 0.0))

    def kw(self, state: str, capability: str | None = None) -> float:
        """Power in ``state`` (off, standby, idle, setup, busy, down); busy per capability."""
        if state == "busy":
            return self.busy_by_capability.get(capability or "", self.busy_kw)
        if state == "setup":
            return self.idle_kw if self.setup_kw is None else self.setup_kw
        if state == "standby":
            return self.idle_kw if self.standby_kw is None else self.standby_kw
        if state == "off":
            return self.off_kw
        return self.idle_kw                 # idle, down


@dataclass(frozen=True)
class EnergySpec:
    """What the KPIs need of the cell's ``energy:`` section."""

    tariff: TimeOfUse
    peak_cap_kw: float | None = None
    peak_window_s: float = 900.0

    @classmethod
    def from_settings(cls, e: EnergySettings) -> EnergySpec:
        return cls(TimeOfUse.from_settings(e), e.peak_cap_kw, e.peak_window_s)


@dataclass
class MachineSpec:
    """What the plant simulates of a machine: breakdowns, scrap, power draw, where it stands."""

    id: str
    mtbf_s: float | None = None
    mttr_s: float | None = None
    scrap_rate: float = 0.0
    power_idle_kw: float = 0.0
    power_busy_kw: float = 0.0
    location: str = ""
    power: PowerModel | None = None     # by state, for the plant's power-state hook
    degradation: Degradation | None = None  # wear and readings (sim_bridge/degradation.py)


def plant_machines(cfg: CellConfig) -> list[MachineSpec]:
    """The plant's view of every machine of the cell, in the cell's order."""
    return [MachineSpec(m.id, m.mtbf_s, m.mttr_s, m.scrap_rate, m.power_kw.idle,
                        m.power_kw.busy, m.location, PowerModel.from_draw(m.power_kw),
                        m.degradation)
            for m in cfg.machines]


@dataclass(frozen=True)
class Drive:
    """One move as the plant drives it: empty to the pick-up, then loaded to the drop."""

    duration_s: float        # both legs plus handling (load_s)
    empty: Route             # from where the robot stands to the origin
    loaded: Route            # from the origin to the destination

    @property
    def node_ids(self) -> list[str]:
        """Every node passed, start to end, the origin once."""
        return [n.id for n in self.empty.nodes] + [n.id for n in self.loaded.nodes[1:]]

    @property
    def length_m(self) -> float:
        return self.empty.length_m + self.loaded.length_m


@dataclass(frozen=True)
class PlantRoutes:
    """What the plant needs to drive robots on the layout's route graph.

    ``travel_s`` is each robot's table of :meth:`CellConfig.travel_s` — the table the
    robot agent bids with — so the simulator and the bids share one rule (the
    robot's ``transport_s`` first, then the graph) and cannot disagree."""

    graph: RouteGraph
    travel_s: Mapping[str, Mapping[tuple[str, str], float]]   # robot -> (from, to) -> s
    load_s: Mapping[str, float]                                # robot -> handling s per move

    def drive(self, robot: str, start: str, origin: str, destination: str) -> Drive:
        """The move ``start`` -> ``origin`` -> ``destination``, timed as the robot agent times it."""
        table = self.travel_s[robot]

        def leg_s(a: str, b: str) -> float:
            return 0.0 if a == b else table[(a, b)]

        duration_s = leg_s(start, origin) + leg_s(origin, destination) + self.load_s[robot]
        return Drive(duration_s, self.graph.route(start, origin),
                     self.graph.route(origin, destination))


def plant_routes(cfg: CellConfig) -> PlantRoutes | None:
    """How the plant drives the cell's robots; None without a route graph (the plant then
    takes each move's duration from the command, as it always did)."""
    graph = cfg.layout.route_graph()
    if graph is None:
        return None
    locations = [loc.id for loc in cfg.layout.locations]
    return PlantRoutes(
        graph,
        {r.id: {(a, b): cfg.travel_s(r.id, a, b) for a in locations for b in locations if a != b}
         for r in cfg.robots},
        {r.id: r.load_s for r in cfg.robots})


@dataclass(frozen=True)
class MachineKpiSpec:
    """What the KPIs need to know of a machine: its power model and nominal speeds."""

    idle_kw: float = 0.0
    busy_kw: float = 0.0
    capabilities: Mapping[str, float] = field(default_factory=dict)   # capability -> s/unit
    power: PowerModel | None = None     # by state; None: idle_kw and busy_kw only

    @property
    def power_model(self) -> PowerModel:
        return self.power if self.power is not None else PowerModel(self.idle_kw, self.busy_kw)


@dataclass(frozen=True)
class OrderSpec:
    quantity: int = 1
    routing: tuple[str, ...] = ()     # capability of each operation, in order


@dataclass(frozen=True)
class KpiSpec:
    machines: Mapping[str, MachineKpiSpec]
    orders: Mapping[str, OrderSpec]
    energy: EnergySpec | None = None    # tariff, cap, peak window; None: kWh only

    @classmethod
    def from_config(cls, cfg: CellConfig) -> KpiSpec:
        return cls(
            machines={m.id: MachineKpiSpec(m.power_kw.idle, m.power_kw.busy, dict(m.capabilities),
                                           PowerModel.from_draw(m.power_kw))
                      for m in cfg.machines},
            orders={o.id: OrderSpec(o.quantity, tuple(op.capability
                                                      for op in cfg.product(o.product).routing))
                    for o in cfg.orders},
            energy=None if cfg.energy is None else EnergySpec.from_settings(cfg.energy))

    def capability(self, order: str, task: str) -> str | None:
        """The capability an operation task ``ORDER/K`` asks for, or None if unknown."""
        o = self.orders.get(order)
        k = self.op_index(task)
        return o.routing[k] if o is not None and k is not None and k < len(o.routing) else None

    def op_index(self, task: str) -> int | None:
        """The routing position of an operation task ``ORDER/K``; None for anything else."""
        _, _, k = task.rpartition("/")
        return int(k) if k.isdigit() else None

    def ideal_s(self, machine: str, order: str, task: str) -> float | None:
        """Nominal processing time of the task on the machine (no setup), or None if unknown."""
        o = self.orders.get(order)
        m = self.machines.get(machine)
        k = self.op_index(task)
        if o is None or m is None or k is None or k >= len(o.routing):
            return None
        per_unit = m.capabilities.get(o.routing[k])
        return None if per_unit is None else per_unit * o.quantity
