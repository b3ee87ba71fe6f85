"""`autocell up`, `host` and `console-agent` check their numbers before a process starts:
a NaN or infinite speed made every host's cell clock NaN or infinite (a run that never
ended and filled its logs), a negative --until ran nothing and exited 0."""

from __future__ import annotations

from pathlib import Path

import pytest

from ops.cli import main

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "cell_configs" / "demo_cell.yaml")


@pytest.mark.parametrize("argv,says", [
    (["up", DEMO, "--speed", "nan"], "argument --speed: 'nan': a speed in cell seconds"),
    (["up", DEMO, "--speed", "inf"], "argument --speed: 'inf': a speed in cell seconds"),
    (["up", DEMO, "--speed", "0"], "is a finite number above 0"),
    (["up", DEMO, "--timeout", "0"], "argument --timeout: '0': a wall time in seconds"),
    (["up", DEMO, "--timeout", "-5"], "argument --timeout: '-5'"),
    (["up", DEMO, "--restart-window", "nan"], "argument --restart-window: 'nan'"),
    (["up", DEMO, "--max-restarts", "-1"], "argument --max-restarts: '-1': must be 0 or more"),
    (["host", DEMO, "machines", "--speed", "inf"], "argument --speed: 'inf'"),
    (["console-agent", DEMO, "--speed", "nan"], "argument --speed: 'nan'"),
])
def test_bad_numbers_exit_2_at_the_parser(argv: list[str], says: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main([*argv, "--state-dir", str(tmp_path / "state")])
    assert stop.value.code == 2
    assert says in capsys.readouterr().err
    assert not (tmp_path / "state").exists()                # nothing started, nothing written


def test_up_until_must_be_positive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["up", DEMO, "--until", "-5", "--state-dir", str(tmp_path / "state")]) == 2
    assert "--until must be a positive number of cell seconds" in capsys.readouterr().err
    assert not (tmp_path / "state").exists()


def test_max_restarts_zero_is_allowed() -> None:
    from ops.cli import build_parser

    args = build_parser().parse_args(["up", DEMO, "--max-restarts", "0", "--timeout", "2.5"])
    assert args.max_restarts == 0 and args.timeout == 2.5 and args.speed == 1.0


def test_a_child_that_died_by_itself_is_told_by_its_last_error_line(tmp_path: Path) -> None:
    """`process_died` names what the child said last: a traceback's exception line (a port
    taken by another program), or its `autocell: error:` line."""
    from ops.supervisor import last_error

    log = tmp_path / "sim.log"
    log.write_text('{"level":"info","msg":"starting"}\n'
                   "Traceback (most recent call last):\n"
                   '  File "agents/runtime/transport.py", line 171, in start\n'
                   "OSError: cannot bind tcp://127.0.0.1:5600: Address already in use\n\n")
    assert last_error(log, "no error line") == \
        "OSError: cannot bind tcp://127.0.0.1:5600: Address already in use"
    log.write_text("autocell: error: cell.yaml: no such file\nbye\n")
    assert last_error(log) == "cell.yaml: no such file"
    assert last_error(tmp_path / "gone.log", "no error line") == "no error line; no log"


def test_sigterm_raises_inside_stoppable_and_is_held_once_stopping() -> None:
    """What `up` runs in: SIGTERM is KeyboardInterrupt's twin until the stop begins; from
    then on neither signal can cut the stop or the report; afterwards all is as before."""
    import os
    import signal

    from ops.supervisor import Terminated, hold_signals, stoppable

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    hold_signals()                                   # outside: changes nothing
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    with stoppable():
        with pytest.raises(Terminated):
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):                    # the handler runs between bytecodes
                pass
        hold_signals()
        os.kill(os.getpid(), signal.SIGTERM)         # ignored: the stop goes on
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):
            pass
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_a_sigterm_that_escapes_up_exits_143(monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from ops import up
    from ops.supervisor import Terminated

    def killed(args: object) -> int:
        raise Terminated()

    monkeypatch.setattr(up, "start_up", killed)
    assert main(["up", DEMO]) == 143
    assert "autocell: terminated" in capsys.readouterr().err
