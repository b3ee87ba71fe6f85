"""The escalation store on a real SQLite file: persistence, ordering, outbox, audit chain
tampering, and the CLI twin (`autocell escalations`, `autocell audit verify`)."""

from __future__ import annotations

import itertools
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from agents.escalation import lifecycle as lc
from agents.escalation.lifecycle import Deadlines, Option
from agents.escalation.store import EscalationStore, UnknownEscalation
from helpers.console_users import act_as

from ops.cli import main

D = Deadlines(response_s=60.0, reescalate_every_s=30.0, final_s=300.0, max_shelve_s=100.0)
OPTS = [Option("wait_for_repair", "Wait", "back at 900 s"), Option("cancel", "Cancel", "gone")]


def raise_one(store: EscalationStore, esc_id: str, priority: int, now: float,
              cause: str = "no_capable_resource", resource: str = "lathe1") -> lc.Record:
    rec = lc.new_record(id=esc_id, priority=priority, cause=cause, consequence="waits",
                        raised_by=esc_id.split("/")[0], now=now, options=OPTS,
                        safe_default="wait_for_repair", deadlines=D, order=esc_id.split("/")[0],
                        resource=resource)
    return store.put(rec, actor=f"agent:{rec.raised_by}", action="raise", now=now,
                     details={"cause": cause})


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "esc.db"
    store = EscalationStore(path, D)
    raise_one(store, "o1/e1", 2, 10.0)
    raise_one(store, "o2/e1", 1, 20.0)
    raise_one(store, "o3/e1", 2, 30.0, cause="quality_reject", resource="mill1")
    store.acknowledge("o1/e1", "alice", 40.0)
    store.shelve("o3/e1", "bob", "fitter on site", 50.0, 45.0)
    store.decide("o2/e1", "alice", "cancel", "customer withdrew", 50.0)
    store.close()
    return path


def test_everything_survives_reopening(db: Path) -> None:
    store = EscalationStore(db)
    assert store.deadlines == D                     # the policy is stored with the records
    assert store.get("o2/e1").decided_by == "alice"
    assert store.get("o3/e1").shelve_reason == "fitter on site"
    assert store.cell_now() == 50.0
    with pytest.raises(UnknownEscalation, match="no escalation 'nope'"):
        store.get("nope")


def test_list_sorts_by_priority_then_state(db: Path) -> None:
    store = EscalationStore(db)
    raise_one(store, "o4/e1", 2, 60.0)             # unacknowledged, priority 2
    assert [r.id for r in store.list()] == ["o2/e1", "o4/e1", "o1/e1", "o3/e1"]
    assert [r.id for r in store.list(open_only=True)] == ["o4/e1", "o1/e1", "o3/e1"]
    assert store.groups() == {"no_capable_resource/lathe1": ["o4/e1", "o1/e1"],
                              "quality_reject/mill1": ["o3/e1"]}


def test_a_decision_is_queued_until_sent(db: Path) -> None:
    store = EscalationStore(db)
    [(seq, esc, to, option, user, reason)] = store.pending_decisions()
    assert (esc, to, option, user, reason) == ("o2/e1", "o2", "cancel", "alice",
                                               "customer withdrew")
    store.mark_sent(seq)
    assert EscalationStore(db).pending_decisions() == []


def test_audit_records_who_did_what_when_and_why(db: Path) -> None:
    entries = EscalationStore(db).audit()
    assert [(e.seq, e.actor, e.action, e.escalation) for e in entries] == [
        (1, "agent:o1", "raise", "o1/e1"), (2, "agent:o2", "raise", "o2/e1"),
        (3, "agent:o3", "raise", "o3/e1"), (4, "alice", "acknowledge", "o1/e1"),
        (5, "bob", "shelve", "o3/e1"), (6, "alice", "decide", "o2/e1")]
    assert entries[5].details["reason"] == "customer withdrew" and entries[5].at == 50.0
    assert entries[0].prev_hash == "0" * 64
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(entries))
    assert EscalationStore(db).verify().ok


def tamper(db: Path, *sql: str) -> None:
    con = sqlite3.connect(db)
    for s in sql:
        con.execute(s)
    con.commit()
    con.close()


