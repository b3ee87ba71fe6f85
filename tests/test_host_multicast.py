"""How the multi-process host turns an agent's Sends into envelopes (Host._execute/_send).

Consecutive ``Send`` actions of one agent carrying the *same body object* in
the same conversation (the order agent's cfp to every bidder) become one
multicast envelope; fault injection still decides per addressee, with the
very draws one ``_send`` per addressee makes.  The methods are driven on a
stand-in host (a bus and a loop that record), so every decision is visible.
"""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from agents.protocol.actions import CancelTimer, Command, Log, Send, SetTimer
from agents.protocol.messages import CallForProposals, PlantCommand, Rejection
from agents.runtime.host import SIM_ID, Host
from agents.cell.faults import FaultScenario

ROOT = Path(__file__).resolve().parents[1]


def cfp(task: str = "o1/0") -> CallForProposals:
    return CallForProposals(task=task, order="o1", kind="operation", capability="mill", op="op",
                            quantity=1, earliest_start_at=0.0, due_at=1.0, reply_by_at=1.0)


class RecordingBus:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, Any, str]] = []

    def send(self, sender: str, to: str, body: Any, conv: str = "") -> bool:
        self.calls.append(("send", to, body, conv))
        return True

    def send_many(self, sender: str, tos: list[str], body: Any, conv: str = "") -> int:
        self.calls.append(("send_many", list(tos), body, conv))
        return len(tos)


class RecordingLoop:
    def __init__(self) -> None:
        self.later: list[tuple[float, Any]] = []

    def call_later(self, delay: float, fn: Any, *args: Any) -> None:
        self.later.append((delay, lambda: fn(*args)))


def stand_in(faults: FaultScenario | None = None, seed: int = 7, now: float = 10.0) -> Any:
    host = SimpleNamespace(faults=faults, bus=RecordingBus(), _loop=RecordingLoop(),
                           _rng=random.Random(seed), observer=None, _timers={},
                           clock=SimpleNamespace(now=lambda: now, speed=2.0), sent=[],
                           timers=[], records=[])
    host._send = lambda *a: Host._send(host, *a)
    host._set_timer = lambda agent, key, at: host.timers.append((agent, key, at))
    host.record = lambda event, **fields: host.records.append(event)
    return host


def test_execute_coalesces_one_body_object_in_one_conversation() -> None:
    host = stand_in()
    host._send = lambda sender, to, body, conv: host.sent.append((sender, to, body, conv))
    call, other_call, same_value = cfp(), cfp("o1/1"), cfp()
    assert same_value == call and same_value is not call
    actions = [
        Send("m1", call, "c"), Send("m2", call, "c"), Send("m3", call, "c"),
        Send("m4", call, "other conv"),                  # another conversation: not joined
        Send("m5", same_value, "other conv"),            # equal, but another object
        SetTimer("deadline", 5.0),
        Send("m6", call, "c"),                           # not consecutive with m1..m3
        Send("r1", other_call, "c1"), Send("r2", other_call, "c1"),
        Send("o2", Rejection("t"), "c2"), Send("o3", Rejection("t"), "c2"),   # two objects
        CancelTimer("x"), Log("hello", {}),
        Command("start_operation", "m1", "o1/0", {}),
    ]
    agent = SimpleNamespace(id="o1")
    Host._execute(host, agent, actions)
    assert [(to, conv) for _, to, _, conv in host.sent] == [
        (["m1", "m2", "m3"], "c"), (["m4"], "other conv"), (["m5"], "other conv"),
        (["m6"], "c"), (["r1", "r2"], "c1"), (["o2"], "c2"), (["o3"], "c2"),
        (SIM_ID, "")]
    assert host.sent[0][2] is call and isinstance(host.sent[-1][2], PlantCommand)
    assert host.timers == [("o1", "deadline", 5.0)] and host.records == ["hello"]


def test_without_faults_several_addressees_are_one_send_many() -> None:
    host = stand_in()
    body = cfp()
    Host._send(host, "o1", ["m1", "m2"], body, "c")
    Host._send(host, "o1", ["m3"], body, "c")
    Host._send(host, "o1", "m4", body, "c")
    assert host.bus.calls == [("send_many", ["m1", "m2"], body, "c"), ("send", "m3", body, "c"),
                              ("send", "m4", body, "c")]


FAULTS = FaultScenario.model_validate({
    "name": "lossy", "network": {"loss": 0.25, "duplication": 0.2, "reorder": 0.2,
                                 "jitter_s": 0.0},
    "partitions": [{"agents": ["m3"], "at_s": 5.0, "duration_s": 10.0}]})


@pytest.mark.parametrize("seed", range(20))
def test_faults_decide_per_addressee_with_the_same_draws(seed: int) -> None:
    """One list through ``_send`` = one ``_send`` per addressee, but the ones sent now
    share one envelope."""
    tos = ["m1", "m2", "m3", "m4", "m5", "m6", SIM_ID]
    body = cfp()
    one_by_one = stand_in(FAULTS, seed)
    for t in tos:
        Host._send(one_by_one, "o1", t, body, "c")
    together = stand_in(FAULTS, seed)
    Host._send(together, "o1", tos, body, "c")
    assert one_by_one._rng.random() == together._rng.random()     # same number of draws

    now_single = [to for kind, to, _, _ in one_by_one.bus.calls if kind == "send"]
    calls = list(together.bus.calls)
    assert len(calls) <= 1
    now_together: list[str] = []
    if calls:
        kind, to, got_body, _ = calls[0]
        assert got_body is body
        now_together = to if kind == "send_many" else [to]
        assert (kind == "send_many") == (len(now_single) > 1)
    assert now_together == now_single
    assert "m3" not in now_together                     # the partition cut it off
    assert [d for d, _ in together._loop.later] == [d for d, _ in one_by_one._loop.later]
    for (_, a), (_, b) in zip(together._loop.later, one_by_one._loop.later, strict=True):
        a()
        b()
    assert together.bus.calls[len(calls):] == one_by_one.bus.calls[len(now_single):]


def test_the_fault_draws_do_drop_delay_and_send_now() -> None:
    """Over the seeds above, each fate happened at least once (the test is not vacuous)."""
    fates = {"dropped": 0, "later": 0, "multicast": 0}
    tos = ["m1", "m2", "m4", "m5", "m6"]
    for seed in range(20):
        host = stand_in(FAULTS, seed)
        Host._send(host, "o1", tos, cfp(), "c")
        now = list(host.bus.calls)
        sent_now = sum(len(c[1]) if c[0] == "send_many" else 1 for c in now)
        fates["multicast"] += any(c[0] == "send_many" for c in now)
        fates["later"] += bool(host._loop.later)
        fates["dropped"] += sent_now + len(host._loop.later) < len(tos)
    assert all(fates.values()), fates


# -- the real thing: hosts of the demo cell on ZeroMQ, in one process -----------------------

@pytest.mark.slow
@pytest.mark.timeout(120)
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
        deadline = time.monotonic() + 90
        while not done() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
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
