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
from helpers.hostile import CASES, Case, verdict

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