@pytest.mark.parametrize(("sql", "bad"), [
    ([("UPDATE audit SET details=replace(details, 'customer withdrew', 'ops said so') "
      "WHERE seq=6")], 6),
    (["UPDATE audit SET actor='mallory' WHERE seq=4"], 4),
    (["UPDATE audit SET at=41.0 WHERE seq=4"], 4),
    (["DELETE FROM audit WHERE seq=3"], 4),
    (["DELETE FROM audit WHERE seq=6"], 6),
    # reorder: swap the contents of entries 4 and 5, keeping the seq column in order
    (["CREATE TABLE t AS SELECT * FROM audit WHERE seq IN (4, 5)",
      "DELETE FROM audit WHERE seq IN (4, 5)",
      ("INSERT INTO audit SELECT 4, at, actor, action, escalation, details, prev_hash, hash "
      "FROM t WHERE seq=5"),
      ("INSERT INTO audit SELECT 5, at, actor, action, escalation, details, prev_hash, hash "
      "FROM t WHERE seq=4")], 4),
], ids=["edit reason", "edit user", "edit time", "remove middle", "remove last", "reorder"])
def test_tampering_is_detected(db: Path, sql: list[str], bad: int,
                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "verify", "--db", str(db)]) == 0
    tamper(db, *sql)
    rep = EscalationStore(db).verify()
    assert not rep.ok and rep.bad_seq == bad, rep
    capsys.readouterr()
    assert main(["audit", "verify", "--db", str(db)]) == 1
    assert f"BROKEN at entry {bad}" in capsys.readouterr().out


def test_audit_verify_ok_summary(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "verify", "--db", str(db), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["entries"] == 6


def cli(db: Path, *argv: str) -> int:
    return main(["escalations", *argv, "--db", str(db)])


def test_cli_twin_acts_and_records(db: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    act_as(monkeypatch, tmp_path, "carol")
    assert cli(db, "list") == 0
    rows = capsys.readouterr().out.splitlines()
    assert [r.split()[0] for r in rows] == ["o1/e1", "o3/e1"]
    assert cli(db, "show", "o1/e1") == 0
    assert "wait_for_repair" in capsys.readouterr().out
    assert cli(db, "decide", "o1/e1", "--option", "wait_for_repair", "--reason", "ok",
               "--user", "carol") == 0
    store = EscalationStore(db)
    assert store.get("o1/e1").decided_by == "carol"
    last = store.audit()[-1]
    assert (last.actor, last.action, last.details["option"]) == ("carol", "decide",
                                                                 "wait_for_repair")
    assert [p[1] for p in store.pending_decisions()] == ["o2/e1", "o1/e1"]


@pytest.mark.parametrize(("argv", "message"), [
    (["ack", "nope", "--user", "a"], "no escalation 'nope'"),
    (["ack", "o2/e1", "--user", "a"], "illegal transition: 'acknowledge' in state 'resolved'"),
    (["shelve", "o1/e1", "--for", "30", "--user", "a"], "needs a reason"),
    (["shelve", "o1/e1", "--for", "500", "--reason", "r", "--user", "a"], "max_shelve_s"),
    (["decide", "o1/e1", "--option", "split", "--user", "a"], "no option 'split'"),
    (["decide", "o1/e1", "--option", "cancel", "--user", "mallory"], "mapped to 'a'"),
], ids=["unknown id", "illegal transition", "shelve without reason", "shelve too long",
        "unknown option", "another user"])
def test_cli_bad_input_exits_2_and_changes_nothing(db: Path, argv: list[str], message: str,
                                                   capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    monkeypatch.delenv("AUTOCELL_USER", raising=False)
    act_as(monkeypatch, tmp_path, "a")
    before = len(EscalationStore(db).audit())
    assert cli(db, *argv) == 2
    assert message in capsys.readouterr().err
    assert len(EscalationStore(db).audit()) == before


def test_cli_in_a_subprocess(db: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "ops.cli", "escalations", "list", "--all",
                        "--json", "--db", str(db)], capture_output=True, text=True, timeout=60, check=False,
                       cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert [e["id"] for e in data["escalations"]] == ["o2/e1", "o1/e1", "o3/e1"]
    r = subprocess.run([sys.executable, "-m", "ops.cli", "escalations", "list", "--db",
                        str(db.parent / "missing.db")], capture_output=True, text=True, check=False,
                       timeout=60, cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 2 and "Traceback" not in r.stderr and "missing.db" in r.stderr
