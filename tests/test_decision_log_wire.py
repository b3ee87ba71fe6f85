"""Inputs recorded as the signed bytes they came in (``envelope``, docs/PROTOCOL.md §16).

A host's bus hands each accepted envelope's payload and signature to the decision log
(``Bus.wire`` → ``DecisionLog.on_wire``); the log then records those bytes instead of
encoding the decoded message again.  Readers see the same ``message`` input either way.
"""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path

import pytest

from agents.protocol.actions import Log
from agents.protocol.envelope import SIGNING_TAG, Opener, Sealer
from agents.protocol.messages import CallForProposals, Proposal
from agents.runtime import recorder
from agents.runtime.flight_log import read_lines, verify_log
from agents.runtime.journal import Inbound
from agents.runtime.recorder import DecisionLog
from security.crypto import SigningKey
from security.keystore import ephemeral_cell

ROLES = {"o-1": "order", "m1": "machine", "m2": "machine"}


def _traffic() -> list[tuple[str, list, bytes, bytes, bool]]:
    """(agent, its messages, payload, signature, answered) for a cfp multicast to two
    machines, their proposals (no action: deferred) and one with an answer."""
    cell = ephemeral_cell(ROLES, seed=b"wire")
    opener = Opener(cell.trust, None)
    seal = {a: Sealer(a, cell.keys[a], epoch=7, random_bytes=os.urandom) for a in ROLES}
    cfp = CallForProposals(task="o-1/0", order="o-1", kind="operation", capability="mill",
                           op="op-1", quantity=1, earliest_start_at=1.0, due_at=100.0,
                           reply_by_at=2.0)
    out = []
    frames = seal["o-1"].seal(["m1", "m2"], cfp, 1.0, "o-1/0")
    opened = opener.open_envelope(frames, 1.0)
    for m in opened.for_local({"m1", "m2"}):
        out.append((m.to, [m], frames[1], frames[2], True))
    for i, a in enumerate(("m1", "m2")):
        p = Proposal(task="o-1/0", kind="operation", start_at=1.0, finish_at=10.0 + i,
                     hold_until_at=3.0, cost={"queue_s": 0.0, "processing_s": 9.0 + i})
        frames = seal[a].seal("o-1", p, 1.5, "o-1/0")
        out.append(("o-1", [opener.open(frames, 1.5)], frames[1], frames[2], False))
    return out


def _write(path: Path, wire: bool) -> None:
    key = SigningKey.generate()
    with path.open("wb") as f:
        log = DecisionLog(f, key, host="h", run={})
        for agent, msgs, payload, sig, answered in _traffic():
            if wire:
                log.on_wire(msgs, payload, sig)
            m = msgs[0]
            actions = ([Log("bid", {"task": m.conv})]
                       if answered else [])
            log.on_decision(agent, Inbound(m, 1.5), actions, 1.5, None)
        log.close()


def _inputs(path: Path) -> list[dict]:
    return [e["in"] for e in read_lines(path) if e["k"] == "in"]


def test_envelope_entries_verify_and_read_as_the_messages_they_carry(tmp_path: Path) -> None:
    wired, decoded = tmp_path / "wire.jsonl", tmp_path / "msg.jsonl"
    _write(wired, wire=True)
    _write(decoded, wire=False)
    assert verify_log(wired).ok and verify_log(decoded).ok
    raw = [json.loads(line) for line in wired.read_bytes().splitlines()]
    kinds = [e["in"]["kind"] for e in raw if e["k"] == "in"]
    assert kinds == ["envelope"] * 4
    assert raw[0]["format"] == recorder.FORMAT
    ids = [bytes.fromhex(i["id"]) for i in _inputs(decoded)]
    assert len(set(ids)) == 3                     # one multicast, two proposals
    # the same messages, whichever form the line holds (message ids are random: compare
    # all but the id, and check each envelope's id against its payload)
    strip = [{k: v for k, v in i.items() if k != "id"} for i in _inputs(wired)]
    assert strip == [{k: v for k, v in i.items() if k != "id"} for i in _inputs(decoded)]
    assert [i["to"] for i in _inputs(wired)] == ["m1", "m2", "o-1", "o-1"]


def test_the_signature_in_an_envelope_entry_is_the_senders(tmp_path: Path) -> None:
    path = tmp_path / "wire.jsonl"
    _write(path, wire=True)
    cell = ephemeral_cell(ROLES, seed=b"wire")
    for e in (json.loads(line) for line in path.read_bytes().splitlines()):
        if e["k"] == "in":
            sender = e["env"][0]
            signed = (SIGNING_TAG + sender.encode()
                      + base64.b64decode(e["in"]["payload"]))
            verifier = cell.trust.peer(sender, 1.0).verifier
            assert verifier.verify(signed, base64.b64decode(e["in"]["sig"]))


def test_a_message_not_from_the_envelope_handed_over_is_recorded_decoded() -> None:
    sink = io.BytesIO()
    log = DecisionLog(sink, SigningKey.generate(), host="h", run={})
    (_, msgs, payload, sig, _), (_, other, _, _, _) = _traffic()[2:4]
    log.on_wire(msgs, payload, sig)
    log.on_decision("o-1", Inbound(other[0], 1.5), (), 1.5, None)   # held, handed later
    log.close()
    entry = json.loads(sink.getvalue().splitlines()[1])
    assert entry["in"]["kind"] == "message" and entry["in"]["from"] == "m2"


def test_a_log_of_the_first_format_still_verifies(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "v1.jsonl"
    monkeypatch.setattr(recorder, "FORMAT", "autocell-decision-log/1")
    _write(path, wire=False)
    monkeypatch.undo()
    assert json.loads(path.read_bytes().splitlines()[0])["format"] == "autocell-decision-log/1"
    assert recorder.is_decision_log(path)
    assert verify_log(path).ok


def test_an_edited_envelope_is_named_and_refused_without_a_traceback(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from ops.cli import main

    path = tmp_path / "wire.jsonl"
    _write(path, wire=True)
    lines = path.read_bytes().split(b"\n")
    entry = json.loads(lines[3])
    payload = bytearray(base64.b64decode(entry["in"]["payload"]))
    payload[payload.index(b"propose")] = ord("x")            # the type: "xropose"
    entry["in"]["payload"] = base64.b64encode(bytes(payload)).decode()
    lines[3] = json.dumps(entry, separators=(",", ":"), sort_keys=True).encode()
    path.write_bytes(b"\n".join(lines))
    assert verify_log(path).bad_entry == 3
    assert main(["audit", "verify", str(path)]) == 1
    assert main(["replay", str(path)]) == 2
    assert main(["explain", str(path), "o-1"]) == 2
    assert "Traceback" not in capsys.readouterr().err
