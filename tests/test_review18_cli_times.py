"""Issue 18 ("all times are wall-clock times"), on the console's CLI twin: once a running cell
has written a heartbeat, ``autocell escalations show`` and the shelve warning give each time
as the wall-clock date and time it maps to, with the cell seconds beside it, as the console's
pages do; a store no cell ever reported into keeps the cell seconds alone, said to be that."""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

import pytest
from helpers.console_users import act_as

from agents.escalation import lifecycle as lc
from agents.escalation.store import EscalationStore
from ops.cli import main

D = lc.Deadlines(response_s=60.0, reescalate_every_s=30.0, final_s=300.0, max_shelve_s=400.0)
OPTS = [lc.Option("wait_for_repair", "Wait", "back at 900 s"), lc.Option("cancel", "Cancel", "")]
WALL0 = 1_800_000_000.0     # the wall time of cell time 100 s, at speed 10


def _store(path: Path, heartbeat: bool) -> None:
    store = EscalationStore(path, D)
    rec = lc.new_record(id="o1/e1", priority=1, cause="no_capable_resource",
                        consequence="waits", raised_by="o1", now=40.0, options=OPTS,
                        safe_default="wait_for_repair", deadlines=D, resource="lathe1")
    store.put(rec, actor="agent:o1", action="raise", now=40.0, details={})
    store.set_cell_now(100.0)
    if heartbeat:
        store.heartbeat(100.0, WALL0, speed=10.0, every_s=1.0)
    store.close()


def _local(wall: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(wall))


def test_show_maps_cell_times_to_wall_clock_times_by_the_heartbeat(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "esc.db"
    _store(db, heartbeat=True)
    assert main(["escalations", "show", "o1/e1", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    # raised at 40 s: 60 cell seconds before the heartbeat, 6 wall seconds at speed 10
    assert f"raised by o1 at {_local(WALL0 - 6)} (40.000 s cell time)" in out
    assert f"decide by {_local(WALL0 + 24)} (340.000 s cell time)" in out


def test_without_a_heartbeat_times_stay_cell_seconds_and_say_so(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "esc.db"
    _store(db, heartbeat=False)
    assert main(["escalations", "show", "o1/e1", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "raised by o1 at 40.000 s cell time" in out
    assert not re.search(r"\d{4}-\d\d-\d\d", out)


def test_the_shelve_warning_names_the_wall_clock_time_the_safe_default_applies(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "esc.db"
    _store(db, heartbeat=True)
    act_as(monkeypatch, tmp_path, "alice")
    monkeypatch.setattr("sys.stdin", io.StringIO(""))           # not a terminal
    assert main(["escalations", "shelve", "o1/e1", "--db", str(db), "--reason", "fitter",
                 "--for", "300"]) == 2                              # until 400 s > 340 s
    err = capsys.readouterr().err
    assert f"applies at {_local(WALL0 + 24)} (340.000 s cell time)" in err
    assert f"until {_local(WALL0 + 30)} (400.000 s cell time)" in err
