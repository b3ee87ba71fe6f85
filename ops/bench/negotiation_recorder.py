"""The recorder's own cost per negotiation round, in a loop: ``python -m ops.bench.negotiation_recorder``.

``autocell bench negotiation --decision-log`` measures what recording costs the
caller end to end, where the machine's load and the bidders' recording blur
it.  This measures the recorder alone, per part, for both formats: a caller
round as the bench makes it (a call for proposals sent to 20 bidders, then
their 20 proposals, each handed over as its signed envelope, as a host's bus
does) fed to a decision log in a loop, with process CPU time around each
part — the call's entry, the 20 proposals on the message path, and what the
seals do later (deferred encoding, hashing, writing).  ADR 67 quotes it.

It also measures a bidders' process's side of a round (``bidders_us``): one
call for proposals multicast to half the bidders, each of which answers with
its proposal — an entry *with* an action per bidder, encoded at once.  ADR 74
made that path flat (a Struct, no dict, no layers of calls); ``/4 before``
is the segment format (now /4) with those entries built as before (the /2
dict, through the base class's hook), the same bytes, for the comparison in
one process.

``--virtual CELL`` instead measures what each format costs a virtual run
(``autocell run``): the run's process CPU with recording off, in ``/2`` (what
``run --decision-log`` writes) and in ``/4``, alternated — the figure behind
docs/flight-recorder.md "Why `autocell run` keeps /2".

``--cold`` measures the caller's recorder as its process meets it (ADR 105): each
proposal opened (its signature verified, its body decoded) just before its hook, and
``--evict-mb`` megabytes touched once a round, one byte a cache line, as the other
processes sharing its cores and the kernel do between two of its wake-ups; rounds with
the log and without it alternated, the log kept as a host keeps it (sealed and worked at
idle moments, here once a round).  The difference per round is the recorder's, between
the other work a caller does: closer to what it costs in the process than the plain loop
(ADR 105 has both).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from agents.base import Agent
from agents.protocol.actions import Action, Send
from agents.protocol.envelope import Opener, Sealer
from agents.protocol.messages import CallForProposals, Message, Proposal
from agents.runtime.journal import Inbound, Input
from agents.runtime.recorder import DecisionLog, input_json
from agents.runtime.segment_log import SegmentLog
from security.crypto import SigningKey
from security.keystore import ephemeral_cell

CALLER = "o-1"

_Round = tuple[CallForProposals, list[tuple[Message, bytes, bytes]]]


_Sealed = tuple[CallForProposals, list[list[bytes]]]


def _sealed_rounds(n: int, bidders: int) -> tuple[list[str], Opener, list[_Sealed]]:
    """``n`` rounds of a call to ``bidders`` and their proposals' envelopes (frames), sealed
    by the bidders' keys, with an opener that trusts them."""
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
        out.append((cfp, [[bytes(f) for f in sealers[b].seal(CALLER, Proposal(
            task=task, kind="operation", start_at=1.0, finish_at=10.0 + i,
            hold_until_at=3.0, cost={"queue_s": 0.0, "processing_s": 9.0 + i}), 1.5, task)]
            for i, b in enumerate(ids)]))
    return ids, opener, out


def _rounds(n: int, bidders: int) -> tuple[list[str], list[_Round]]:
    """``n`` rounds of a call to ``bidders`` and their proposals, sealed and opened."""
    ids, opener, sealed = _sealed_rounds(n, bidders)
    return ids, [(cfp, [(opener.open(frames, 1.5), frames[1], frames[2]) for frames in fs])
                 for cfp, fs in sealed]


class DictEntries(SegmentLog):
    """The segment format's hook as it was before ADR 74 (kept verbatim for the comparison):
    an entry with actions is built as the /2 dict through the base class; the same bytes
    (tests/test_decision_log_segments.py), the slower path."""

    def on_decision(self, agent_id: str, cause: Input | None, actions: Sequence[Action],
                    now: float, agent: Agent | None) -> None:
        if actions or type(cause) is not Inbound:
            DecisionLog.on_decision(self, agent_id, cause, actions, now, agent)
            return
        m = cause.msg
        self._now = now
        wall_at = None if self.wall_clock is None else self.wall_clock()
        w = self.tap.signed
        if w is not None:
            for x in w[0]:
                if x is m:
                    self._held.append((agent_id, now, m.sender, m.epoch, m.seq, w[1], w[2],
                                       wall_at))
                    self.n += 1
                    self.entries += 1
                    if self.n - self._segment_first >= self.segment_entries:
                        self._segment_full()
                    return
        entry: dict[str, Any] = {"k": "in", "t": now, "agent": agent_id,
                                 "in": input_json(cause), "out": (),
                                 "env": (m.sender, m.epoch, m.seq)}
        if wall_at is not None:
            entry["wall_at"] = wall_at
        self._write(entry)
        self.entries += 1
        if self.n - self._segment_first >= self.segment_entries:
            self._segment_full()


