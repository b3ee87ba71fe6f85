"""``autocell explain``: what a user gets wrong, and stories that must agree with themselves.

From a user review (ADR 104): logs of different runs merged into one story, a task the
log never saw told as an empty story, ``--at nan``, retries told fifty times in a task's
story, ``--at`` reporting the first retry instead of the latest, an order "started" long
before its release, an idle stretch whose reason changed with ``--at``, a cut log told
without a word, and special files.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from ops.cli import main
from ops.config import load_cell
from ops.config.fault_files import load_faults
from ops.explain import Recorded, explain
from ops.replay import record_virtual
from security.errors import ConfigurationError
from sim_bridge.virtual import VirtualCell

CELLS = Path(__file__).resolve().parents[1] / "cell_configs"


def _record(path: Path, scenario: str) -> Path:
    cfg = load_cell(CELLS / "demo_cell.yaml")
    cell = VirtualCell(cfg, seed=2,
                       faults=load_faults(str(CELLS / "faults" / f"{scenario}.yaml"), cfg))
    with path.open("wb") as sink:
        log = record_virtual(cell, sink)
        cell.run()
        log.close()
    return path


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("explain_checks")
    return {"breakdowns": _record(d / "breakdowns.jsonl", "breakdowns"),
            "outage": _record(d / "outage.jsonl", "long_outage")}


def _json(capsys: pytest.CaptureFixture, *args: str) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["explain", *args, "--json"]) == 0
    return dict(json.loads(capsys.readouterr().out))


def _error(capsys: pytest.CaptureFixture, *args: str) -> str:
    capsys.readouterr()
    assert main(["explain", *args]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


# -- which logs make one story -----------------------------------------------------------

def test_logs_of_two_runs_or_one_log_twice_are_refused(logs: dict[str, Path], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    a, b = str(logs["breakdowns"]), str(logs["outage"])
    assert "each hold a whole run" in _error(capsys, a, b, "o-011")
    assert "given twice" in _error(capsys, a, a, "o-011")
    copy = tmp_path / "copy.jsonl"
    shutil.copy(a, copy)
    assert "each hold a whole run" in _error(capsys, a, str(copy), "o-011")


def _host_log(name: str, boot: int, agents: set[str], **run: Any) -> Recorded:
    facts = {"cell": {"orders": []}, "seed": 1, "driver": "host", "host": name, "boot": boot,
             "agents": sorted(agents), **run}
    return Recorded(facts, [], name, [f"decisions-{name}-{boot}.jsonl"], frozenset(agents))


def test_hosts_logs_merge_only_when_they_are_one_runs() -> None:
    one = Recorded.merged([_host_log("h1", 1, {"o-1"}), _host_log("h2", 1, {"m1"}),
                           _host_log("h1", 2, {"o-1"}, escalation=True)])  # a restart
    assert one.agents == {"o-1", "m1"} and len(one.logs) == 3
    with pytest.raises(ConfigurationError, match=r"their faults differ"):
        Recorded.merged([_host_log("h1", 1, {"o-1"}, faults={"name": "a"}),
                         _host_log("h2", 1, {"m1"}, faults={"name": "b"})])
    with pytest.raises(ConfigurationError, match=r"their clock differ"):    # another run
        Recorded.merged([_host_log("h1", 1, {"o-1"}, clock={"start_at": 1.0, "speed": 10.0}),
                         _host_log("h2", 1, {"m1"}, clock={"start_at": 2.0, "speed": 10.0})])
    with pytest.raises(ConfigurationError, match=r"their seed differ"):
        Recorded.merged([_host_log("h1", 1, {"o-1"}), _host_log("h2", 1, {"m1"}, seed=2)])
    with pytest.raises(ConfigurationError, match=r"the log of one process \(host h1, boot 1\)"):
        Recorded.merged([_host_log("h1", 1, {"o-1"}), _host_log("h1", 1, {"o-1"})])


def test_special_files_are_refused_without_reading_them(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)                 # opening it would block: it must not be opened
    assert "not a regular file" in _error(capsys, str(fifo), "o-011")
    assert "not a regular file" in _error(capsys, os.devnull, "o-011")
    assert "no such file or directory" in _error(capsys, str(tmp_path / "nope.jsonl"), "o-1")


# -- subjects and times ------------------------------------------------------------------

def test_a_task_the_log_never_saw_is_an_error_that_lists_the_orders_tasks(
        logs: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    log = str(logs["breakdowns"])
    for subject in ("o-011/9", "o-011/0/m9", "o-011/", "o-011/e9"):
        err = _error(capsys, log, subject)
        assert "holds no task or escalation of that name" in err
        assert "o-011/0" in err and "o-011/0/m1" in err       # what it does hold
    err = _error(capsys, log, "o-999")
    assert re.search(r"resources .*\bagv1\b.*\bagv2\b", err)  # robots are resources too


def test_an_unknown_escalation_lists_the_orders_escalations_too(
        logs: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    err = _error(capsys, str(logs["outage"]), "o-011/e9")
    assert "o-011/e1" in err and "o-011/0" in err


def test_an_escalation_told_without_the_consoles_log_says_so(logs: dict[str, Path]) -> None:
    rec = Recorded.load(logs["outage"])
    esc = "o-011/e1"
    assert "note" not in explain(rec, esc)          # a virtual run's log holds every agent
    orders = frozenset(rec.ids("orders"))           # as the orders' host's log would
    story = explain(Recorded(rec.run, rec.entries, "orders", ["decisions-orders-1.jsonl"],
                             orders), esc)
    assert story["kind"] == "escalation" and story["lines"]
    assert story["note"].startswith("the console's log is not among these")


def test_a_resource_that_crashed_and_restarted_has_its_story(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A crash or restart is a runtime entry ("rt", no input): every view of a resource
    must read past it (before, an idle stretch's reasons raised KeyError on it)."""
    log = str(_record(tmp_path / "crash.jsonl", "crash"))
    for resource in ("mill1", "mill2", "lathe1", "drill1", "station1", "agv2"):
        story = _json(capsys, log, resource)
        assert any(x["text"] == f"{resource}: process crash" for x in story["lines"]), resource
        assert any(x["text"] == f"{resource}: process restart" for x in story["lines"])
        assert any(x.get("data", {}).get("idle_from") is not None for x in story["lines"])


