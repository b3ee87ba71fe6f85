"""Seals at idle moments (agents/runtime/segment_log.py ``idle_seals``, ADR 95).

A host's format-/3 log seals a full segment when its transport has drained
its inbound socket (``Transport.on_idle``), not on the input that filled it,
so the 1–3 ms of a seal does not delay the answer to that input; past
``IDLE_SEAL_SLACK`` times the segment size it seals on the input anyway.
The log must verify and read the same whatever the segments' sizes.
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
from helpers import waiting

from agents.protocol.actions import Send, SetTimer
from agents.protocol.messages import Proposal
from agents.runtime.flight_log import read_lines, verify_log
from agents.runtime.journal import Inbound, Timer
from agents.runtime.segment_log import (
    DIGEST_BYTES,
    IDLE_SEAL_SLACK,
    IDLE_WORK_PARTS,
    SegmentLog,
)
from agents.runtime.transport import ZmqTransport
from security.crypto import SigningKey
from tests.test_decision_log_wire import _traffic


def _feed(log: SegmentLog, count: int, r: int = 0, traffic: list | None = None) -> None:
    """``count`` inputs: messages on the wire, half of them answered by a bid and a timer
    (``traffic``: the envelopes to take them from, else new ones)."""
    traffic = traffic or _traffic()
    for i in range(count):
        agent, msgs, payload, sig, answered = traffic[(r + i) % len(traffic)]
        m = msgs[0]
        log.on_wire(msgs, payload, sig)
        bid = Proposal(task=m.conv, kind="operation", start_at=1.0, finish_at=9.0,
                       hold_until_at=3.0, cost={"queue_s": float(r + i)})
        actions: list = ([Send(m.sender, bid, m.conv), SetTimer("hold", 3.0)] if (r + i) % 2
                         else [])
        log.on_decision(agent, Inbound(m, 1.0 + r + i), actions, 1.0 + r + i, None)


def test_a_full_segment_waits_for_idle_then_for_its_slack(tmp_path: Path) -> None:
    path = tmp_path / "idle.log"
    with path.open("wb") as f:
        log = SegmentLog(f, SigningKey.generate(), host="h", run={}, segment_entries=5)
        log.idle_seals = True
        _feed(log, 7)
        assert log.segments == 0            # full at 5, but nobody said idle
        log.idle()
        assert log.segments == 1 and log.n == 8     # all 7 in segment 1
        log.idle()
        assert log.segments == 1            # nothing due: idle is free
        _feed(log, 5 * IDLE_SEAL_SLACK + 1, r=100)
        assert log.segments == 2            # sealed on the input at 4 x 5, without idle
        log.on_decision("o-1", Timer("deadline", 500.0), [], 500.0, None)
        log.close()
    rep = verify_log(path)
    assert rep.ok and rep.segments == 3, rep.problem
    entries = [e for e in read_lines(path) if e.get("k") == "in"]
    assert [e["n"] for e in entries] == list(range(1, 7 + 21 + 2))
    assert sum(1 for e in entries if e["out"]) == 3 + 10


def test_without_idle_seals_a_segment_seals_on_the_input_that_fills_it() -> None:
    log = SegmentLog(io.BytesIO(), SigningKey.generate(), host="h", run={}, segment_entries=5)
    _feed(log, 7)
    assert log.segments == 1
    log.close()


def _log_bytes(key: SigningKey, traffic: list, count: int, idle_every: int | None) -> bytes:
    """A log of ``count`` inputs in segments of 8; ``idle_every``: the transport idles
    after every that many inputs (None: never, the seal does all the work)."""
    sink = io.BytesIO()
    log = SegmentLog(sink, key, host="h", run={}, segment_entries=8)
    log.idle_seals = idle_every is not None
    for i in range(count):
        _feed(log, 1, r=i, traffic=traffic)
        if idle_every is not None and i % idle_every == idle_every - 1:
            log.idle()
    log.close()
    return sink.getvalue()


def test_the_seals_work_done_at_idle_writes_the_same_bytes(tmp_path: Path) -> None:
    """Encoding, indexing and hashing a quarter of a segment at a time when the transport
    idles (ADR 96) writes exactly the log the seal's one pass writes."""
    key, traffic = SigningKey.generate(), _traffic()
    once = _log_bytes(key, traffic, 61, None)
    assert _log_bytes(key, traffic, 61, 1) == once     # idle after every input: same segments
    other = _log_bytes(key, traffic, 61, 3)    # sealed later (at idle), in other segments
    assert other != once
    logs = []
    for name, data in (("once", once), ("other", other)):
        (tmp_path / name).write_bytes(data)
        rep = verify_log(tmp_path / name)
        assert rep.ok, rep.problem
        logs.append([e for e in read_lines(tmp_path / name) if e.get("k") == "in"])
    assert logs[0] == logs[1] and len(logs[0]) == 61


