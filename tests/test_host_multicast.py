"""Multicast envelopes between real hosts on ZeroMQ.

The grouping rule itself (consecutive ``Send`` actions of one body object in
one conversation; the network model deciding per addressee) is the runner's
and is tested in tests/test_runner.py; here real Host objects carry it out.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.waiting import NotYet, until

from agents.protocol.messages import CallForProposals
from agents.runtime.host import Host

ROOT = Path(__file__).resolve().parents[1]


def cfp(task: str = "o1/0") -> CallForProposals:
    return CallForProposals(task=task, order="o1", kind="operation", capability="mill", op="op",
                            quantity=1, earliest_start_at=0.0, due_at=1.0, reply_by_at=1.0)


# -- the real thing: hosts of the demo cell on ZeroMQ, in one process -----------------------

@pytest.mark.slow
def test_hosts_send_each_call_for_proposals_as_one_multicast(tmp_path: Path) -> None:
    """The demo cell's first orders, with its machines split over two hosts, run on real
    Host objects over tcp loopback: order agents' cfps leave as multicast envelopes, both
    machine hosts accept them, nothing is rejected, and the orders complete."""
    import asyncio
    import time

    import yaml

    from agents.runtime.host import CellClock
    from ops.bench.healing import loopback_cell
    from ops.config import load_cell
    from ops.supervisor import ensure_keys
    from sim_bridge.remote import PlantServer

    demo = tmp_path / "demo.yaml"
    data = yaml.safe_load((ROOT / "cell_configs" / "demo_cell.yaml").read_text())
    for h in data["hosts"]:
        if h["name"] == "machines":
            h["agents"] = ["mill1", "lathe1", "drill1"]
    data["hosts"].append({"name": "machines2", "endpoint": "tcp://127.0.0.1:1",
                          "agents": ["mill2", "station1"]})
    demo.write_text(yaml.safe_dump(data, sort_keys=False))
    cfg = load_cell(loopback_cell(demo, tmp_path, orders=3))
    state = tmp_path / "state"
    state.mkdir()
    keys = ensure_keys(cfg, state)
    clock = CellClock(time.time(), 50.0)
    hosts = {h.name: Host(cfg, h.name, keys_dir=keys, state_dir=state, clock=clock)
             for h in cfg.hosts}
    plant = PlantServer(cfg, keys_dir=keys, state_dir=state, clock=clock)

    def done() -> bool:
        orders = hosts["orders"].status()
        return len(orders["completed"]) == orders["orders"]

    async def scenario() -> None:
        tasks = [asyncio.create_task(r.run()) for r in (plant, *hosts.values())]
        try:
            await until("every order completed", lambda: done() or NotYet(
                hosts["orders"].status()["completed"]), poll_s=0.1)
        finally:
            for r in (*hosts.values(), plant):
                r._stop.set()
            await asyncio.gather(*tasks)

    asyncio.run(scenario())
    assert done(), hosts["orders"].status()
    stats = {name: h.bus.stats for name, h in hosts.items()}
    assert stats["orders"].multicast_sent > 0
    assert stats["machines"].multicast_received > 0 and stats["machines2"].multicast_received > 0
    assert stats["logistics"].multicast_received > 0          # transport cfps to both AGVs
    assert all(not s.rejected for s in stats.values()), {n: s.rejected for n, s in stats.items()}
    # every cfp an order built reached each addressee as its own message
    assert stats["orders"].sent["cfp"] == sum(s.received["cfp"] for s in stats.values())
