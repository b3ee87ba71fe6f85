"""``bench plant``'s two loads (ADR 62): ``burst`` commands every machine in one instant,
``steady`` runs each machine's jobs back to back with a seeded exponential gap, as in a
running cell.  Both against asyncua's emulator (the quicker to start), a few jobs each: the
figures are the bench's business, these only check what it counts and reports."""

from __future__ import annotations

import pytest
from test_opcua_backend import STACKS

from ops.bench import plant

pytestmark = [pytest.mark.opcua, pytest.mark.slow, pytest.mark.timeout(300)]
ASYNCUA = [s for s in STACKS if s.id == "asyncua"]


@pytest.mark.parametrize("stack", ASYNCUA)
@pytest.mark.parametrize("load", ["burst", "steady"])
def test_each_load_times_every_job_but_the_warm_up_and_says_which_it_was(
        stack: str, load: str) -> None:
    r = plant.run(machines=2, rounds=3, stack=stack, load=load, gap_ms=20.0, seed=7)
    assert r["load"] == load and r["jobs"] == 6          # 2 machines x 3 rounds, r0 not counted
    assert r["gap_ms"] == (20.0 if load == "steady" else None)
    for key in ("backend", "machines", "p50_ms", "p99_ms", "events_per_s"):
        assert key in r
    assert 0 < r["p50_ms"] <= r["p99_ms"] <= r["max_ms"]


@pytest.mark.parametrize("stack", ASYNCUA)
def test_packml_units_on_the_asyncua_stack_under_the_steady_load(stack: str) -> None:
    r = plant.run(machines=2, rounds=2, stack=stack, profile="packml", load="steady",
                  gap_ms=10.0)
    assert r["profile"] == "packml" and r["jobs"] == 4


def test_a_wrong_load_or_gap_is_refused_before_anything_starts() -> None:
    with pytest.raises(ValueError, match="--load"):
        plant.run(load="trickle")
    with pytest.raises(ValueError, match="--gap-ms"):
        plant.run(load="steady", gap_ms=-1.0)

