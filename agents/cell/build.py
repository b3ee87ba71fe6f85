"""Build the agents of a cell from its configuration — shared by every driver.

Also the other config-to-core translators: timing, roles and the escalation policy.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import TYPE_CHECKING

from agents.base import Agent, Timing
from agents.cell.tariff import TimeOfUse
from agents.energy.aware import MachineEnergy
from agents.energy.manager import ENERGY_MANAGER_ID, EnergyManagerAgent
from agents.energy.plan import (
    budget_kw,
    cap_escalation_of,
    cap_enforced,
    cap_problem,
    needs_of,
    remaining_work_s,
)
from agents.energy.rehearsal import plan_pricing
from agents.escalation.lifecycle import Deadlines
from agents.escalation.policy import OFF, EscalationPolicy, Rule
from agents.machine import MachineAgent
from agents.maintenance.crew import CREW_ID, Shifts, TechnicianCrewAgent
from agents.maintenance.stores import STORES_ID, StoresAgent
from agents.maintenance.window import windows_of
from agents.negotiation.strategies import order_strategy, resource_strategy
from agents.order import OrderAgent
from agents.robot import RobotAgent
from security.errors import ConfigurationError

if TYPE_CHECKING:
    from agents.cell.model import CellConfig
    from agents.maintenance.rul import HealthModel


def timing_of(cfg: CellConfig) -> Timing:
    n = cfg.negotiation
    return Timing(reply_deadline_s=n.reply_deadline_s, lease_s=n.lease_s,
                  heartbeat_interval_s=n.heartbeat_interval_s,
                  missed_heartbeats=n.missed_heartbeats,
                  retry_s=max(n.reply_deadline_s * 5, n.heartbeat_interval_s),
                  plan_ahead_ops=n.plan_ahead_ops, rehearsal_passes=n.rehearsal_passes,
                  rehearsal_pass_timeout_s=n.rehearsal_pass_timeout_s,
                  rehearsal_budget_share=n.rehearsal_budget_share,
                  interrupted_operation=n.interrupted_operation)


def roles_of(cfg: CellConfig) -> dict[str, str]:
    roles = {m.id: "machine" for m in cfg.machines}
    roles.update({r.id: "robot" for r in cfg.robots})
    roles.update({o.id: "order" for o in cfg.orders})
    if cap_enforced(cfg):
        roles[ENERGY_MANAGER_ID] = "energy"
    if cfg.maintenance is not None and cfg.maintenance.negotiate:
        roles[CREW_ID] = "maintenance"
        roles[STORES_ID] = "stores"
    return roles


def build_agents(cfg: CellConfig, seed: int, *,
                 order_strategy_name: str | None = None,
                 resource_strategy_name: str | None = None,
                 escalation: EscalationPolicy = OFF,
                 models: Mapping[str, HealthModel] | None = None,
                 plant: str = "") -> dict[str, Agent]:
    """One agent per machine, robot and order, each with its own seeded RNG.

    ``escalation``: the policy the agents escalate by (off unless the driver runs a
    console agent to escalate to, see :mod:`agents.escalation.console`); ``models``: the
    trained health models the negotiating machines' estimators start from
    (``maintenance.models``, else the cell file's figures); ``plant``: the plant identity
    the energy manager tells of a raised cap, for a driver whose plant keeps its own
    event log (``autocell up``; "" in virtual time, where the log is one)."""
    timing = timing_of(cfg)
    ostrat = order_strategy(order_strategy_name or cfg.negotiation.strategy.order)
    rstrat_name = resource_strategy_name or cfg.negotiation.strategy.resource
    agents: dict[str, Agent] = {}

    def rng(agent_id: str) -> random.Random:
        return random.Random(f"{seed}/agent/{agent_id}")

    capped = cap_enforced(cfg)
    if capped:
        problem = cap_problem(cfg)
        if problem is not None:
            raise ConfigurationError(f"{cfg.source}: {problem}")
    tariff = TimeOfUse.from_settings(cfg.energy) if cfg.energy is not None else None
    windows = windows_of(cfg, timing.retry_s, models)     # negotiated maintenance, else none
    for m in cfg.machines:
        # the machine's optional parts: power leases, negotiated maintenance, energy awareness
        extras: dict[str, object] = (
            {"power_manager": ENERGY_MANAGER_ID,
             "power_needs": needs_of(m.power_kw, m.capabilities, timing.lease_window_s)}
            if capped else {})
        rstrat = resource_strategy(rstrat_name)
        if m.id in windows:
            extras["maintenance"] = windows[m.id]
        if tariff is not None and getattr(rstrat, "energy_aware", False):
            extras["energy"] = MachineEnergy(
                tariff, m.power_kw, standby=bool(getattr(rstrat, "standby", True)),
                wake_early=not capped, shift_max_s=float(getattr(rstrat, "shift_max_s", 0.0)),
                min_saving=float(getattr(rstrat, "min_saving", 0.1)),
                plan_shift=bool(getattr(rstrat, "plan_shift", True)))
        agents[m.id] = MachineAgent(
            m.id, timing=timing, strategy=rstrat, location=m.location,
            capabilities=dict(m.capabilities), setup_s=m.setup_s,
            power_idle_kw=m.power_kw.idle, power_busy_kw=m.power_kw.busy,
            orders=[o.id for o in cfg.orders], rng=rng(m.id), escalation=escalation,
            mtbf_s=m.mtbf_s, **extras)  # type: ignore[arg-type]
    locations = [loc.id for loc in cfg.layout.locations]
    for r in cfg.robots:
        table = {(a, b): cfg.travel_s(r.id, a, b) for a in locations for b in locations if a != b}
        agents[r.id] = RobotAgent(r.id, timing=timing, strategy=resource_strategy(rstrat_name),
                                  location=r.home, travel_s=table, load_s=r.load_s, rng=rng(r.id),
                                  escalation=escalation)
    capable = {cap: sorted(cfg.capable_machines(cap)) for cap in sorted(cfg.capabilities())}
    min_proc = {cap: min(cfg.machine(m).capabilities[cap] for m in ms)
                for cap, ms in capable.items() if ms}
    machine_location = {m.id: m.location for m in cfg.machines}
    robots = [r.id for r in cfg.robots]
    assert cfg.layout.input is not None and cfg.layout.output is not None
    pricing = plan_pricing(agents, ostrat)
    for o in cfg.orders:
        product = cfg.product(o.product)
        agents[o.id] = OrderAgent(
            o.id, timing=timing, strategy=ostrat,
            routing=[(op.op, op.capability) for op in product.routing], quantity=o.quantity,
            release_at=o.release_at, due_at=o.due_at, priority=o.priority, capable=capable,
            robots=robots, machine_location=machine_location,
            input_location=cfg.layout.input, output_location=cfg.layout.output,
            min_processing_s=min_proc, machines=[m.id for m in cfg.machines],
            peers=[o.id for o in cfg.orders], rng=rng(o.id), escalation=escalation,
            pricing=pricing)
    if capped:
        assert cfg.energy is not None and cfg.energy.peak_cap_kw is not None
        agents[ENERGY_MANAGER_ID] = EnergyManagerAgent(
            ENERGY_MANAGER_ID, timing=timing, budget_kw=budget_kw(cfg),
            cap_kw=cfg.energy.peak_cap_kw, rng=rng(ENERGY_MANAGER_ID),
            cap_escalation=cap_escalation_of(cfg, escalation, timing.lease_window_s),
            due_at={o.id: o.due_at for o in cfg.orders}, remaining_s=remaining_work_s(cfg),
            plant=plant)
    if windows:
        assert cfg.maintenance is not None
        agents[CREW_ID] = TechnicianCrewAgent(
            CREW_ID, timing=timing, technicians=cfg.maintenance.technicians,
            grace_s=cfg.maintenance.window_grace_s, rng=rng(CREW_ID),
            shifts=Shifts(cfg.maintenance.shift_table(), cfg.maintenance.shift_period_s))
        agents[STORES_ID] = StoresAgent(STORES_ID, timing=timing, rule=cfg.maintenance.part,
                                        rng=rng(STORES_ID))
    return agents


def policy_of(cfg: CellConfig) -> EscalationPolicy:
    e = cfg.escalation

    def rule(r: object, threshold_s: float = 0.0, count: int = 0) -> Rule | None:
        return Rule(r.priority, threshold_s, count) if r.enabled else None  # type: ignore[attr-defined]

    return EscalationPolicy(
        no_capable_resource=rule(e.no_capable_resource, e.no_capable_resource.max_wait_s),
        late_reroute=rule(e.late_reroute, e.late_reroute.late_by_s),
        repeat_faults=(Rule(e.repeat_faults.priority, e.repeat_faults.window_s,
                            e.repeat_faults.count, e.repeat_faults.beyond_mtbf)
                       if e.repeat_faults.enabled else None),
        restart_intensity=rule(e.restart_intensity),
        quality_reject=rule(e.quality_reject, 0.0, e.quality_reject.count),
        reject_burst=rule(e.reject_burst, e.reject_burst.window_s, e.reject_burst.count),
        equipment_refuses=rule(e.equipment_refuses),
        deadlines=Deadlines(e.response_deadline_s, e.reescalate_every_s, e.final_deadline_s,
                            e.max_shelve_s),
        flood_count=e.flood.count, flood_window_s=e.flood.window_s)
