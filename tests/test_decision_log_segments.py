"""Format /3 of the decision log (agents/runtime/segment_log.py, docs/PROTOCOL.md §16).

Entries are binary records in segments hashed whole; the per-entry index still lets
``audit verify`` name the first edited, removed or reordered entry, a forged seal, a
header edited, a segment removed and a log cut short.  Readers see the /2 dicts.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterator
import json
import struct
from pathlib import Path
from typing import Any

import msgspec
import pytest

from agents.protocol.actions import Log
from agents.runtime import recorder
from agents.runtime.flight_log import read_lines, verify_log
from agents.runtime.journal import Inbound, Timer
from agents.runtime.segment_log import SegmentLog
from ops.cli import main
from security.crypto import SigningKey
from tests.test_decision_log_wire import _traffic

_LEN = struct.Struct(">I")


def _log(path: Path, rounds: int = 4, segment_entries: int = 6,
         key: SigningKey | None = None) -> Path:
    with path.open("wb") as f:
        log = SegmentLog(f, key or SigningKey.generate(), host="h", run={"seed": 1},
                         segment_entries=segment_entries)
        for r in range(rounds):
            for agent, msgs, payload, sig, answered in _traffic():
                log.on_wire(msgs, payload, sig)
                actions = [Log("bid", {"round": r})] if answered else []
                log.on_decision(agent, Inbound(msgs[0], 1.5 + r), actions, 1.5 + r, None)
            log.on_decision("o-1", Timer("deadline", 2.0 + r), [], 2.0 + r, None)
            log.on_runtime("pause", "m1", 2.0 + r)
        log.close()
    return path


def _split(data: bytes) -> tuple[bytes, list[tuple[bytes, dict]]]:
    """The header line and each segment's (entries, seal)."""
    nl = data.index(b"\n") + 1
    head, pos, out = data[:nl], nl, []
    while pos < len(data):
        (elen,) = _LEN.unpack_from(data, pos)
        entries = data[pos + 4:pos + 4 + elen]
        (slen,) = _LEN.unpack_from(data, pos + 4 + elen)
        seal = msgspec.msgpack.decode(data[pos + 8 + elen:pos + 8 + elen + slen])
        out.append((entries, seal))
        pos += 8 + elen + slen
    return head, out


def _join(head: bytes, segments: list[tuple[bytes, dict]]) -> bytes:
    out = [head]
    for entries, seal in segments:
        s = msgspec.msgpack.encode(seal)
        out += [_LEN.pack(len(entries)), entries, _LEN.pack(len(s)), s]
    return b"".join(out)


def _bounds(seal: dict, entries: bytes) -> list[int]:
    offs = struct.unpack(f">{len(seal['offsets']) // 4}I", seal["offsets"])
    return [*offs, len(entries)]


def test_a_fresh_log_verifies_and_reads_as_the_json_forms(tmp_path: Path) -> None:
    path = _log(tmp_path / "d.log")
    assert recorder.is_decision_log(path)
    rep = verify_log(path)
    assert rep.ok and rep.segments == 5 and rep.entries == 25, rep
    lines = list(read_lines(path))
    assert lines[0]["format"] == "autocell-decision-log/4" and lines[0]["n"] == 0
    entries = [e for e in lines if e["k"] in ("in", "rt")]
    assert [e["n"] for e in entries] == list(range(1, 25))
    msgs = [e for e in entries if e["k"] == "in" and e["in"]["kind"] == "message"]
    assert len(msgs) == 16 and all(e["env"] == [e["in"]["from"], e["in"]["epoch"],
                                                e["in"]["seq"]] for e in msgs)
    assert [i["in"]["to"] for i in msgs[:4]] == ["m1", "m2", "o-1", "o-1"]
    assert msgs[0]["out"] == [["log", "bid", {"round": 0}]] and msgs[2]["out"] == []
    json.dumps(lines)       # the same JSON-able dicts as /2's reader gives
    assert main(["audit", "verify", str(path)]) == 0


def _tampered(tmp_path: Path, how: str, data: bytes | None = None) -> Path:
    if data is None:
        data = _log(tmp_path / "d.log").read_bytes()
    head, segs = _split(data)
    entries, seal = segs[1]                  # segment 2: entries 7..12
    b = _bounds(seal, entries)
    parts = [entries[x:y] for x, y in zip(b, b[1:])]
    if how == "edit":
        p = bytearray(parts[2])
        p[-3] ^= 0x01                        # a byte of entry 9, same length
        parts[2] = bytes(p)
    elif how == "remove":
        del parts[2]
    elif how == "reorder":
        parts[2], parts[3] = parts[3], parts[2]
    segs[1] = (b"".join(parts), seal)
    if how == "forge":
        seal["sig"] = SigningKey.generate().sign(b"something else")
    elif how == "drop_segment":
        del segs[1]
    elif how == "header":
        head = head.replace(b'"seed":1', b'"seed":2')
    out = tmp_path / f"{how}.log"
    out.write_bytes(_join(head, segs))
    return out


