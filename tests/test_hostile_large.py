"""Large benchmark instances run, and say before they start what bounds them (issue 20,
class 2; docs/decisions.md, ADR 56).

What kept a legal 200 × 20 job shop from finishing was not the rehearsal but the
lease heartbeats: the rehearsed plan is awarded before anything runs, so every
operation holds a lease from the first award until it ends, renewed every
heartbeat interval — operations × makespan renewals, and the makespan of a job
shop grows with its jobs.  Above 500 operations an instance cell's interval is
its horizon / 500, so heartbeats grow with the operations only.  Up to 500
operations nothing changes (the golden hashes hold ft06 and mk01).
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from agents.cell.limits import MAX_LEASE_S
from ops.bench.random_instances import random_jsp
from ops.cli import main
from ops.config import load_cell_or_instance
from sim_bridge.instances import (
    HEARTBEAT_S,
    LEASE_HEARTBEATS,
    REHEARSAL_FULL_OPS,
    RENEWALS_PER_HORIZON,
    Instance,
    Operation,
    horizon,
    lease_timing,
)


def write_jsp(inst: Instance, path: Path) -> Path:
    """``inst`` (a classic job shop) in OR-Library ``.jsp`` form."""
    rows = [" ".join(f"{op.options[0][0]} {op.options[0][1]}" for op in ops) for ops in inst.jobs]
    path.write_text("\n".join([f"{inst.n_jobs} {inst.n_machines}", *rows]) + "\n")
    return path


def shop(jobs: int, machines: int, time: int) -> Instance:
    return Instance("s", jobs, machines, tuple(
        tuple(Operation(j, m, ((m, time),)) for m in range(machines)) for j in range(jobs)))


def test_up_to_500_operations_the_lease_timing_is_unchanged() -> None:
    assert lease_timing(shop(50, 10, 99)) == (1.0, 30.0)       # 500 operations, any times
    assert lease_timing(shop(1, 1, 1)) == (HEARTBEAT_S, HEARTBEAT_S * LEASE_HEARTBEATS)


def test_above_500_operations_a_lease_is_renewed_at_most_500_times() -> None:
    big = random_jsp(random.Random(1), 200, 20, "r200x20")
    assert big.n_operations > REHEARSAL_FULL_OPS
    beat, lease = lease_timing(big)
    assert beat == pytest.approx(horizon(big) / RENEWALS_PER_HORIZON) and beat > HEARTBEAT_S
    assert lease == beat * LEASE_HEARTBEATS
    assert lease_timing(shop(51, 10, 1)) == (1.0, 30.0)         # a short horizon: every unit
    huge = lease_timing(shop(60, 10, 10**6))                   # never past the lease limit
    assert huge[1] <= MAX_LEASE_S and huge[0] < huge[1]


def test_the_cell_of_a_large_instance_takes_the_timing_and_the_note_names_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ops.run import note_large_instance

    path = write_jsp(random_jsp(random.Random(1), 200, 20, "r200x20"), tmp_path / "r.jsp")
    cfg = load_cell_or_instance(path)
    beat = cfg.negotiation.heartbeat_interval_s
    assert beat > 1 and cfg.negotiation.lease_s == pytest.approx(beat * LEASE_HEARTBEATS)
    note_large_instance(cfg, str(path))
    err = capsys.readouterr().err
    assert "4000 operations of 200 jobs" in err and "renew each lease every 20" in err


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_a_200_by_20_job_shop_runs_to_the_end(tmp_path: Path) -> None:
    """The instance of issue 20, drawn by the benchmark's seeded generator (not stored):
    every order completes, heartbeats stay within operations × renewals, and the makespan
    is no worse than the best dispatch rule's by more than the rehearsal's latency."""
    import json

    from sim_bridge.baselines import simulate_rule
    from sim_bridge.schedule import makespan

    inst = random_jsp(random.Random(1), 200, 20, "r200x20")
    path = write_jsp(inst, tmp_path / "r200x20.jsp")
    report = tmp_path / "report.json"
    assert main(["run", str(path), "--quiet", "--report", str(report)]) == 0
    r = json.loads(report.read_text())
    assert r["orders_completed"] == 200 and all(r["invariants"].values())
    assert r["messages_by_type"]["heartbeat"] <= inst.n_operations * RENEWALS_PER_HORIZON
    best = min(makespan(simulate_rule(inst, rule)) for rule in ("MWKR", "SPT"))
    assert r["makespan"] <= best * 1.01     # measured: 10 731.42, MWKR 10 731