def test_idle_moments_take_the_work_a_quarter_segment_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "parts.log"
    with path.open("wb") as f:
        log = SegmentLog(f, SigningKey.generate(), host="h", run={}, segment_entries=40)
        log.idle_seals = True
        part = 40 // IDLE_WORK_PARTS
        _feed(log, part - 1)
        log.idle()
        assert not log._digests and log._held     # less than a part: nothing done yet
        _feed(log, 1, r=50)
        log.idle()
        assert not log._held and len(log._seg) > 0
        assert len(log._digests) == DIGEST_BYTES * part     # every entry so far indexed
        _feed(log, 3 * part, r=100)
        log.idle()                                  # full: the seal finds a part to do
        assert log.segments == 1 and not log._digests
        log.close()
    rep = verify_log(path)
    assert rep.ok and rep.segments == 2, rep.problem
    assert [e["n"] for e in read_lines(path) if e.get("k") == "in"] == list(range(1, 41))


def test_idle_work_first_offers_the_core_to_another_process(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ADR 101: the log yields the CPU (``sched_yield``) before each piece of idle work, a
    part or a seal, and only then: an idle moment with nothing to do costs no system call."""
    import agents.runtime.segment_log as segment_log

    events: list[str] = []
    monkeypatch.setattr(segment_log, "_yield_cpu", lambda: events.append("yield"))
    with (tmp_path / "y.log").open("wb") as f:
        log = SegmentLog(f, SigningKey.generate(), host="h", run={}, segment_entries=40)
        log.idle_seals = True
        part = 40 // IDLE_WORK_PARTS
        _feed(log, part - 1)
        log.idle()
        assert events == []                         # nothing due: no yield
        _feed(log, 1, r=50)
        indexed = len(log._digests)
        log.idle()
        assert events == ["yield"] and len(log._digests) > indexed
        _feed(log, 3 * part, r=100)
        log.idle()                                  # the seal: one more
        assert events == ["yield", "yield"] and log.segments == 1
        log.close()


@pytest.mark.timeout(120)
def test_the_zeromq_transport_says_idle_once_it_has_drained_what_came() -> None:
    """A real PULL socket: every message is handled, in order, and after the last of them
    the transport calls ``on_idle`` (its socket is empty)."""
    async def scenario() -> tuple[list[object], int]:
        events: list[object] = []
        rx = ZmqTransport("tcp://127.0.0.1:*")
        tx = ZmqTransport("tcp://127.0.0.1:*")
        rx.on_idle = lambda: events.append("idle")
        ep = await rx.start(lambda item: events.append(bytes(item[0])))
        await tx.start(lambda item: None)
        for i in range(200):
            assert tx.send(ep, [i.to_bytes(2, "big")])
        await waiting.until("all 200 handled and an idle after them", lambda: (
            sum(1 for e in events if e != "idle") == 200 and events[-1] == "idle"),
            poll_s=0.005)
        await tx.close()
        await rx.close()
        return events, sum(1 for e in events if e == "idle")

    events, idles = asyncio.run(asyncio.wait_for(scenario(), waiting.EVENT_BOUND_S + 30))
    got = [e for e in events if e != "idle"]
    assert got == [i.to_bytes(2, "big") for i in range(200)]
    assert idles >= 1 and events[-1] == "idle"
