"""Issue 20's corpus of hostile and damaged input, one case per input, by defect class.

Every case must get a typed answer — exit 2 with one clear message (exit 1 where
``audit verify`` finds tampering) — never a traceback, never a hang, never an
invalid input accepted, and whatever else the case checks: no directory created,
the file under ``audit verify`` unchanged, control characters escaped.  The cases
are in ``tests/helpers/hostile.py``; run that file to count them in a subprocess
per case against any checkout (the before/after figures of the issue).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.hostile import CASES, MINIMAL, Case, verdict

from ops.cli import main


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", CASES, ids=[f"{c.cls}-{c.name}" for c in CASES])
def test_hostile_input_gets_a_typed_answer(case: Case, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    argv = case.build(tmp_path)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code if isinstance(exc.code, int) else 2
    captured = capsys.readouterr()
    text = captured.out + captured.err
    problem = case.check(tmp_path, code, text) if case.check is not None else None
    assert verdict(case, tmp_path, code, text) == "ok", (code, problem, text[-1500:])


def test_up_stops_and_says_why_when_a_process_refuses_to_start(tmp_path: Path) -> None:
    """Class 5: a host that exits 2 (its journal damaged, say) would do the same on every
    restart; `up` does not crash-loop it into "restart intensity exceeded" with nothing said,
    but stops at once with the host's own message and exit 2."""
    import subprocess
    import sys

    from ops.config import load_cell
    from ops.supervisor import EXIT_USAGE, Supervisor

    said: list[str] = []
    sup = Supervisor(load_cell(MINIMAL), str(MINIMAL), state_dir=tmp_path, speed=1.0,
                     faults_path=None, faults=None, max_restarts=5, restart_window_s=60.0,
                     until_s=None, timeout_s=None, log=said.append)
    message = (f"{tmp_path}/journal-main.sqlite: the journal cannot be read (file is not a "
               "database); it is damaged or not a journal: move it aside")
    (tmp_path / "main.log").write_text(f'{{"level":"info"}}\nautocell: error: {message}\n')
    child = sup.children["main"]
    child.proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(2)"])
    child.proc.wait()
    sup.children = {"main": child}       # only the refusing host is looked at
    assert sup._check_children() is True
    assert sup.refused == message
    assert child.respawns == 0
    assert any("main cannot start" in line and "journal-main.sqlite" in line for line in said)
    assert EXIT_USAGE == 2