_BidRound = tuple[list[Message], bytes, bytes, list[tuple[Inbound, list[Action]]]]


def _bid_rounds(n: int, bidders: int) -> list[_BidRound]:
    """``n`` calls multicast to ``bidders`` local bidders, each answered by a proposal."""
    ids = [f"m{i}" for i in range(bidders)]
    cell = ephemeral_cell({CALLER: "order", **{b: "machine" for b in ids}}, seed=b"bidders")
    opener = Opener(cell.trust, None)
    sealer = Sealer(CALLER, cell.keys[CALLER], epoch=7, random_bytes=os.urandom)
    out = []
    for k in range(n):
        cfp = CallForProposals(task=f"{CALLER}/{k}", order=CALLER, kind="operation",
                               capability="mill", op="op-1", quantity=1, earliest_start_at=1.0,
                               due_at=100.0, reply_by_at=1e12)
        frames = sealer.seal(ids, cfp, 1.5, cfp.task)
        msgs = opener.open_envelope(frames, 1.5).for_local(set(ids))
        answers: list[tuple[Inbound, list[Action]]] = []
        for m in msgs:
            p = Proposal(task=cfp.task, kind="operation", start_at=1.0, finish_at=31.0,
                         hold_until_at=3.0, cost={"queue_s": 0.0, "setup_s": 4.0,
                                                  "processing_s": 30.0, "energy_kwh": 0.05})
            answers.append((Inbound(m, 1.5), [Send(m.sender, p, m.conv)]))
        out.append((msgs, bytes(frames[1]), bytes(frames[2]), answers))
    return out


