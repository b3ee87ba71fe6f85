"""The decision log (agents/runtime/recorder.py): recorded through the runner, verified.

Recording must not change a run (the event log hashes the same with it on),
and ``autocell audit verify LOG`` must name the first bad entry of a log
that was edited, cut, reordered or re-signed with another key.  The runs are
virtual time on the minimal cell (well under a second each).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from agents.runtime.flight_log import verify_log
from agents.runtime.recorder import DecisionLog, canonical, is_decision_log
from ops.cli import main
from security.crypto import SigningKey

ROOT = Path(__file__).resolve().parents[1]
MINIMAL = str(ROOT / "cell_configs" / "minimal_cell.yaml")
DEMO = str(ROOT / "cell_configs" / "demo_cell.yaml")


def run(tmp_path: Path, cell: str = MINIMAL, *extra: str, log: bool = True) -> dict:
    report = tmp_path / ("r.json" if log else "r0.json")
    args = ["run", cell, "--quiet", "--report", str(report), *extra]
    if log:
        args += ["--decision-log", str(tmp_path / "d.jsonl")]
    assert main(args) == 0
    return json.loads(report.read_text())


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("log")
    return tmp / "d.jsonl", run(tmp, DEMO, "--seed", "1")


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def test_recording_leaves_the_run_unchanged(tmp_path: Path) -> None:
    on, off = run(tmp_path), run(tmp_path, log=False)
    assert on["event_log_sha256"] == off["event_log_sha256"]
    assert on["decision_log"]["lines"] == len(lines(tmp_path / "d.jsonl"))
    assert "decision_log" not in off


def test_a_fresh_log_verifies(recorded: tuple[Path, dict], capsys: pytest.CaptureFixture) -> None:
    path, report = recorded
    assert is_decision_log(path)
    rep = verify_log(path, trusted_key=bytes.fromhex(report["decision_log"]["key"]))
    assert rep.ok and rep.entries == report["decision_log"]["lines"]
    assert rep.head == report["decision_log"]["head"] and rep.segments >= 2
    assert main(["audit", "verify", str(path)]) == 0
    assert "decision log OK" in capsys.readouterr().out


def test_entries_name_their_envelope_and_awards_their_scores(recorded: tuple[Path, dict]) -> None:
    entries = [json.loads(line) for line in lines(recorded[0])]
    msgs = [e for e in entries if e.get("k") == "in" and e["in"]["kind"] == "message"]
    assert msgs and all(e["env"] == [e["in"]["from"], e["in"]["epoch"], e["in"]["seq"]]
                        for e in msgs)
    whys = [w for e in entries for w in e.get("why", [])]
    assert whys, "no award carries its candidates"
    for w in whys:
        scores = {c["resource"]: c["score"] for c in w["candidates"]}
        assert w["winner"] in scores
        assert scores[w["winner"]] == min(scores.values())   # lower score wins
    # the candidates are the proposals the order got on the call's conversation before it
    # awarded (read from the order agent at the award, ADR 95: not kept by the recorder)
    for e in entries:
        for w in e.get("why", []):
            conv = next(a[3] for a in e["out"] if a[0] == "send" and a[2] == "accept")
            got = {x["in"]["from"] for x in entries
                   if x.get("k") == "in" and x["n"] < e["n"] and x["agent"] == e["agent"]
                   and x["in"]["kind"] == "message" and x["in"]["type"] == "propose"
                   and x["in"]["conv"] == conv}
            assert {c["resource"] for c in w["candidates"]} == got, (e["n"], conv)
    kinds = {e["in"]["kind"] for e in entries if e.get("k") == "in"}
    assert {"start", "message", "timer", "plant"} <= kinds
    outs = {a[0] for e in entries if e.get("k") == "in" for a in e["out"]}
    assert {"send", "timer", "command", "log"} <= outs


def _write(path: Path, text: list[str]) -> Path:
    path.write_text("".join(text))
    return path


@pytest.mark.parametrize("tamper, bad, words", [
    ("edit", 100, "entry 100 edited"),
    ("remove", 100, "removed or reordered"),
    ("reorder", 100, "removed or reordered"),
    ("not_json", 100, "not JSON"),
])
def test_tampering_names_the_first_bad_entry(recorded: tuple[Path, dict], tmp_path: Path,
                                             capsys: pytest.CaptureFixture, tamper: str,
                                             bad: int, words: str) -> None:
    text = lines(recorded[0])
    if tamper == "edit":
        text[100] = text[100].replace('"t":', '"t":1', 1)
    elif tamper == "remove":
        del text[100]
    elif tamper == "reorder":
        text[100], text[101] = text[101], text[100]
    else:
        text[100] = "{" + text[100]
    path = _write(tmp_path / "bad.jsonl", text)
    rep = verify_log(path)
    assert not rep.ok and rep.bad_entry == bad and words in rep.problem
    assert main(["audit", "verify", str(path), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["first_bad_entry"] == bad and out["kind"] == "decision_log"


def test_a_forged_seal_signature_is_named(recorded: tuple[Path, dict], tmp_path: Path) -> None:
    text = lines(recorded[0])
    seals = [i for i, line in enumerate(text) if '"k":"seal"' in line]
    seal = json.loads(text[seals[0]])
    seal["sig"] = SigningKey.generate().sign(b"something else").hex()
    text[seals[0]] = canonical(seal).decode() + "\n"
    rep = verify_log(_write(tmp_path / "forged.jsonl", text))
    assert not rep.ok and rep.bad_entry == seals[0] and "signature" in rep.problem


def test_a_log_re_signed_with_another_key_fails_against_the_trusted_key(tmp_path: Path) -> None:
    sink = io.BytesIO()
    log = DecisionLog(sink, SigningKey.generate(), host="h", run={}, segment_entries=2)
    for i in range(5):
        log.on_runtime("pause", f"a{i}", float(i))
    log.close()
    path = _write(tmp_path / "other.jsonl", [sink.getvalue().decode()])
    assert verify_log(path).ok
    rep = verify_log(path, trusted_key=SigningKey.generate().public_key)
    assert not rep.ok and rep.bad_entry == 0 and "not the trusted key" in rep.problem


def re_signed(src: Path, dst: Path, key: SigningKey) -> Path:
    """``src`` rebuilt line by line and sealed again with ``key``: the chain and the seals
    are all consistent, only the key is another (what a forger with the file would do)."""
    import hashlib

    from agents.runtime.recorder import seal_bytes
    from security.crypto import fingerprint

    out, prev, first, fmt = [], "0" * 64, 1, ""
    for i, line in enumerate(lines(src)):
        obj = json.loads(line)
        obj["prev"] = prev
        if i == 0:
            obj["key"], fmt = key.public_key.hex(), obj["format"]
        if "key_id" in obj:
            obj["key_id"] = fingerprint(key.public_key)
        if obj["k"] == "seal":
            obj["sig"] = key.sign(seal_bytes(obj["segment"], first, i - 1,
                                             bool(obj.get("final")), prev, fmt)).hex()
            first = i + 1
        raw = canonical(obj)
        prev = hashlib.sha256(raw).hexdigest()
        out.append(raw.decode() + "\n")
    return _write(dst, out)


def test_audit_verify_key_ties_a_log_to_its_recording_key(
        recorded: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A log rebuilt and re-sealed with a new key verifies on its own (its header names the
    new key); ``--key`` with the recording key fails it at entry 0, naming both keys."""
    path, report = recorded
    header = json.loads(lines(path)[0])
    assert header["key"] == report["decision_log"]["key"]       # the run names its key
    forged = re_signed(path, tmp_path / "forged.jsonl", SigningKey.generate())
    assert main(["audit", "verify", str(forged)]) == 0                 # as before: it verifies
    assert "sealed by the header's own key" in capsys.readouterr().out
    assert main(["audit", "verify", str(forged), "--key", header["key"], "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["first_bad_entry"] == 0 and header["key_id"] in out["problem"]
    assert json.loads(lines(forged)[0])["key_id"] in out["problem"]
    key_file = tmp_path / "run.key.hex"
    key_file.write_text(header["key"] + "\n")
    assert main(["audit", "verify", str(path), "--key", str(key_file)]) == 0
    assert "sealed by the key given with --key" in capsys.readouterr().out
    pem = tmp_path / "run.pub"
    from security.keystore import write_public_key
    write_public_key(pem, bytes.fromhex(header["key"]))
    assert main(["audit", "verify", str(path), "--key", str(pem)]) == 0
    assert main(["audit", "verify", str(forged), "--key", str(pem)]) == 1
    capsys.readouterr()
    assert main(["audit", "verify", str(path), "--key", "abc"]) == 2
    assert "--key abc" in capsys.readouterr().err


def test_a_log_cut_short_is_named_from_its_unsigned_tail(recorded: tuple[Path, dict],
                                                          tmp_path: Path) -> None:
    text = lines(recorded[0])
    seals = [i for i, line in enumerate(text) if '"k":"seal"' in line]
    rep = verify_log(_write(tmp_path / "cut.jsonl", text[:-1]))
    assert not rep.ok and rep.bad_entry == seals[-2] + 1 and "unsigned" in rep.problem
    rep = verify_log(_write(tmp_path / "cut2.jsonl", text[:seals[-2] + 1]))
    assert not rep.ok and "no final seal" in rep.problem


def test_audit_verify_still_takes_an_escalation_store(tmp_path: Path) -> None:
    db = tmp_path / "esc.db"
    assert main(["run", MINIMAL, "--quiet", "--escalations-db", str(db)]) == 0
    assert main(["audit", "verify", str(db)]) == 0


@pytest.mark.parametrize("content", [b"", b"not json\n", b'{"a":1}\n[1,2]\n', b"[" * 50000 + b"\n",
                                     b'{"format":"autocell-decision-log/1","n":0}\n[[1]]\n',
                                     b"\xff\xfe\n"])
def test_damaged_logs_are_refused_with_an_exit_code(tmp_path: Path, content: bytes,
                                                    capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    assert main(["replay", str(path)]) == 2
    assert main(["explain", str(path), "o-1"]) == 2
    assert main(["audit", "verify", str(path)]) in (1, 2)
    assert main(["replay", str(tmp_path / "missing.jsonl")]) == 2
    assert "Traceback" not in capsys.readouterr().err
    if content.startswith(b"{") and b"decision-log" in content:
        assert not verify_log(path).ok


def test_a_line_cut_by_a_kill_is_left_out_of_replay(recorded: tuple[Path, dict],
                                                    tmp_path: Path) -> None:
    from ops.replay import replay_check

    text = "".join(lines(recorded[0]))
    cut = tmp_path / "cut.jsonl"
    cut.write_text(text[:len(text) // 2])       # mid-line, as a killed writer may leave it
    rep = replay_check(cut)
    assert rep.ok and rep.entries > 1000
