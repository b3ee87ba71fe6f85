"""Issue 20, class 4, on the commands issue 18 added: an output path that cannot be written is
exit 2 with one clear message before any work, never a traceback, and no directory is made
that the user did not ask for.

The review of issues 18 and 20 found four flags outside the class's corpus
(``tests/helpers/hostile.py`` lists the flags it knew then): ``ops prometheus-rules --out``,
``gantt --out`` and ``maintenance fit --out`` wrote with a bare ``write_text`` (a
``FileNotFoundError``/``IsADirectoryError`` traceback, exit 1), and ``experiment --out`` at a
file gave ``FileExistsError``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ops.cli import main
from security.errors import DamagedState

ROOT = Path(__file__).resolve().parents[1]
MINIMAL = ROOT / "cell_configs" / "minimal_cell.yaml"
SWEEP = ROOT / "cell_configs" / "experiments" / "slack_vs_default.yaml"


def _answer(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exc:        # argparse's usage errors
        code = exc.code if isinstance(exc.code, int) else 2
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _state_dir(tmp: Path) -> Path:
    """A finished run's state directory as `gantt` reads it (the plant's event log)."""
    state = tmp / "state"
    state.mkdir()
    assert main(["run", str(MINIMAL), "--quiet", "--events",
                 str(state / "events-sim.jsonl")]) == 0
    return state


FILE_FLAGS = {
    "ops prometheus-rules --out": lambda t, out: ["ops", "prometheus-rules", str(MINIMAL),
                                                   "--out", out],
    "gantt --out": lambda t, out: ["gantt", str(_state_dir(t)), "--cell", str(MINIMAL),
                                   "--out", out],
    "maintenance fit --out": lambda t, out: ["maintenance", "fit", str(t / "events.jsonl"),
                                             "--out", out],
}


@pytest.mark.parametrize("where", ["missing directory", "a directory"])
@pytest.mark.parametrize("name", sorted(FILE_FLAGS))
def test_an_output_file_that_cannot_be_written_is_exit_2_before_the_work(
        name: str, where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "missing" / "out.svg") if where == "missing directory" \
        else str(tmp_path)
    argv = FILE_FLAGS[name](tmp_path, out)
    capsys.readouterr()
    code, text = _answer(argv, capsys)
    assert code == 2, text
    assert "Traceback" not in text
    assert "--out" in text and ("does not exist" in text or "is a directory" in text), text
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize("dry_run", [True, False])
@pytest.mark.parametrize("where", ["a file", "below a file"])
def test_experiment_out_at_or_below_a_file_is_exit_2(where: str, dry_run: bool, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]
                                                     ) -> None:
    blocker = tmp_path / "results"
    blocker.write_text("not a directory\n")
    out = blocker if where == "a file" else blocker / "deeper"
    code, text = _answer(["experiment", str(SWEEP), "--out", str(out), "--quiet",
                          *(["--dry-run"] if dry_run else [])], capsys)
    assert code == 2, text
    assert "Traceback" not in text
    assert "--out" in text and "is a file, not a directory" in text, text
    assert blocker.read_text() == "not a directory\n"


def test_experiment_dry_run_still_accepts_a_new_results_directory(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Naming a results directory asks for it, parents included (the default is
    experiments/NAME/): only a file in the way is refused."""
    code, text = _answer(["experiment", str(SWEEP), "--dry-run", "--out",
                          str(tmp_path / "new" / "dir")], capsys)
    assert code == 0, text


def test_a_damaged_store_message_reads_as_english() -> None:
    assert "not an escalation store:" in str(DamagedState("e.db", "escalation store", "x"))
    assert "not a journal:" in str(DamagedState("j.db", "journal", "x"))