@pytest.mark.parametrize("how, bad, words", [
    ("edit", 9, "entry 9 edited"),
    ("remove", 9, "entry 9 was removed"),
    ("reorder", 9, "reordered"),
    ("forge", 7, "segment 2 (entries 7..12): the signature does not verify"),
    ("drop_segment", 7, "segments removed or reordered"),
    ("header", 0, "header was edited"),
])
def test_tampering_names_the_first_bad_entry(tmp_path: Path, capsys: pytest.CaptureFixture,
                                             how: str, bad: int, words: str) -> None:
    path = _tampered(tmp_path, how)
    rep = verify_log(path)
    assert not rep.ok and rep.bad_entry == bad and words in rep.problem, rep
    assert main(["audit", "verify", str(path), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["first_bad_entry"] == bad and out["kind"] == "decision_log"


FORMAT3_LOG = Path(__file__).parent / "data" / "decision-log-format3.log"
"""A log written by the format /3 writer (aa22565, ``_log(path, rounds=2)``): 13 entries in
three segments, its segment hash over the entries' bytes and 16-byte index digests."""


def test_a_format_4_seal_hashes_whole_digests_and_not_the_bytes_again(tmp_path: Path) -> None:
    """docs/PROTOCOL.md §16.4 computed here with hashlib alone: the index holds each entry's
    whole SHA-256, and the segment's hash is over the previous hash and the index."""
    import hashlib

    from security.crypto import Verifier

    data = _log(tmp_path / "d.log").read_bytes()
    head, segs = _split(data)
    header = json.loads(head)
    assert header["format"] == "autocell-decision-log/4"
    prev = hashlib.sha256(head.rstrip(b"\n")).hexdigest()
    for k, (entries, seal) in enumerate(segs, 1):
        b = _bounds(seal, entries)
        assert seal["digests"] == b"".join(hashlib.sha256(entries[x:y]).digest()
                                           for x, y in zip(b, b[1:]))
        want = hashlib.sha256(bytes.fromhex(prev) + seal["offsets"] + seal["digests"])
        assert seal["prev"] == prev and seal["hash"] == want.hexdigest()
        text = (f"autocell-decision-log/4 seal {k} {seal['first']} {seal['last']} "
                f"{int(seal['final'])} {seal['hash']}").encode()
        assert Verifier(bytes.fromhex(header["key"])).verify(text, seal["sig"])
        prev = seal["hash"]


def test_a_format_3_log_still_verifies_reads_and_names_its_first_bad_entry(
        tmp_path: Path) -> None:
    data = FORMAT3_LOG.read_bytes()
    assert data.startswith(b'{"format":"autocell-decision-log/3"')
    assert recorder.is_decision_log(FORMAT3_LOG)
    rep = verify_log(FORMAT3_LOG)
    assert rep.ok and rep.segments == 3 and rep.entries == 13, rep
    lines = list(read_lines(FORMAT3_LOG))
    assert [e["n"] for e in lines if e["k"] in ("in", "rt")] == list(range(1, 13))
    for how, bad, words in [("edit", 9, "entry 9 edited"), ("remove", 9, "was removed"),
                            ("reorder", 9, "reordered"),
                            ("forge", 7, "segment 2 (entries 7..12): the signature")]:
        rep = verify_log(_tampered(tmp_path, how, data))
        assert not rep.ok and rep.bad_entry == bad and words in rep.problem, (how, rep)


def test_a_format_4_seal_with_a_format_3_index_is_refused(tmp_path: Path) -> None:
    """16-byte digests in a /4 seal do not pass for an index (nor would they bind the bytes)."""
    data = _log(tmp_path / "d.log").read_bytes()
    head, segs = _split(data)
    entries, seal = segs[0]
    seal["digests"] = b"".join(seal["digests"][i:i + 16]
                               for i in range(0, len(seal["digests"]), 32))
    path = tmp_path / "x.log"
    path.write_bytes(_join(head, segs))
    rep = verify_log(path)
    assert not rep.ok and rep.bad_entry == 1 and "does not hold its 6 entries" in rep.problem


def test_an_edit_that_keeps_the_index_consistent_breaks_the_signature(tmp_path: Path) -> None:
    """A forger who rewrites an entry and its index digest is caught by the segment hash."""
    from agents.runtime.segment_log import index_digests

    data = _log(tmp_path / "d.log").read_bytes()
    head, segs = _split(data)
    entries, seal = segs[0]
    b = _bounds(seal, entries)
    p = bytearray(entries)
    p[b[3] - 3] ^= 0x01
    seal["digests"] = index_digests(bytes(p), b)
    segs[0] = (bytes(p), seal)
    path = tmp_path / "x.log"
    path.write_bytes(_join(head, segs))
    rep = verify_log(path)
    assert not rep.ok and rep.bad_entry == 1 and "signature does not verify" in rep.problem


def test_a_log_cut_short_is_named_from_its_unsigned_tail(tmp_path: Path) -> None:
    data = _log(tmp_path / "d.log").read_bytes()
    cut = tmp_path / "cut.log"
    cut.write_bytes(data[:-10])              # inside the final seal
    rep = verify_log(cut)
    assert not rep.ok and rep.bad_entry == 25 and "unsigned" in rep.problem, rep
    head, segs = _split(data)
    cut.write_bytes(_join(head, segs[:3]))   # whole segments, no final seal
    rep = verify_log(cut)
    assert not rep.ok and rep.bad_entry == 19 and "no final seal" in rep.problem, rep
    assert len([e for e in read_lines(cut) if e["k"] in ("in", "rt")]) == 18


def test_a_log_re_signed_with_another_key_fails_against_the_trusted_key(tmp_path: Path) -> None:
    path = _log(tmp_path / "d.log")
    assert verify_log(path).ok
    rep = verify_log(path, trusted_key=SigningKey.generate().public_key)
    assert not rep.ok and rep.bad_entry == 0 and "not the trusted key" in rep.problem


def test_a_decoded_message_and_an_empty_log_are_recorded(tmp_path: Path) -> None:
    """A message whose envelope was not handed over is kept in the map form; a log closed
    with no entries is one empty final segment."""
    sink = io.BytesIO()
    log = SegmentLog(sink, SigningKey.generate(), host="h", run={})
    (_, msgs, _, _, _), = _traffic()[2:3]
    log.on_decision("o-1", Inbound(msgs[0], 1.5), (), 1.5, None)
    log.close()
    path = tmp_path / "m.log"
    path.write_bytes(sink.getvalue())
    assert verify_log(path).ok
    (entry,) = [e for e in read_lines(path) if e["k"] == "in"]
    assert entry["in"]["kind"] == "message" and entry["in"]["from"] == "m1"
    empty = tmp_path / "e.log"
    with empty.open("wb") as f:
        SegmentLog(f, SigningKey.generate(), host="h", run={}).close()
    assert verify_log(empty).ok and verify_log(empty).segments == 1


def test_audit_verify_with_the_cells_certificates_names_the_first_forged_input(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A log can verify (the recording host signed it) and still hold an input its sender
    never signed: ``--certs`` checks each envelope against the cell's certificates."""
    import os
    import time

    from agents.protocol.envelope import Opener, Sealer
    from agents.protocol.messages import Proposal
    from security.keystore import KeyDir

    now = time.time()
    keys = KeyDir(tmp_path / "keys")
    keys.init(now)
    for agent, role in (("o-1", "order"), ("m1", "machine"), ("host-h", "host")):
        keys.issue(agent, role, now)
    opener = Opener(keys.trust_store(), None)
    sealer = Sealer("m1", keys.identity("m1")[0], epoch=1, random_bytes=os.urandom)

    def record(path: Path, forge_at: int | None, key: SigningKey | None = None) -> Path:
        with path.open("wb") as f:
            log = SegmentLog(f, key or keys.identity("host-h")[0], host="h", run={},
                             segment_entries=2, wall_clock=lambda: now)
            for i in range(5):
                p = Proposal(task=f"o-1/{i}", kind="operation", start_at=1.0, finish_at=9.0,
                             hold_until_at=3.0, cost={"queue_s": 0.0})
                frames = sealer.seal("o-1", p, now, f"o-1/{i}")
                msg = opener.open(frames, now)
                sig = bytes(frames[2]) if i != forge_at else bytes(64)
                log.on_wire([msg], bytes(frames[1]), sig)
                log.on_decision("o-1", Inbound(msg, 1.0), (), 1.0, None)
            log.close()
        return path

    good = record(tmp_path / "good.log", None)
    assert main(["audit", "verify", str(good), "--certs", str(tmp_path / "keys")]) == 0
    assert "5 inputs signed by their senders" in capsys.readouterr().out
    forged = record(tmp_path / "forged.log", 3)
    assert verify_log(forged).ok                 # the host's seals hold...
    assert main(["audit", "verify", str(forged), "--certs", str(tmp_path / "keys"),
                 "--json"]) == 1                 # ...but entry 4 is not m1's
    out = json.loads(capsys.readouterr().out)
    assert out["first_bad_entry"] == 4 and "forged" in out["problem"]
    assert out["inputs_signed_by_senders"] == 3
    # the same entries sealed with another key than host-h's: intact on their own (the
    # header names that key), not the host's with --certs
    other = record(tmp_path / "other.log", None, SigningKey.generate())
    assert main(["audit", "verify", str(other)]) == 0
    capsys.readouterr()
    assert main(["audit", "verify", str(other), "--certs", str(tmp_path / "keys"),
                 "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["first_bad_entry"] == 0 and "host-h's certificate key" in out["problem"]
    assert "inputs_signed_by_senders" not in out
    # a log of another host, or of a host the keys directory has no certificate for
    with (tmp_path / "x.log").open("wb") as f:
        SegmentLog(f, SigningKey.generate(), host="x", run={}).close()
    assert main(["audit", "verify", str(tmp_path / "x.log"), "--certs",
                 str(tmp_path / "keys")]) == 2
    assert "no certificate host-x" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["garbage_tail", "bad_entry", "bad_seal", "no_newline"])
def test_damaged_logs_are_refused_without_a_traceback(tmp_path: Path, damage: str,
                                                      capsys: pytest.CaptureFixture) -> None:
    data = _log(tmp_path / "d.log").read_bytes()
    head, segs = _split(data)
    if damage == "garbage_tail":
        data = data + b"\x00\x00\x00\x05abc"
    elif damage == "bad_entry":
        entries, seal = segs[0]
        segs[0] = (b"\xc1" + entries[1:], seal)      # 0xc1: never valid msgpack
        data = _join(head, segs)
    elif damage == "bad_seal":
        s = msgspec.msgpack.encode(segs[0][1])
        data = data.replace(s, b"\x93" + s[1:], 1)
    else:
        data = head.rstrip(b"\n")
    path = tmp_path / "bad.log"
    path.write_bytes(data)
    assert not verify_log(path).ok
    assert main(["audit", "verify", str(path)]) == 1
    assert main(["replay", str(path)]) in (1, 2)
    assert main(["explain", str(path), "o-1"]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_the_recorder_profile_runs_both_formats() -> None:
    from ops.bench.negotiation_recorder import run

    r = run(rounds=3, bidders=4, repeats=1)
    for fmt in ("/2", "/4", "/4 before"):
        assert set(r[fmt]) == {"call_entry_us", "proposals_us", "seal_us", "total_us",
                               "bidders_us"}
        assert r[fmt]["total_us"] > 0 and r[fmt]["bidders_us"] > 0


def test_the_cold_profile_records_every_round_it_measures_and_restores_the_parts() -> None:
    from agents.runtime import segment_log
    from ops.bench.negotiation_recorder import cold, main

    before = segment_log.IDLE_WORK_PARTS
    r = cold(rounds=4, bidders=3, repeats=3, evict_mb=1, parts=2)
    # 3 repeats of 4 rounds, each a call and 3 proposals, recorded in the "on" halves only
    assert r["entries"] == 3 * 4 * (1 + 3)
    assert r["off_us_per_round"] > 0 and r["on_us_per_round"] > 0
    assert abs(r["recorder_us_per_round"]
               - (r["on_us_per_round"] - r["off_us_per_round"])) <= 0.11    # each rounded
    assert r["idle_work_parts"] == 2 and segment_log.IDLE_WORK_PARTS == before
    with pytest.raises(SystemExit):
        main(["--cold", "--evict-mb", "-1"])


def test_the_virtual_run_profile_records_the_same_entries_in_both_formats() -> None:
    from ops.bench.negotiation_recorder import virtual

    root = Path(__file__).resolve().parents[1]
    r = virtual(str(root / "cell_configs" / "demo_cell.yaml"), seed=1, repeats=1)
    assert r["off"]["entries"] == 0 and r["/2"]["entries"] == r["/4"]["entries"] > 0
    assert r["/4"]["bytes"] > 0 and r["/2"]["bytes"] > 0
    assert all(r[k]["cpu_s"] > 0 for k in ("off", "/2", "/4"))


def _both_hooks(before: type, segment_entries: int, clock_from: int
                ) -> Iterator[tuple[type, SegmentLog, io.BytesIO]]:
    """Format /3's hook and ``before`` (the hook before ADR 74, through the /2 dict), one
    after the other, with the same key and wall clock: their files must be the same."""
    key = SigningKey.generate()
    for cls in (SegmentLog, before):
        sink = io.BytesIO()
        clock = iter(float(x) for x in range(clock_from, clock_from + 10_000))
        yield cls, cls(sink, key, host="h", run={"seed": 1}, wall_clock=lambda: next(clock),
                       segment_entries=segment_entries), sink


def test_the_flat_hot_path_writes_the_bytes_of_the_dict_entries() -> None:
    """ADR 74: a message entry with actions is encoded from a Struct, not a dict; the file
    must be byte for byte the dict form's — calls with *why*, awards, bids on the wire and
    decoded, paused agents' messages, timers (the same key and clock: Ed25519 signs the same)."""
    from agents.protocol.actions import Send, SetTimer
    from agents.protocol.messages import Award, CallForProposals, Message, Proposal

    class Strategy:
        name = "earliest_finish"

        def score(self, cfp: CallForProposals, p: Proposal) -> float:
            return p.finish_at

    class Order:
        strategy = Strategy()
        held: dict[str, tuple[CallForProposals, list[tuple[str, Proposal]]]] = {}

        def weighed(self, task: str) -> tuple[CallForProposals,
                                              list[tuple[str, Proposal]]] | None:
            return self.held.get(task)

    from ops.bench.negotiation_recorder import DictEntries   # the hook before ADR 74

    traffic = _traffic()        # random message ids: the same traffic for both
    outs = []
    for cls, log, sink in _both_hooks(DictEntries, segment_entries=5, clock_from=1000):
        for r in range(3):
            cfp = CallForProposals(task=f"o-1/{r}", order="o-1", kind="operation",
                                   capability="mill", op="op-1", quantity=1,
                                   earliest_start_at=1.0, due_at=100.0, reply_by_at=9.0)
            go = Message("m9", "o-1", f"o-1/{r}", bytes([r]) * 16, 3, r, 0.5, cfp)
            log.on_decision("o-1", Inbound(go, 1.0), [Send("m1", cfp, cfp.task),
                                                      Send("m2", cfp, cfp.task),
                                                      SetTimer("deadline", 9.0)], 1.0, Order())
            for agent, msgs, payload, sig, answered in traffic:
                if r != 1:
                    log.on_wire(msgs, payload, sig)
                m = msgs[0]
                acts = [Log("bid", {"round": r, "task": m.conv})] if answered else []
                log.on_decision(agent, Inbound(m, 1.5 + r), acts, 1.5 + r, Order())
            p = Proposal(task=f"o-1/{r}", kind="operation", start_at=1.0, finish_at=5.0,
                         hold_until_at=3.0, cost={"queue_s": 1.0})
            bid = Message("m1", "o-1", f"o-1/{r}", bytes([9]) * 16, 7, 50 + r, 1.6, p)
            award = Award(task=f"o-1/{r}", award_epoch=r + 1, lease_s=5.0)
            Order.held[cfp.task] = (cfp, [("m1", p)])     # what the order weighed
            if r == 2:      # the last bid in: awarded on the message input
                log.on_decision("o-1", Inbound(bid, 1.6), [Send("m1", award, cfp.task)],
                                1.6, Order())
                continue
            log.on_decision("o-1", Inbound(bid, 1.6), [], 1.6, Order())
            log.on_decision("o-1", Timer("deadline", 9.0), [Send("m1", award, cfp.task)],
                            9.0, Order())
            log.on_runtime("pause", "m1", 9.0)
        log.close()
        outs.append(sink.getvalue())
    assert outs[0] == outs[1]
    path_entries = [e for e in _entries_of(outs[0]) if e.get("why")]
    assert len(path_entries) == 3 and path_entries[0]["why"][0]["winner"] == "m1"


def _entries_of(data: bytes) -> list[dict]:
    _, segs = _split(data)
    out = []
    for entries, seal in segs:
        b = _bounds(seal, entries)
        out += [msgspec.msgpack.decode(entries[x:y]) for x, y in zip(b, b[1:])]
    return [e for e in out if isinstance(e, dict)]


def test_a_plant_event_is_recorded_as_the_plants_envelope(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Under ``up`` a plant event is a ``plant_event`` message signed by the plant process:
    the log keeps that envelope (``env`` names it), readers see the ``plant`` input the
    agent got, and ``--certs`` names a plant event the plant never signed."""
    import os
    import time

    from agents.base import PlantEventIn
    from agents.protocol.envelope import Opener, Sealer
    from agents.protocol.messages import PlantEvent
    from agents.runtime.journal import PlantIn
    from ops.replay import verify_decision_log
    from security.keystore import KeyDir

    now = time.time()
    keys = KeyDir(tmp_path / "keys")
    keys.init(now)
    for agent, role in (("sim", "sim"), ("m1", "machine"), ("host-h", "host")):
        keys.issue(agent, role, now)
    opener = Opener(keys.trust_store(), None)
    sealer = Sealer("sim", keys.identity("sim")[0], epoch=1, random_bytes=os.urandom)

    def record(path: Path, forge_at: int | None) -> Path:
        with path.open("wb") as f:
            log = SegmentLog(f, keys.identity("host-h")[0], host="h", run={},
                             segment_entries=2, wall_clock=lambda: now)
            for i in range(3):
                frames = sealer.seal("m1", PlantEvent("operation_done", "m1", f"o-1/{i}",
                                                      data={"quality": "ok"}), now, f"o-1/{i}")
                msg = opener.open(frames, now)
                log.tap.signed = ([msg], bytes(frames[1]),
                                  bytes(frames[2]) if i != forge_at else bytes(64))
                ev = PlantEventIn(msg.body.event, msg.body.resource, msg.body.task,
                                  msg.body.data)                  # as the host makes it
                log.on_decision("m1", PlantIn(ev, float(i)), [Log("finished", {"i": i})],
                                float(i), None)
            # a plant input with no envelope behind it (a driver without a bus) stays plain
            log.tap.signed = None
            log.on_decision("m1", PlantIn(PlantEventIn("repaired", "m1", "", {}), 9.0), [],
                            9.0, None)
            log.close()
        return path

    good = record(tmp_path / "good.log", None)
    entries = [e for e in read_lines(good) if e.get("k") == "in"]
    assert [e["in"] for e in entries[:3]] == [
        {"kind": "plant", "event": "operation_done", "resource": "m1", "task": f"o-1/{i}",
         "data": {"quality": "ok"}} for i in range(3)]
    assert [e["env"][0] for e in entries[:3]] == ["sim"] * 3 and "env" not in entries[3]
    assert entries[3]["in"] == {"kind": "plant", "event": "repaired", "resource": "m1",
                                "task": "", "data": {}}
    assert verify_decision_log(good, certs=tmp_path / "keys") == 0
    assert "3 inputs signed by their senders" in capsys.readouterr().out
    forged = record(tmp_path / "forged.log", 1)
    assert verify_log(forged).ok                  # the host sealed it...
    assert verify_decision_log(forged, as_json=True, certs=tmp_path / "keys") == 1
    out = json.loads(capsys.readouterr().out)     # ...but the plant never sent entry 2
    assert out["first_bad_entry"] == 2 and "'sim'" in out["problem"]


def test_answers_held_write_the_bytes_of_entries_encoded_at_once(tmp_path: Path) -> None:
    """ADR 95: a message on the wire answered only by timers and sends is held and encoded
    with the entries held before it, at the next entry encoded at once or the seal (a body
    with a dict, a proposal, encoded when held); one answered with an award or a log is
    encoded at once.  The file must be byte for byte what encoding every entry
    with actions at once gave (the pre-ADR-74 hook, through the /2 dict), and verify."""
    from agents.protocol.actions import CancelTimer, Send, SetTimer
    from agents.protocol.messages import Award, CallForProposals, Proposal, Refusal
    from ops.bench.negotiation_recorder import DictEntries

    class Order:
        def weighed(self, task: str) -> None:
            return None

    traffic = _traffic()
    outs = []
    kinds: Counter[int] = Counter()     # held records appended, by shape (8, 9 or 5 fields)
    for cls, log, sink in _both_hooks(DictEntries, segment_entries=90, clock_from=10_000):
        if cls is SegmentLog:
            def counted(log: SegmentLog = log, append: Any = log._append_held) -> None:
                kinds.update(len(record) for record in log._held)
                append()
            log._append_held = counted  # type: ignore[method-assign]
        for r in range(80):
            for i, (agent, msgs, payload, sig, answered) in enumerate(traffic):
                log.on_wire(msgs, payload, sig)
                m = msgs[0]
                actions: list = []
                if answered:
                    no = Refusal(task=m.conv, reason="busy", repair_at=float(r))
                    bid = Proposal(task=m.conv, kind="operation", start_at=r,
                                   finish_at=r + 9.5, hold_until_at=r + 3.0,
                                   cost={"queue_s": float(i)})
                    actions = [[Send(m.sender, no, m.conv), SetTimer(f"hold:{r}", r + 3.0)],
                               [Send(m.sender, no, m.conv)],
                               [Send(m.sender, bid, m.conv), SetTimer(f"hold:{r}", r + 3.0)],
                               [SetTimer("round", r + 0.5), CancelTimer(f"hold:{r - 1}")],
                               [Send(m.sender, bid, m.conv)],   # a lone bid (ADR 99's path)
                               [Send(m.sender, no, m.conv), Send(m.sender, bid, m.conv)],
                               # one body to several (ADR 101's path)
                               [Send(m.sender, no, m.conv), Send("m9", no, m.conv)],
                               ][(r + i) % 7]
                    if i == 1 and r % 3 == 0:      # a log: encoded at once
                        actions = [*actions, Log("bid", {"round": r})]
                log.on_decision(agent, Inbound(m, 1.5 + r), actions, 1.5 + r, Order())
            # ADR 96: a timer (or no input) answered by sends and timers is held too — an
            # order's call to several machines on its timer, a machine's bid on its round
            cfp = CallForProposals(task=f"o-1/{r}", order="o-1", kind="operation",
                                   capability="mill", op="op-1", quantity=1,
                                   earliest_start_at=r, due_at=r + 100.0, reply_by_at=r + 1.0)
            bid = Proposal(task=f"o-1/{r}", kind="operation", start_at=r, finish_at=r + 9.0,
                           hold_until_at=r + 3.0, cost={"queue_s": float(r)})
            for cause, acts in ((Timer("call", 1.8 + r),
                                 [*(Send(f"m{k}", cfp, cfp.task) for k in (1, 2, 3)),
                                  SetTimer(f"deadline:{r}", r + 1.0)]),
                                (None, [Send("o-1", bid, cfp.task)]),
                                # a call and nothing else: one body to several (ADR 101),
                                # then the same body on two conversations (not merged)
                                (Timer("call", 1.85 + r),
                                 [Send(f"m{k}", cfp, cfp.task) for k in (1, 2, 3)]),
                                (Timer("again", 1.9 + r),
                                 [Send("m1", cfp, cfp.task), Send("m2", cfp, "other")])):
                log.on_decision("o-1", cause, acts, 1.8 + r, Order())
            log.on_decision("o-1", Timer("deadline", 2.0 + r),
                            [Send("m1", Award(f"o-1/{r}", r + 1, 5.0), f"o-1/{r}")], 2.0 + r,
                            Order())
        log.close()
        outs.append(sink.getvalue())
        assert log.entries > 300 and log.segments >= 3
    assert outs[0] == outs[1]
    # of the 160 answered inputs, all but those with a log were held (a proposal's body
    # encoded when held: it has a dict)
    expect = sum(1 for r in range(80) for i in (0, 1) if not (i == 1 and r % 3 == 0))
    assert kinds[9] == expect > 80
    assert kinds[5] == 4 * 80       # every timer's (and no input's) answer was held
    path = tmp_path / "held.log"
    path.write_bytes(outs[0])
    assert verify_log(path).ok
    outs_read = [a for e in read_lines(path) if e.get("k") == "in" for a in e["out"]]
    assert {a[0] for a in outs_read} == {"send", "timer", "cancel", "log"}
    assert {a[2] for a in outs_read if a[0] == "send"} == {"refuse", "propose", "accept",
                                                           "cfp"}


def test_an_entry_that_does_not_encode_is_recorded_lost_and_the_log_goes_on(
        tmp_path: Path) -> None:
    """ADR 95: a held answer whose body holds something that is not data (a str field given
    an object: Structs do not check on construction), or a log action's, becomes a ``lost``
    entry under its number, counted; every other entry is written and the log verifies."""
    from agents.protocol.actions import Send, SetTimer
    from agents.protocol.messages import Proposal, Refusal

    path = tmp_path / "lost.log"
    traffic = _traffic()
    with path.open("wb") as f:
        log = SegmentLog(f, SigningKey.generate(), host="h", run={}, segment_entries=7)
        for r in range(6):
            for i, (agent, msgs, payload, sig, answered) in enumerate(traffic):
                log.on_wire(msgs, payload, sig)
                m = msgs[0]
                actions: list = []
                if answered and r == 2 and i == 0:      # held, poisoned
                    actions = [Send(m.sender, Refusal(task=object(), reason="x"),  # type: ignore[arg-type]
                                    m.conv), SetTimer("hold", 3.0)]
                elif answered and r == 3 and i == 0:    # a snapshot that fails: at once
                    bad = Proposal(task=m.conv, kind="operation", start_at=1.0, finish_at=2.0,
                                   hold_until_at=3.0, cost={"x": object()})  # type: ignore[dict-item]
                    actions = [Send(m.sender, bad, m.conv), SetTimer("hold", 3.0)]
                elif answered and r == 4 and i == 1:    # at once, poisoned
                    actions = [Log("bid", {"obj": object()})]
                elif answered and r == 5 and i == 0:    # a lone bid's snapshot that fails
                    bad = Proposal(task=m.conv, kind="operation", start_at=1.0, finish_at=2.0,
                                   hold_until_at=3.0, cost={"x": object()})  # type: ignore[dict-item]
                    actions = [Send(m.sender, bad, m.conv)]
                log.on_decision(agent, Inbound(m, 1.5 + r), actions, 1.5 + r, None)
            log.on_decision("o-1", Timer("deadline", 2.0 + r), [], 2.0 + r, None)
        log.close()
    assert log.unencodable == 4
    assert verify_log(path).ok
    entries = [e for e in read_lines(path) if e.get("k") in ("in", "lost")]
    assert [e["n"] for e in entries] == list(range(1, 6 * 5 + 1))
    lost = [e for e in entries if e["k"] == "lost"]
    assert [(e["n"], e["agent"], e["t"]) for e in lost] == [(11, "m1", 3.5), (16, "m1", 4.5),
                                                            (22, "m2", 5.5), (26, "m1", 6.5)]
    assert all("does not encode" in e["error"] for e in lost)



@pytest.mark.parametrize("lone", [False, True], ids=["with-a-timer", "a-lone-bid"])
def test_a_held_answer_keeps_its_body_as_it_was_when_sent(tmp_path: Path, lone: bool) -> None:
    """ADR 95: a held answer's body with a dict is encoded when held, so an agent that
    changes the dict afterwards (a bug, but it must not rewrite history) does not change
    the log; the log shows what was sent.  A lone bid takes a shorter path (ADR 99): the
    same."""
    from agents.protocol.actions import Send, SetTimer
    from agents.protocol.messages import Proposal

    path = tmp_path / "snap.log"
    agent, msgs, payload, sig, _ = _traffic()[0]
    m = msgs[0]
    bid = Proposal(task=m.conv, kind="operation", start_at=1.0, finish_at=9.0,
                   hold_until_at=3.0, cost={"queue_s": 1.0})
    with path.open("wb") as f:
        log = SegmentLog(f, SigningKey.generate(), host="h", run={})
        log.on_wire(msgs, payload, sig)
        log.on_decision(agent, Inbound(m, 1.5),
                        [Send(m.sender, bid, m.conv)] if lone else
                        [Send(m.sender, bid, m.conv), SetTimer("hold", 3.0)], 1.5, None)
        assert len(log._held) == 1
        bid.cost["queue_s"] = 999.0
        log.close()
    sent = [a for e in read_lines(path) if e.get("k") == "in" for a in e["out"]]
    assert sent[0][4]["cost"] == {"queue_s": 1.0}
    assert sent[1:] == ([] if lone else [["timer", "hold", 3.0]])


def test_what_a_held_answer_keeps_of_its_actions() -> None:
    """``_holdable`` (ADR 95, 99, 101): a lone all-scalar send is kept as the agent's own
    list; a call (one body to several, one conversation) and a lone bid as their ``out``
    encoded, the bytes ``actions_json`` gives; an award never; one body on two
    conversations goes the general path (the actions, by reference)."""
    import msgspec

    from agents.protocol.actions import Send, SetTimer
    from agents.protocol.messages import Award, CallForProposals, Proposal, Refusal
    from agents.runtime.recorder import actions_json
    from agents.runtime.segment_log import _holdable

    cfp = CallForProposals(task="o-1/1", order="o-1", kind="operation", capability="mill",
                           op="op-1", quantity=1, earliest_start_at=0.0, due_at=9.0,
                           reply_by_at=1.0)
    bid = Proposal(task="o-1/1", kind="operation", start_at=0.0, finish_at=9.0,
                   hold_until_at=3.0, cost={"queue_s": 1.0})
    lone = [Send("o-1", Refusal(task="o-1/1", reason="busy"), "o-1/1")]
    assert _holdable(lone) is lone
    for acts in ([Send(f"m{k}", cfp, "o-1/1") for k in (1, 2, 3)], [Send("o-1", bid, "o-1/1")]):
        kept = _holdable(acts)
        assert type(kept) is msgspec.Raw
        assert bytes(kept) == msgspec.msgpack.encode(actions_json(acts))
    assert _holdable([Send(f"m{k}", Award("o-1/1", 1, 5.0, 0.0), "o-1/1")
                      for k in (1, 2)]) is None
    two_convs = [Send("m1", cfp, "a"), Send("m2", cfp, "b")]
    assert _holdable(two_convs) is two_convs
    with_timer = [Send("m1", cfp, "a"), SetTimer("t", 1.0)]
    assert _holdable(with_timer) is with_timer


@pytest.mark.parametrize("cause", ["message", "timer"])
@pytest.mark.parametrize("lone", [False, True], ids=["with-a-timer", "a-lone-bid"])
def test_a_held_answer_with_a_snapshot_leaves_nothing_for_the_collector(
        lone: bool, cause: str) -> None:
    """ADR 100: a held answer whose body has a dict keeps its ``out`` as one encoded
    object, so the held record holds only names, numbers and bytes: the collector stops
    following it at its first pass, instead of carrying every held bid (a tuple and three
    lists) into its older generations until the idle work appends it — in a bidders'
    process 8 to 30 % of what recording cost its CPU.  The same for a bid on a machine's
    round timer, as a host's machines bid: the timer is held by its key."""
    import gc

    from agents.protocol.actions import Send, SetTimer
    from agents.protocol.messages import Proposal

    agent, msgs, payload, sig, _ = _traffic()[0]
    m = msgs[0]
    bid = Proposal(task=m.conv, kind="operation", start_at=1.0, finish_at=9.0,
                   hold_until_at=3.0, cost={"queue_s": 1.0})
    log = SegmentLog(io.BytesIO(), SigningKey.generate(), host="h", run={})
    log.on_wire(msgs, payload, sig)
    log.on_decision(agent, Inbound(m, 1.5) if cause == "message" else Timer("round", 1.5),
                    [Send(m.sender, bid, m.conv)] if lone else
                    [Send(m.sender, bid, m.conv), SetTimer("hold", 3.0)], 1.5, None)
    (record,) = log._held
    gc.collect()
    assert not gc.is_tracked(record), [type(x).__name__ for x in record]
    log.close()
