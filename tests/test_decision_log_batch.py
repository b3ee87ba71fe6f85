"""The decision log's batch (agents/runtime/recorder.py): a message answered by no action
is numbered at once and encoded later, from Structs; its line must be the bytes the dict
form gives (docs/PROTOCOL.md §16: keys sorted, no spaces), in order with the entries
encoded at once, and the log must verify."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import cast

import msgspec
import pytest

from agents.base import Agent
from agents.protocol.actions import Log, Send, SetTimer
from agents.protocol.messages import CallForProposals, Message, Proposal
from agents.runtime.flight_log import verify_log
from agents.runtime.journal import Inbound, Timer
from agents.runtime.recorder import DecisionLog, canonical, input_json
from security.crypto import SigningKey


def _proposal(i: int, task: str) -> Message:
    p = Proposal(task=task, kind="operation", start_at=1.5, finish_at=31.25 + i,
                 hold_until_at=3.0, cost={"setup_s": 4.0, "queue_s": 0.0})
    return Message(f"m{i}", "o", task, bytes([i]) * 16, 7, 100 + i, 1.0, p)


def test_a_deferred_message_entry_is_the_dict_form_in_order(tmp_path: Path) -> None:
    sink = io.BytesIO()
    clock = iter(float(x) for x in range(1000, 2000))
    log = DecisionLog(sink, SigningKey.generate(), host="h", run={},
                      wall_clock=lambda: next(clock), segment_entries=4)
    cfp = CallForProposals(task="o/1", order="o", kind="operation", capability="mill",
                           op="op-1", quantity=1, earliest_start_at=1.0, due_at=99.0,
                           reply_by_at=2.0)
    log.on_decision("o", Timer("go", 1.0), [Send("m0", cfp, "o/1"), Send("m1", cfp, "o/1"),
                                            SetTimer("deadline", 2.0)], 1.0, None)
    msgs = [_proposal(i, "o/1") for i in range(5)]
    for m in msgs:                                   # deferred: no actions
        log.on_decision("o", Inbound(m, 1.5), (), 1.5, None)
    log.on_decision("o", Timer("deadline", 2.0), [Log("x", {"a": 1})], 2.0, None)
    log.close()
    path = tmp_path / "d.jsonl"
    path.write_bytes(sink.getvalue())
    assert verify_log(path).ok
    lines = sink.getvalue().split(b"\n")[:-1]
    ins = [json.loads(x) for x in lines if json.loads(x)["k"] == "in"]
    assert [e["in"]["kind"] for e in ins] == ["timer"] + ["message"] * 5 + ["timer"]
    assert [e["in"].get("seq") for e in ins[1:6]] == [100, 101, 102, 103, 104]
    for raw in lines:
        obj = json.loads(raw)
        if obj["k"] == "in" and obj["in"]["kind"] == "message":
            m = next(x for x in msgs if x.seq == obj["in"]["seq"])
            expected = {"k": "in", "t": 1.5, "agent": "o", "out": [],
                        "in": input_json(Inbound(m, 1.5)), "env": [m.sender, m.epoch, m.seq],
                        "wall_at": obj["wall_at"], "n": obj["n"], "prev": obj["prev"]}
            assert raw == canonical(expected)
    assert json.loads(lines[-1])["final"] is True


class _Earliest:
    name = "earliest"

    def score(self, cfp: CallForProposals, p: Proposal) -> float:
        return p.finish_at


class _Order:
    """An order as the recorder reads it: its strategy and what it weighed (``weighed``)."""

    strategy = _Earliest()

    def __init__(self, cfp: CallForProposals, held: list[tuple[str, Proposal]]) -> None:
        self.cfp, self.held = cfp, held

    def weighed(self, task: str) -> tuple[CallForProposals, list[tuple[str, Proposal]]] | None:
        return (self.cfp, self.held) if task == self.cfp.task else None


class _StrategyOnly:
    strategy = _Earliest()


@pytest.mark.parametrize("segmented", [False, True])
def test_an_awards_why_scores_what_the_order_weighed(segmented: bool) -> None:
    """ADR 95: an award's *why* scores the proposals the order agent held for the call, read
    from the agent (``weighed``) at the award, sorted by resource; the recorder keeps no
    proposals of its own (ADR 92 kept them until the award)."""
    from agents.protocol.messages import Award
    from agents.runtime.segment_log import SegmentLog

    kind = SegmentLog if segmented else DecisionLog
    log = kind(io.BytesIO(), SigningKey.generate(), host="h", run={})
    cfp = CallForProposals(task="o/1", order="o", kind="operation", capability="mill",
                           op="op-1", quantity=1, earliest_start_at=1.0, due_at=99.0,
                           reply_by_at=2.0)
    log.on_decision("o", Timer("go", 1.0), [Send("m0", cfp, "o/1#0"), Send("m1", cfp, "o/1#0"),
                                            Send("m2", cfp, "o/1#0")], 1.0, None)
    bids = [_proposal(i, "o/1") for i in range(3)]
    for m in bids:
        log.on_decision("o", Inbound(msgspec.structs.replace(m, conv="o/1#0"), 1.5), (), 1.5,
                        None)
    assert not hasattr(log, "_calls")
    # the order held m2 and m0 (m1's bid reached it after the deadline, say): those are scored
    held = [("m2", cast(Proposal, bids[2].body)), ("m0", cast(Proposal, bids[0].body))]
    award = [Send("m0", Award("o/1", 1, 30.0, 1.5), "o/1#0")]
    why = log._why("o", award, cast(Agent, _Order(cfp, held)))
    assert [c["resource"] for c in why[0]["candidates"]] == ["m0", "m2"]
    assert [c["score"] for c in why[0]["candidates"]] == [31.25, 33.25]
    assert why[0]["winner"] == "m0" and why[0]["strategy"] == "earliest"
    assert why[0]["candidates"][0]["cost"] == {"setup_s": 4.0, "queue_s": 0.0}
    # no why without a call the order knows, or from an agent that cannot say what it weighed
    other = [Send("m0", Award("o/9", 1, 30.0, 1.5), "o/9#0")]
    assert log._why("o", other, cast(Agent, _Order(cfp, held))) == []
    assert log._why("o", award, cast(Agent, _StrategyOnly())) == []
    log.close()
