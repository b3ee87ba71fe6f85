"""Power leases under the peak cap: the lease table, the manager, the protocol in a cell.

The table is pure (agents/energy/budget.py): a Hypothesis stream of requests,
releases, duplicates and expiries never grants more than the budget.  The
manager reclaims a lease nobody releases (a crashed machine).  Whole cells run
in virtual time with lost and duplicated messages and crashed agents, and the
cap invariant (sim_bridge/invariants.py) holds on their event logs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.base import Timing
from agents.energy.budget import PowerBudget, lease_key
from agents.energy.manager import EnergyManagerAgent
from agents.protocol.actions import Log, Send, SetTimer
from agents.protocol.messages import Message, PowerGrant, PowerRelease, PowerRequest
from agents.runtime.runner import NetworkModel
from ops.config.loader import load_cell

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "cell_configs" / "demo_cell_energy.yaml"

# --------------------------------------------------------------------------- the table

_ops = st.lists(st.tuples(
    st.sampled_from(["request", "request", "release", "advance"]),
    st.integers(0, 7),                      # task
    st.integers(0, 2),                      # epoch
    st.floats(0.0, 6.0, allow_nan=False),   # kW
    st.floats(0.1, 50.0, allow_nan=False),  # hold_s, or how far time advances
), max_size=80)


@given(_ops, st.floats(0.0, 12.0, allow_nan=False))
@settings(max_examples=300, deadline=None)
def test_a_stream_of_starts_never_exceeds_the_budget(ops: list, budget_kw: float) -> None:
    b = PowerBudget(budget_kw)
    now = 0.0
    released: set[str] = set()
    for op, task, epoch, kw, x in ops:
        key = lease_key(f"t{task}", epoch)
        if op == "request":
            before = b.leases.get(key)
            lease = b.request("m", f"t{task}", epoch, kw, x, now)
            if before is not None:                       # a duplicate: the same lease
                assert lease == before
            if key in released:                          # a late duplicate: never again
                assert lease is None and key not in b.leases
        elif op == "release":
            b.release(f"t{task}", epoch, now)
            released.add(key)
        else:
            now += x
            b.expire(now)
            assert all(lease.expires_at > now for lease in b.leases.values())
        assert b.in_use_kw <= budget_kw + 1e-9
        # nobody waits who would fit: freed budget is handed on at once
        assert all(w.kw > b.headroom_kw + 1e-9 for w in b.waiting.values()) or not b.waiting


def test_waiting_requests_are_granted_in_turn_when_budget_frees_up() -> None:
    b = PowerBudget(6.0)
    assert b.request("m1", "a", 0, 5.0, 100.0, 0.0) is not None
    assert b.request("m2", "b", 0, 4.0, 100.0, 1.0) is None
    assert b.request("m3", "c", 0, 1.0, 100.0, 2.0) is not None   # fits beside a: passes b
    granted = b.release("a", 0, 3.0)
    assert [g.key for g in granted] == ["b@0#0"] and granted[0].expires_at == 103.0
    assert b.in_use_kw == 5.0


# --------------------------------------------------------------------------- the manager


def _msg(sender: str, body: object, conv: str = "c") -> Message:
    return Message(sender, "energy", conv, b"id", 1, 1, 0.0, body)  # type: ignore[arg-type]


def _sent(actions: list) -> list[tuple[str, object]]:
    return [(a.to, a.body) for a in actions if isinstance(a, Send)]


def test_a_crashed_machines_lease_is_reclaimed_at_its_expiry() -> None:
    mgr = EnergyManagerAgent("energy", timing=Timing(), budget_kw=6.0, cap_kw=10.0)
    out = mgr.on_message(_msg("mill1", PowerRequest("o1/0", 1, 5.0, 60.0)), 0.0)
    assert _sent(out) == [("mill1", PowerGrant("o1/0", 1, 5.0, 60.0))]
    assert SetTimer("expiry", 60.0) in out
    # mill1 crashes for good: it never releases; lathe1 has to wait ...
    assert _sent(mgr.on_message(_msg("lathe1", PowerRequest("o2/0", 1, 4.0, 30.0)), 5.0)) == []
    # ... a duplicate of mill1's request is answered with the same lease, not a second one
    again = mgr.on_message(_msg("mill1", PowerRequest("o1/0", 1, 5.0, 60.0)), 6.0)
    assert _sent(again) == [("mill1", PowerGrant("o1/0", 1, 5.0, 60.0))]
    assert mgr.budget.in_use_kw == 5.0
    # ... until the lease expires and its budget goes to lathe1
    out = mgr.on_timer("expiry", 60.0)
    assert _sent(out) == [("lathe1", PowerGrant("o2/0", 1, 4.0, 90.0))]
    assert [a.event for a in out if isinstance(a, Log)] == ["power_reclaimed", "power_granted"]
    assert SetTimer("expiry", 90.0) in out


def test_release_is_idempotent_and_a_late_request_is_not_granted_again() -> None:
    mgr = EnergyManagerAgent("energy", timing=Timing(), budget_kw=6.0, cap_kw=10.0)
    mgr.on_message(_msg("mill1", PowerRequest("o1/0", 1, 5.0, 60.0)), 0.0)
    first = mgr.on_message(_msg("mill1", PowerRelease("o1/0", 1)), 10.0)
    assert [a.event for a in first if isinstance(a, Log)] == ["power_released"]
    assert mgr.on_message(_msg("mill1", PowerRelease("o1/0", 1)), 10.5) == []
    assert _sent(mgr.on_message(_msg("mill1", PowerRequest("o1/0", 1, 5.0, 60.0)), 11.0)) == []
    assert mgr.budget.in_use_kw == 0.0
    # another machine cannot release a lease it does not hold
    mgr.on_message(_msg("mill2", PowerRequest("o3/0", 1, 2.0, 60.0)), 12.0)
    assert mgr.on_message(_msg("lathe1", PowerRelease("o3/0", 1)), 13.0) == []
    assert mgr.budget.in_use_kw == 2.0


# --------------------------------------------------------------------------- whole cells


def _run(cfg, **kw):  # noqa: ANN001, ANN202
    from sim_bridge.report import build_report
    from sim_bridge.virtual import VirtualCell

    cell = VirtualCell(cfg, **kw)
    cell.run()
    return cell, build_report(cell)


AWARE = {"resource_strategy": "agents.energy.strategies:EnergyAwareResource",
         "order_strategy": "agents.energy.strategies:EnergyCost"}


@pytest.mark.parametrize("seed,aware", [(1, False), (2, False), (3, True)])
def test_lost_and_duplicated_messages_keep_the_cap(seed: int, aware: bool) -> None:
    cfg = load_cell(DEMO)
    cell, r = _run(cfg, seed=seed,
                   network=NetworkModel(latency_s=0.001, jitter_s=0.0005, loss=0.05,
                                        duplication=0.1, reorder=0.05),
                   **(AWARE if aware else {}))
    assert cell.stats.messages_lost > 0
    assert r["invariants"]["peak_cap_never_exceeded"], r["invariant_violations"]
    assert all(r["invariants"].values()), r["invariant_violations"]
    assert r["orders_completed"] == r["orders_total"]
    assert r["energy"]["cap_violations"] == 0


def test_crashed_agents_keep_the_cap_and_leases_are_reclaimed() -> None:
    from agents.cell.faults import AgentCrash, FaultScenario

    cfg = load_cell(DEMO)
    crashes = [AgentCrash(agent=a, at_s=at, down_s=down) for a, at, down in
               [("mill1", 400.0, 120.0), ("lathe1", 900.0, 90.0), ("energy", 1300.0, 5.0)]]
    cell, r = _run(cfg, faults=FaultScenario(name="crashes", crashes=crashes))
    assert all(r["invariants"].values()), r["invariant_violations"]
    assert r["orders_completed"] == r["orders_total"]
    evs = "\n".join(cell.events)
    assert '"ev":"power_granted"' in evs and '"ev":"power_wait"' in evs


def test_a_cap_no_operation_fits_under_is_refused_before_the_run() -> None:
    from agents.cell.build import build_agents
    from security.errors import ConfigurationError

    cfg = load_cell(DEMO)
    assert cfg.energy is not None
    low = cfg.model_copy(update={"energy": cfg.energy.model_copy(update={"peak_cap_kw": 9.0})})
    with pytest.raises(ConfigurationError, match="raise the cap to at least 10.2 kW"):
        build_agents(low, 1)


# --------------------------------------------------------------------------- gauges


def test_power_gauges_follow_the_run_and_the_cap() -> None:
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from ops.run import virtual_metrics
    from sim_bridge.report import build_report
    from sim_bridge.virtual import VirtualCell

    cell = VirtualCell(load_cell(DEMO))
    metrics = virtual_metrics(cell)
    seen: list[dict[str, float]] = []

    def scrape() -> dict[str, float]:
        text = generate_latest(metrics.registry).decode()
        return {s.name + "".join(f"/{v}" for v in s.labels.values()): s.value
                for fam in text_string_to_metric_families(text) for s in fam.samples}

    cell.run(until=900.0, progress=lambda *_: seen.append(scrape()))
    assert seen
    for s in seen:                      # cell power = sum of machines; headroom = cap - power
        machines = [v for k, v in s.items() if k.startswith("autocell_machine_power_kw/")]
        assert len(machines) == 5
        assert s["autocell_cell_power_kw"] == pytest.approx(sum(machines))
        assert s["autocell_cell_power_headroom_kw"] == pytest.approx(
            12.0 - s["autocell_cell_power_kw"])
        assert s["autocell_cell_power_headroom_kw"] >= -1e-9
    last = scrape()
    assert last["autocell_cell_energy_cost"] == pytest.approx(
        build_report(cell)["energy"]["cost"], abs=0.01)
    assert max(s["autocell_cell_power_kw"] for s in seen) > 3.9     # something ran


def test_the_headroom_gauge_follows_an_approved_raise_of_the_cap() -> None:
    """A supervisor raised the cap (the manager's ``cap_raised``): the headroom is under the
    raised cap until ``cap_restored``, then under the contracted one again."""
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from agents.cell.specs import EnergySpec, KpiSpec, MachineKpiSpec, OrderSpec, PowerModel
    from helpers.energy_tariffs import day_night
    from ops.metrics import ProcessMetrics

    class _Plant:
        locations = {"m": "bay"}

        def machine_state(self, machine: str) -> str:
            return "idle"

    now = [0.0]
    spec = KpiSpec(machines={"m": MachineKpiSpec(power=PowerModel(2.0, 9.0))},
                   orders={"o": OrderSpec(1, ("mill",))},
                   energy=EnergySpec(day_night("mon 06:00"), peak_cap_kw=10.0))
    metrics = ProcessMetrics(lambda: now[0])
    metrics.add_plant(_Plant(), spec, lambda: now[0])

    def headroom(t: float) -> float:
        now[0] = t
        text = generate_latest(metrics.registry).decode()
        [v] = [s.value for fam in text_string_to_metric_families(text) for s in fam.samples
               if s.name == "autocell_cell_power_headroom_kw"]
        return v

    metrics.on_record({"t": 0.0, "ev": "op_start", "machine": "m", "task": "o/0", "order": "o"})
    assert headroom(1.0) == pytest.approx(10.0 - 9.0)
    metrics.on_record({"t": 2.0, "ev": "cap_raised", "agent": "energy", "cap_kw": 14.0})
    assert headroom(3.0) == pytest.approx(14.0 - 9.0)
    metrics.on_record({"t": 4.0, "ev": "cap_restored", "agent": "energy", "cap_kw": 10.0})
    assert headroom(5.0) == pytest.approx(10.0 - 9.0)
