"""The console agent's decision log under ``autocell up`` (issue 19: every process records).

One real run (slow) of a small cell whose lathe breaks for longer than the policy's
``max_wait_s``: o-005 escalates to the console-agent process, a person decides through
the CLI twin, the order completes.  The console process wrote its own log,
``decisions-console-1.jsonl``: report.json names it, it holds the ``escalate`` that came
in and the signed ``decision`` that went out, ``audit verify --certs`` ties it to the
``console`` certificate, ``replay --check`` passes it (the console agent is not re-run:
its state is the escalation store) and ``explain`` tells the escalation from the state
directory.  Waits on the store and the process, never on sleeps.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.console_users import act_as
from helpers.escalation_cells import cli, faults, small_cell
from helpers.waiting import wait_until
from test_escalation_up import finish, up, while_running

from agents.runtime.flight_log import read_lines
from ops.cli import main

pytestmark = pytest.mark.slow


def test_the_console_process_logs_its_escalations_and_decisions(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    act_as(monkeypatch, tmp_path, "alice")
    cell = small_cell(tmp_path)
    f = faults(tmp_path, breakdowns=[{"resource": "lathe1", "at_s": 150, "repair_s": 900}])
    state = tmp_path / "state"
    db = state / "escalations.db"
    proc = up(cell, state, "--faults", str(f))
    try:
        wait_until("o-005's escalation in the console agent's store",
                   while_running(proc, db, "o-005/e1"))
        res = cli("escalations", "decide", "o-005/e1", "--option", "wait_for_repair",
                  "--reason", "fitter on site", "--user", "alice", "--db", str(db))
        assert res.returncode == 0, res.stderr
    finally:
        code, _, err = finish(proc)
    assert code == 0, err[-3000:]
    report = json.loads((state / "report.json").read_text())
    assert report["orders_completed"] == report["orders_total"]

    named = {d["file"]: d for d in report["decision_logs"]}
    assert "decisions-console-1.jsonl" in named, sorted(named)
    console = named["decisions-console-1.jsonl"]
    assert console["host"] == "console" and console["boot"] == 1 and console["ok"], console
    log = state / "decisions-console-1.jsonl"
    entries = [e for e in read_lines(log) if e.get("k") == "in" and e["agent"] == "console"]
    came = [e for e in entries if e["in"]["kind"] == "message"
            and e["in"]["type"] == "escalate" and e["in"]["from"] == "o-005"]
    assert came and all(e["env"][0] == "o-005" for e in came)   # named by its envelope
    went = [a for e in entries for a in e["out"] if a[0] == "send" and a[2] == "decision"]
    assert any(a[1] == ["o-005"] and a[4]["option"] == "wait_for_repair"
               and a[4]["user"] == "alice" for a in went), went

    # sealed by the console's certificate key; the escalation's sender signed its input
    assert main(["audit", "verify", str(log), "--certs", str(state / "keys"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["key_checked"] == [f"console's certificate key in {state / 'keys'}"]
    assert out["inputs_signed_by_senders"] >= len(came)
    assert main(["replay", str(log), "--check", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["ok"] and rep["skipped"].get("console") == len(entries), rep
    # the state directory's story of the escalation now has the console's side of it:
    # the logs merge (one cell, one seed) and the decision it sent is told
    assert main(["explain", str(state), "o-005/e1", "--json"]) == 0
    story = json.loads(capsys.readouterr().out)
    assert str(log) in story["logs"], story["logs"]
    assert any("sent decision wait_for_repair on o-005/e1 (by alice)" in x["text"]
               for x in story["lines"]), [x["text"] for x in story["lines"]]
