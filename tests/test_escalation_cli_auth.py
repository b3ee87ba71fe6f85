"""The CLI twin acts only for an authenticated console user (issue 18), ``escalations show``
reports only the acknowledgements the audit log holds, and the console's ``/metrics``
counts open escalations by priority and state (scraped over HTTP)."""

from __future__ import annotations

import getpass
import io
import socket
import urllib.request
from pathlib import Path

import pytest
from helpers.console_users import act_as, password, users_db
from helpers.waiting import wait_until

from agents.escalation import lifecycle as lc
from agents.escalation.store import EscalationStore
from ops.cli import main
from ops.console.server import serve_escalation_metrics
from ops.console.store_backend import StoreBackend

D = lc.Deadlines(response_s=60.0, reescalate_every_s=30.0, final_s=300.0, max_shelve_s=100.0)
OPTS = [lc.Option("wait_for_repair", "Wait", "back at 900 s"), lc.Option("cancel", "Cancel", "")]


def raise_one(store: EscalationStore, esc_id: str, priority: int, now: float) -> None:
    rec = lc.new_record(id=esc_id, priority=priority, cause="no_capable_resource",
                        consequence="waits", raised_by=esc_id.split("/")[0], now=now,
                        options=OPTS, safe_default="wait_for_repair", deadlines=D,
                        resource="lathe1")
    store.put(rec, actor=f"agent:{rec.raised_by}", action="raise", now=now, details={})


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "esc.db"
    store = EscalationStore(path, D)
    for k in range(1, 4):
        raise_one(store, f"o{k}/e1", 1 + k % 2, 10.0 * k)
    store.close()
    return path


