"""The recorder's own cost per negotiation round, in a loop: ``python -m ops.bench.negotiation_recorder``.

``autocell bench negotiation --decision-log`` measures what recording costs the
caller end to end, where the machine's load and the bidders' recording blur
it.  This measures the recorder alone, per part, for both formats: a caller
round as the bench makes it (a call for proposals sent to 20 bidders, then
their 20 proposals, each handed over as its signed envelope, as a host's bus
does) fed to a decision log in a loop, with process CPU time around each
part — the call's entry, the 20 proposals on the message path, and what the
seals do later (deferred encoding, hashing, writing).  ADR 67 quotes it.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from typing import Any

from agents.protocol.actions import Send
from agents.protocol.envelope import Opener, Sealer
from agents.protocol.messages import CallForProposals, Message, Proposal
from agents.runtime.journal import Inbound
from agents.runtime.recorder import DecisionLog
from agents.runtime.segment_log import SegmentLog
from security.crypto import SigningKey
from security.keystore import ephemeral_cell

CALLER = "o-1"

_Round = tuple[CallForProposals, list[tuple[Message, bytes, bytes]]]


def _rounds(n: int, bidders: int) -> tuple[list[str], list[_Round]]:
    """``n`` rounds of a call to ``bidders`` and their proposals, sealed and opened."""
    ids = [f"m{i}" for i in range(bidders)]
    cell = ephemeral_cell({CALLER: "order", **{b: "machine" for b in ids}}, seed=b"recorder")
    opener = Opener(cell.trust, None)
    sealers = {b: Sealer(b, cell.keys[b], epoch=7, random_bytes=os.urandom) for b in ids}
    out = []
    for k in range(n):
        task = f"{CALLER}/{k}"
        cfp = CallForProposals(task=task, order=CALLER, kind="operation", capability="mill",
                               op="op-1", quantity=1, earliest_start_at=1.0, due_at=100.0,
                               reply_by_at=1e12)
        proposals = []
        for i, b in enumerate(ids):
            p = Proposal(task=task, kind="operation", start_at=1.0, finish_at=10.0 + i,
                         hold_until_at=3.0, cost={"queue_s": 0.0, "processing_s": 9.0 + i})
            frames = sealers[b].seal(CALLER, p, 1.5, task)
            proposals.append((opener.open(frames, 1.5), bytes(frames[1]), bytes(frames[2])))
        out.append((cfp, proposals))
    return ids, out


def measure(cls: type[DecisionLog], ids: list[str], rounds: list[_Round]) -> dict[str, float]:
    """µs of process CPU per round for each part, recording ``rounds`` with ``cls``."""
    log = cls(tempfile.TemporaryFile(), SigningKey.generate(), host="bench", run={},
              wall_clock=time.time, segment_entries=10 ** 9)
    # one seal, at the end, so what seals do is a part of its own (a host seals every
    # 1000 entries: the same work, spread over the proposals)
    sends = [[Send(b, cfp, cfp.task) for b in ids] for cfp, _ in rounds]
    inputs = [[Inbound(m, 1.5) for m, _, _ in ps] for _, ps in rounds]
    t0 = time.process_time()
    for k in range(len(rounds)):
        log.on_decision(CALLER, None, sends[k], 1.0, None)
    t1 = time.process_time()
    for (_, ps), ins in zip(rounds, inputs):
        for (m, payload, sig), inp in zip(ps, ins):
            log.on_wire([m], payload, sig)
            log.on_decision(CALLER, inp, (), 1.5, None)
    t2 = time.process_time()
    log.close()
    t3 = time.process_time()
    log.sink.close()
    per = 1e6 / len(rounds)
    return {"call_entry_us": round((t1 - t0) * per, 1),
            "proposals_us": round((t2 - t1) * per, 1),
            "seal_us": round((t3 - t2) * per, 1),
            "total_us": round((t3 - t0) * per, 1)}


def run(rounds: int = 200, bidders: int = 20, repeats: int = 5) -> dict[str, Any]:
    """The two formats alternated ``repeats`` times; the median of each part."""
    ids, rs = _rounds(rounds, bidders)
    got: dict[str, list[dict[str, float]]] = {"/2": [], "/3": []}
    for _ in range(repeats):
        got["/2"].append(measure(DecisionLog, ids, rs))
        got["/3"].append(measure(SegmentLog, ids, rs))
    return {"rounds": rounds, "bidders": bidders, "repeats": repeats,
            "load_average_1m": round(os.getloadavg()[0], 2),
            **{fmt: {k: sorted(x[k] for x in xs)[len(xs) // 2] for k in xs[0]}
               for fmt, xs in got.items()}}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m ops.bench.negotiation_recorder",
                                description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--rounds", type=int, default=200)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args(argv)
    print(json.dumps(run(a.rounds, repeats=a.repeats)))


if __name__ == "__main__":
    main()