def measure_bidders(cls: type[DecisionLog], rounds: list[_BidRound]) -> float:
    """µs of process CPU per round for a bidders' process recording with ``cls`` (its
    seals included, one every 1000 entries as on a host)."""
    log = cls(tempfile.TemporaryFile(), SigningKey.generate(), host="bench", run={},
              wall_clock=time.time)
    t0 = time.process_time()
    for msgs, payload, sig, answers in rounds:
        log.on_wire(msgs, payload, sig)
        for inp, actions in answers:
            log.on_decision(inp.msg.to, inp, actions, 1.5, None)
    log.close()
    t1 = time.process_time()
    log.sink.close()
    return round((t1 - t0) * 1e6 / len(rounds), 1)


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
    """The formats alternated ``repeats`` times; the median of each part.  The bidders'
    side is half of ``bidders`` in one process, as ``bench negotiation --processes 2``."""
    ids, rs = _rounds(rounds, bidders)
    bid = _bid_rounds(rounds, max(1, bidders // 2))
    got: dict[str, list[dict[str, float]]] = {"/2": [], "/4": [], "/4 before": []}
    order: list[tuple[str, type[DecisionLog]]] = [
        ("/2", DecisionLog), ("/4", SegmentLog), ("/4 before", DictEntries)]
    for k in range(repeats):
        # each in every place in turn, from a collected heap: the one after another
        # pays for its garbage otherwise (the same code measured 30 % apart)
        for fmt, cls in order[k % 3:] + order[:k % 3]:
            gc.collect()
            part = measure(cls, ids, rs)
            gc.collect()
            got[fmt].append({**part, "bidders_us": measure_bidders(cls, bid)})
    return {"rounds": rounds, "bidders": bidders, "repeats": repeats,
            "load_average_1m": round(os.getloadavg()[0], 2),
            **{fmt: {k: sorted(x[k] for x in xs)[len(xs) // 2] for k in xs[0]}
               for fmt, xs in got.items()}}


def virtual(cell_path: str, seed: int = 2, repeats: int = 3) -> dict[str, Any]:
    """CPU seconds of a virtual run of ``cell_path``: recording off, /2, /4 (medians of
    ``repeats`` alternations), the entries and the bytes each format wrote."""
    from ops.config import load_cell
    from ops.replay import run_header
    from sim_bridge.virtual import VirtualCell

    cfg = load_cell(cell_path)
    got: dict[str, list[float]] = {"off": [], "/2": [], "/4": []}
    size: dict[str, Any] = {}
    for _ in range(repeats):
        for fmt, cls in (("off", None), ("/2", DecisionLog), ("/4", SegmentLog)):
            cell = VirtualCell(cfg, seed=seed)
            with tempfile.TemporaryFile() as sink:
                log = None
                if cls is not None:
                    log = cls(sink, SigningKey.generate(), host="virtual",
                              run=run_header(cell))
                    cell.runner.recorder = log
                t0 = time.process_time()
                cell.run()
                if log is not None:
                    log.close()
                got[fmt].append(time.process_time() - t0)
                size[fmt] = {"entries": log.entries if log else 0, "bytes": sink.tell()}
    med = {k: sorted(v)[len(v) // 2] for k, v in got.items()}
    return {"cell": cell_path, "seed": seed, "repeats": repeats,
            "load_average_1m": round(os.getloadavg()[0], 2),
            **{k: {"cpu_s": round(med[k], 3), **size[k],
                   **({"cost_pct": round(100 * (med[k] / med["off"] - 1), 1)}
                      if k != "off" else {})} for k in got}}


def cold(rounds: int = 300, bidders: int = 20, repeats: int = 7, evict_mb: int = 8,
         parts: int | None = None) -> dict[str, Any]:
    """µs of process CPU per caller round with the recorder off and on (medians of
    ``repeats`` alternations), each proposal opened before its hook and ``evict_mb`` MB
    touched between rounds (module docstring); ``parts`` overrides
    :data:`~agents.runtime.segment_log.IDLE_WORK_PARTS` for the run."""
    from agents.runtime import segment_log

    ids, opener, rs = _sealed_rounds(rounds, bidders)
    big = bytearray(evict_mb << 20)
    saved = segment_log.IDLE_WORK_PARTS
    if parts is not None:
        segment_log.IDLE_WORK_PARTS = parts
    try:
        with tempfile.TemporaryFile() as sink:
            log = SegmentLog(sink, SigningKey.generate(), host="bench", run={},
                             wall_clock=time.time)
            log.idle_seals = True

            def once(record: bool) -> float:
                t0 = time.process_time()
                for cfp, proposals in rs:
                    sends = [Send(b, cfp, cfp.task) for b in ids]
                    if record:
                        log.on_decision(CALLER, None, sends, 1.0, None)
                    for frames in proposals:
                        m = opener.open(frames, 1.5)
                        cause = Inbound(m, 1.5)
                        if record:
                            log.tap.signed = ([m], frames[1], frames[2])
                            log.on_decision(CALLER, cause, (), 1.5, None)
                    if evict_mb:
                        _ = big[::64]   # a byte a line: the caches the others leave
                    if record:
                        log.idle()
                return (time.process_time() - t0) / rounds * 1e6

            got: dict[bool, list[float]] = {False: [], True: []}
            for k in range(repeats):
                for record in ((False, True) if k % 2 == 0 else (True, False)):
                    gc.collect()
                    got[record].append(once(record))
            log.close()
            entries = log.entries
    finally:
        segment_log.IDLE_WORK_PARTS = saved
    off, on = (sorted(got[x])[len(got[x]) // 2] for x in (False, True))
    return {"rounds": rounds, "bidders": bidders, "repeats": repeats, "evict_mb": evict_mb,
            "idle_work_parts": segment_log.IDLE_WORK_PARTS if parts is None else parts,
            "load_average_1m": round(os.getloadavg()[0], 2), "entries": entries,
            "off_us_per_round": round(off, 1), "on_us_per_round": round(on, 1),
            "recorder_us_per_round": round(on - off, 1)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m ops.bench.negotiation_recorder",
                                description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--rounds", type=int, help="rounds (default 200; 300 with --cold)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--virtual", metavar="CELL", help="measure a virtual run of CELL instead")
    p.add_argument("--seed", type=int, default=2)
    p.add_argument("--cold", action="store_true",
                   help="the caller's recorder on cold caches, each proposal opened first")
    p.add_argument("--evict-mb", type=int, default=8, metavar="MB",
                   help="with --cold: MB touched between rounds (0: none; default 8)")
    p.add_argument("--parts", type=int, metavar="N",
                   help="with --cold: the idle work in N parts of a segment (default 4)")
    a = p.parse_args(argv)
    if (a.rounds is not None and a.rounds < 1 or a.repeats < 1 or a.evict_mb < 0
            or a.parts is not None and a.parts < 1):
        p.error("--rounds, --repeats and --parts must be at least 1, --evict-mb at least 0")
    if a.cold:
        print(json.dumps(cold(a.rounds or 300, repeats=a.repeats, evict_mb=a.evict_mb,
                              parts=a.parts)))
        return
    print(json.dumps(virtual(a.virtual, a.seed, a.repeats) if a.virtual
                     else run(a.rounds or 200, repeats=a.repeats)))


if __name__ == "__main__":
    main()