@pytest.fixture
def users(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "users.db"
    users_db(path, {"alice": "supervisor", "vic": "viewer"})
    monkeypatch.setenv("AUTOCELL_USERS_DB", str(path))
    monkeypatch.delenv("AUTOCELL_USER", raising=False)
    return path


def esc(db: Path, *argv: str, stdin: str | None = None,
        monkeypatch: pytest.MonkeyPatch | None = None) -> int:
    if stdin is not None:
        assert monkeypatch is not None
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    return main(["escalations", *argv, "--db", str(db)])


@pytest.mark.parametrize(("argv", "stdin", "why"), [
    (["--user", "mallory-not-a-user"], None, "not authenticated"),
    (["--user", "mallory-not-a-user", "--password-stdin"], "guess\n", "wrong user name or"),
    (["--user", "alice", "--password-stdin"], "not-her-password\n", "wrong user name or"),
    (["--user", "vic", "--password-stdin"], password("vic") + "\n", "is a viewer"),
    (["--password-stdin"], "x\n", "whose password"),
], ids=["unknown name", "unknown name, a password", "wrong password", "a viewer", "no name"])
def test_an_unauthenticated_action_is_refused_logged_and_counted(
        db: Path, users: Path, argv: list[str], stdin: str | None, why: str,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    before = EscalationStore(db).audit()
    assert esc(db, "ack", "o1/e1", *argv, stdin=stdin, monkeypatch=monkeypatch) == 2
    err = capsys.readouterr().err
    assert "refused" in err and why in err and "refused attempts on this store: 1" in err
    store = EscalationStore(db)
    assert store.audit() == before                       # the audit log names no one new
    assert store.get("o1/e1").state == "unacknowledged"
    [kept] = store.refused()
    assert kept["action"] == "ack" and kept["escalation"] == "o1/e1" and why in kept["why"]
    assert kept["wall_at"] > 1.6e9                       # a wall-clock time
    assert esc(db, "ack", "o1/e1", *argv, stdin=stdin, monkeypatch=monkeypatch) == 2
    assert EscalationStore(db).refused_count() == 2


def test_the_right_password_acts_and_the_audit_log_has_wall_time(
        db: Path, users: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert esc(db, "ack", "o1/e1", "--user", "alice", "--password-stdin",
               stdin=password("alice") + "\n", monkeypatch=monkeypatch) == 0
    last = EscalationStore(db).audit()[-1]
    assert (last.actor, last.action) == ("alice", "acknowledge")
    assert last.details["wall_at"] > 1.6e9 and last.at == 30.0   # wall time and cell time
    assert EscalationStore(db).verify().ok                    # inside the hash chain


def test_an_os_account_mapped_by_an_admin_acts_without_a_password(
        db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "u" / "users.db"
    path.parent.mkdir()
    users_db(path, {"bob": "supervisor"})
    assert main(["users", "map-os", getpass.getuser(), "bob", "--users", str(path)]) == 0
    assert esc(db, "decide", "o2/e1", "--option", "cancel", "--users", str(path)) == 0
    assert EscalationStore(db).get("o2/e1").decided_by == "bob"
    capsys.readouterr()
    assert esc(db, "ack", "o1/e1", "--user", "alice", "--users", str(path)) == 2   # not his
    assert "mapped to 'bob', not to 'alice'" in capsys.readouterr().err
    assert main(["users", "unmap-os", getpass.getuser(), "--users", str(path)]) == 0
    assert esc(db, "ack", "o1/e1", "--users", str(path)) == 2


def test_show_reports_only_acknowledgements_the_audit_log_holds(
        db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    act_as(monkeypatch, tmp_path, "alice")
    assert esc(db, "decide", "o1/e1", "--option", "cancel") == 0     # no acknowledgement
    assert esc(db, "ack", "o2/e1") == 0
    capsys.readouterr()
    assert esc(db, "show", "o1/e1") == 0
    out = capsys.readouterr().out
    assert "acknowledged by" not in out and "not acknowledged before the decision" in out
    assert esc(db, "show", "o2/e1") == 0
    out = capsys.readouterr().out
    assert "acknowledged by alice at 20" in out and "(30.000 s cell time)" in out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return str(r.read().decode())


def open_gauges(text: str) -> dict[str, float]:
    return {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
            if line.startswith("autocell_escalations_open{")}


def test_console_metrics_count_open_escalations_by_priority_and_state(
        db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = StoreBackend(db)
    port = free_port()
    server = serve_escalation_metrics(backend, port, every_s=0.05)
    try:
        gauges = open_gauges(scrape(port))
        assert gauges == {'autocell_escalations_open{priority="1",state="unacknowledged"}': 1.0,
                          'autocell_escalations_open{priority="2",state="unacknowledged"}': 2.0}
        for k in range(1, 4):
            backend.decide(f"o{k}/e1", "alice", "cancel", "")
        gauges = wait_until("every gauge at 0", lambda: (
            g if (g := open_gauges(scrape(port))) and not any(g.values()) else None))
        assert not any('priority=""' in k for k in gauges)
    finally:
        server.shutdown()
        backend.close()


def test_shelving_past_the_safe_default_deadline_wants_yes(
        db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    act_as(monkeypatch, tmp_path, "alice")
    monkeypatch.setattr("sys.stdin", io.StringIO(""))           # not a terminal
    # o1/e1 raised at 10 s: its safe default applies at 310 s; the cell is at 30 s
    assert esc(db, "shelve", "o1/e1", "--reason", "fitter", "--for", "100") == 0  # until 130
    store = EscalationStore(db)
    raise_one(store, "o4/e1", 2, 250.0)                          # its deadline: 550 s
    store.set_cell_now(460.0)
    capsys.readouterr()
    assert esc(db, "shelve", "o4/e1", "--reason", "fitter", "--for", "100") == 2  # until 560
    assert "safe default 'wait_for_repair' of o4/e1 applies" in capsys.readouterr().err
    assert EscalationStore(db).get("o4/e1").state == "unacknowledged"
    assert esc(db, "shelve", "o4/e1", "--reason", "fitter", "--for", "100", "--yes") == 0
    assert EscalationStore(db).get("o4/e1").state == "shelved"


def test_refused_attempts_are_a_metric(db: Path, users: Path) -> None:
    from ops.console.server import alarm_kpi_families

    assert esc(db, "ack", "o1/e1", "--user", "mallory") == 2
    backend = StoreBackend(db)
    [refused] = [f for f in alarm_kpi_families(backend, lambda: 1)
                 if f.name == "autocell_escalation_actions_refused"]
    assert refused.samples[0].value == 1
    backend.close()


def test_a_store_in_wall_time_stamps_every_audit_entry(tmp_path: Path) -> None:
    store = EscalationStore(tmp_path / "w.db", D, wall_clock=lambda: 1.8e9)
    raise_one(store, "o9/e1", 1, 5.0)
    store.acknowledge("o9/e1", "alice", 6.0, wall_at=1.8e9 + 1)   # the person's own time kept
    assert [a.details["wall_at"] for a in store.audit()] == [1.8e9, 1.8e9 + 1]
    assert store.verify().ok
    plain = EscalationStore(tmp_path / "v.db", D)                  # virtual time: none
    raise_one(plain, "o9/e1", 1, 5.0)
    assert "wall_at" not in plain.audit()[0].details


def test_another_process_acts_as_the_mapped_user(db: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """What the multi-process tests rely on: ``act_as`` reaches a subprocess through the
    environment ($AUTOCELL_USERS_DB), and the OS account is the same."""
    from helpers.escalation_cells import cli

    act_as(monkeypatch, tmp_path, "bob")
    res = cli("escalations", "decide", "o3/e1", "--option", "cancel", "--db", str(db))
    assert res.returncode == 0, res.stderr
    assert EscalationStore(db).get("o3/e1").decided_by == "bob"
    res = cli("escalations", "ack", "o1/e1", "--user", "mallory", "--db", str(db))
    assert res.returncode == 2 and "refused" in res.stderr and "Traceback" not in res.stderr
