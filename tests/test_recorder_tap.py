"""The bus leaves each accepted envelope's signed frames in the decision log's tap (ADR 79).

``Bus.wire = log.tap``: per envelope the bus stores (messages, payload, signature) in
:class:`agents.runtime.recorder.WireTap` — an attribute store, no call — and the log
records an input from that envelope as those bytes.  Checked end to end on real buses
(in-memory transport): the log verifies, every input is recorded as its envelope, and
each recorded signature is the sender's (``verify_senders`` against the cell's
certificates), for a multicast answered by one addressee and not the other, and a unicast.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from agents.protocol.actions import Action, Log
from agents.protocol.envelope import Opener
from agents.protocol.messages import Award, CallForProposals, Message
from agents.runtime.bus import Bus
from agents.runtime.flight_log import read_lines, verify_log
from agents.runtime.journal import Inbound
from agents.runtime.segment_log import SegmentLog, read_entries_raw, verify_senders
from agents.runtime.transport import MemoryNetwork, MemoryTransport
from security.crypto import SigningKey
from security.keystore import ephemeral_cell

ROLES = {"o-1": "order", "m1": "machine", "m2": "machine"}
NOW = 1.5


def _record(path: Path, tap: bool) -> None:
    """o-1 multicasts a call to m1 and m2 (on another bus), then awards m1; the machines'
    bus records every input as a runner would, m1 answering the call with an action."""
    cell = ephemeral_cell(ROLES, seed=b"tap")

    def bus(net: MemoryNetwork, agents: list[str]) -> Bus:
        b = Bus(MemoryTransport(net), Opener(cell.trust, None), clock=lambda: NOW,
                random_bytes=os.urandom)
        for a in agents:
            b.add_identity(a, cell.keys[a], epoch=7)
        return b

    async def main() -> None:
        net = MemoryNetwork()
        orders, machines = bus(net, ["o-1"]), bus(net, ["m1", "m2"])
        with path.open("wb") as f:
            log = SegmentLog(f, SigningKey.generate(), host="machines", run={},
                             segment_entries=2)
            machines.wire = log.tap if tap else None
            got: list[Message] = []
            done = asyncio.Event()

            def handler(msg: Message) -> None:
                actions: list[Action] = []
                if msg.to == "m1" and isinstance(msg.body, CallForProposals):
                    actions = [Log("bid", {"task": msg.conv})]
                log.on_decision(msg.to, Inbound(msg, NOW), actions, NOW, None)
                got.append(msg)
                if len(got) == 3:
                    done.set()

            await orders.start(lambda msg: None)
            endpoint = await machines.start(handler)
            for a in ("m1", "m2"):
                orders.set_route(a, endpoint)
            cfp = CallForProposals(task="o-1/0", order="o-1", kind="operation",
                                   capability="mill", op="op-1", quantity=1,
                                   earliest_start_at=1.0, due_at=100.0, reply_by_at=9.0)
            assert orders.send_many("o-1", ["m1", "m2"], cfp, cfp.task) == 2
            assert orders.send("o-1", "m1", Award(task="o-1/0", award_epoch=1, lease_s=5.0),
                               cfp.task)
            await asyncio.wait_for(done.wait(), timeout=10.0)
            log.close()
            assert machines.stats.rejected == {} and machines.stats.handler_errors == 0
            await orders.close()
            await machines.close()

    asyncio.run(main())


def _in_kinds(path: Path) -> list[str]:
    """Each input entry's form on disk: a held record (a list) or its map's ``in`` kind."""
    out = []
    for _, obj in read_entries_raw(path):
        if isinstance(obj, list):
            out.append("held envelope")
        elif obj.get("k") == "in":
            out.append(obj["in"]["kind"])
    return out


def test_inputs_from_a_tapped_bus_are_recorded_as_their_senders_envelopes(
        tmp_path: Path) -> None:
    path = tmp_path / "tap.jsonl"
    _record(path, tap=True)
    assert verify_log(path).ok
    # m1's call (answered: encoded at once), m2's call (held), m1's award (held)
    assert _in_kinds(path) == ["envelope", "held envelope", "held envelope"]
    cell = ephemeral_cell(ROLES, seed=b"tap")
    assert verify_senders(path, cell.trust) == (3, None, "")
    inputs = [(e["agent"], e["in"]["type"], e["in"]["from"])
              for e in read_lines(path) if e["k"] == "in"]
    assert inputs == [("m1", "cfp", "o-1"), ("m2", "cfp", "o-1"), ("m1", "accept", "o-1")]


def test_without_the_tap_the_same_inputs_are_recorded_decoded(tmp_path: Path) -> None:
    tapped, plain = tmp_path / "tap.jsonl", tmp_path / "plain.jsonl"
    _record(tapped, tap=True)
    _record(plain, tap=False)
    assert verify_log(plain).ok
    assert _in_kinds(plain) == ["message"] * 3
    assert verify_senders(plain, ephemeral_cell(ROLES, seed=b"tap").trust)[0] == 0

    def strip(path: Path) -> list[dict]:      # message ids are random: all but the id
        return [{k: v for k, v in e["in"].items() if k != "id"}
                for e in read_lines(path) if e["k"] == "in"]

    assert strip(tapped) == strip(plain)