def test_a_reader_that_goes_away_is_no_traceback(logs: dict[str, Path]) -> None:
    """`autocell explain LOG lathe1 | head -1`: the reader closes the pipe before the story
    is written; the command stops quietly with 141, as a Unix tool does."""
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-m", "ops.cli", "explain", str(logs["breakdowns"]),
                          "lathe1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         cwd=Path(__file__).resolve().parents[1])
    assert p.stdout is not None and p.stderr is not None
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 141 and "Traceback" not in err, err


def test_an_escalation_is_an_escalation_before_it_is_raised(
        logs: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    rec = Recorded.load(logs["outage"])
    esc, raised = next((e["in"]["body"]["escalation"], e["t"]) for e in rec.entries
                       if e["k"] == "in" and e["in"]["kind"] == "message"
                       and e["in"]["type"] == "escalate")
    early = explain(rec, esc, at=raised / 2)
    assert early["kind"] == "escalation" and early["lines"] == []
    assert early["then"] == "nothing yet"


@pytest.mark.parametrize("at", ["nan", "inf", "-inf"])
def test_at_must_be_a_cell_time(logs: dict[str, Path], capsys: pytest.CaptureFixture,
                                at: str) -> None:
    err = _error(capsys, str(logs["breakdowns"]), "lathe1", f"--at={at}")
    assert "a cell time is a finite number of seconds" in err
    # an `up` run's processes start before the cell clock's 0: a negative time is one
    assert _json(capsys, str(logs["breakdowns"]), "lathe1", "--at=-5")["until"] == -5


def test_a_tasks_retries_are_told_once_and_at_names_the_latest(
        logs: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    log = str(logs["breakdowns"])
    story = _json(capsys, log, "o-011/0")
    calls = [x for x in story["lines"] if "o-011/0 (turn): called lathe1 (attempt" in x["text"]]
    assert len(calls) == 1 and calls[0]["repeats"] > 10     # lathe1 was down 900–1200 s
    assert len(story["lines"]) < 40
    # at 1000 s the order had been retrying since 900 s, every 5.2 s: not attempt 1 or 2
    then = _json(capsys, log, "o-011", "--at", "1000")["then"]
    attempt = int(re.fullmatch(r"nobody bid for o-011/0 \(attempt (\d+)\); retrying",
                               then).group(1))  # type: ignore[union-attr]
    assert attempt > 10


def test_an_orders_story_starts_at_its_release(logs: dict[str, Path],
                                               capsys: pytest.CaptureFixture) -> None:
    log = str(logs["breakdowns"])
    before = _json(capsys, log, "o-011", "--at", "500")
    assert before["then"] == "not released yet (release at 840.0 s, due at 2580.0 s)"
    story = _json(capsys, log, "o-011")
    released = next(x for x in story["lines"] if x["text"].startswith("released"))
    assert released["t"] == 840.0 and released["text"] == "released (due at 2580.0 s)"
    first_call = next(x for x in story["lines"] if "called" in x["text"])
    assert first_call["t"] >= released["t"]


def test_an_idle_stretchs_reason_does_not_depend_on_at(
        logs: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    """lathe1 held o-011/0 from 840.2 s until it broke at 900 s; it was awarded the task
    again after its repair, which must not hide the first award from the stretch before."""
    log = str(logs["breakdowns"])

    def stretch(lo: float, hi: float, *at: str) -> dict[str, Any]:
        story = _json(capsys, log, "lathe1", *at)
        return next(x["data"] for x in story["lines"]
                    if lo < x.get("data", {}).get("idle_from", -1) < hi)

    # the stretch is cut where the award came: before it, lathe1 waited for nothing
    before, before_cut = stretch(700, 800), stretch(700, 800, "--at", "850")
    assert round(before["idle_to"], 1) == 840.2 and before["waiting"] == []
    assert before == {**before_cut, "idle_to": before["idle_to"]}
    whole, cut = stretch(840, 841), stretch(840, 841, "--at", "850")
    assert "o-011/0 (from its award at 840.2 s)" in whole["waiting"]
    assert whole["waiting"] == cut["waiting"] and whole["lost"] == cut["lost"]


def test_a_cut_log_is_told_with_a_warning(logs: dict[str, Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(logs["breakdowns"].read_bytes()[:100_000])   # mid-line, as kill -9 does
    story = _json(capsys, str(cut), "o-001")
    assert len(story["warnings"]) == 1
    assert story["warnings"][0].startswith(f"{cut} ends before its final seal (")
    assert f"autocell audit verify {cut}" in story["warnings"][0]
    edited = tmp_path / "edited.jsonl"                # an entry removed: not just cut
    lines = logs["breakdowns"].read_text().splitlines(keepends=True)
    edited.write_text("".join(lines[:500] + lines[501:]))
    warning = _json(capsys, str(edited), "o-001")["warnings"][0]
    assert warning.startswith(f"{edited} is not intact (")
    capsys.readouterr()
    assert main(["explain", str(cut), "o-001"]) == 0
    assert "  warning: " in capsys.readouterr().out
    assert "warnings" not in _json(capsys, str(logs["breakdowns"]), "o-001")


def test_a_task_that_started_later_than_promised_says_why(
        logs: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    """o-017/0: lathe1 proposed to start at 1540.1 s and started at 1581.9 s — it ran
    o-014/1 first, and o-017/0's parts came at 1559.5 s."""
    story = _json(capsys, str(logs["breakdowns"]), "o-017/0")
    (late,) = [x for x in story["lines"] if "late_start_s" in x.get("data", {})]
    d = late["data"]
    assert late["agent"] == "lathe1" and round(d["promised_start_at"], 1) == 1540.1
    assert round(d["started_at"] - d["promised_start_at"], 1) == round(d["late_start_s"], 1)
    assert any(r.startswith("lathe1 ran o-014/1 first") for r in d["reasons"])
    assert any(r.startswith("its parts were there at 1559") for r in d["reasons"])
    assert late["text"].startswith("lathe1: started o-017/0 41.9 s after the start it "
                                   "proposed (1540.1 s): lathe1 ran o-014/1 first")
    # a task that started as proposed has no such line
    on_time = [t for t in ("o-001/2", "o-003/2", "o-005/2", "o-007/2")
               if not any("late_start_s" in x.get("data", {}) for x in
                          _json(capsys, str(logs["breakdowns"]), t)["lines"])]
    assert on_time


def test_an_idle_stretch_never_says_no_order_needed_it_while_it_held_an_award(
        logs: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    for resource in ("lathe1", "mill1", "mill2", "drill1", "agv1", "agv2"):
        for x in _json(capsys, str(logs["breakdowns"]), resource)["lines"]:
            if "idle_from" in x.get("data", {}):
                assert not ("no order needed it" in x["text"] and "held an award" in x["text"])
                assert not (x["data"]["won"] and "none became work here" in x["text"])


def test_a_cell_file_given_for_a_log_says_how_to_record_one(
        capsys: pytest.CaptureFixture) -> None:
    cell = str(CELLS / "demo_cell.yaml")
    for argv in (["explain", cell, "o-001"], ["replay", cell, "--check"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"{cell}: a cell file, not a decision log; record one with `autocell run " \
               f"{cell} --decision-log run.jsonl`" in err
        assert "audit verify" not in err
