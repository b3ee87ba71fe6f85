"""Property-based fuzzing of what ``tests/test_fuzz_inputs.py`` did not reach (issue 20).

The promise is the same: any input gives a result or a typed error (exit 2),
never another exception, within a Hypothesis ``deadline``.  Added here:

* the benchmark instance loader (``.jsp``, ``.fjs``) on its own and through
  ``load_cell_or_instance``, the path ``autocell run X.jsp`` takes: raw bytes,
  the shipped instances damaged, and well-formed headers with numbers of any
  size in any place;
* the argument parsing of **every** command-line entry point, found by walking
  the parser (a new command is fuzzed without touching this file): a
  namespace, or argparse's exit 2 (0 for ``--help``);
* more commands run end to end on any flag values: ``experiment --dry-run``,
  ``escalations``, ``users``, ``keys init`` and ``keys revoke``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fuzz_inputs import FLAG_VALUE, FUZZ, damaged, run_cli, scratch

from ops.cli import build_parser
from ops.config import ConfigError, load_cell_or_instance
from security.keystore import KeyDir
from sim_bridge.instances import Instance, InstanceError, load_instance

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "benchmarks" / "fjsp"
SWEEP = ROOT / "cell_configs" / "experiments" / "slack_vs_default.yaml"
MINIMAL = ROOT / "cell_configs" / "minimal_cell.yaml"
#: Small shipped instances to damage (the benchmark directory when present, else inline).
FT06 = (SHARED / "ft06.jsp").read_bytes() if (SHARED / "ft06.jsp").exists() else (
    b"2 2\n0 3 1 2\n1 4 0 1\n")
MK01 = (SHARED / "mk01.fjs").read_bytes() if (SHARED / "mk01.fjs").exists() else (
    b"2 2 1\n2 1 1 3 2 1 2 4\n1 2 1 5 2 6\n")

NUMBER = (st.integers(-3, 12) | st.integers() | st.sampled_from(
    ["1e400", "nan", "-0", "0x10", "1.5", "9" * 400, "", "#", "\x00"]).map(str))


@st.composite
def instance_text(draw: st.DrawFn, flexible: bool) -> bytes:
    """A header that parses and a body of any numbers: counts, machines and times out of
    range, rows too short or too long."""
    jobs, machines = draw(st.integers(0, 4)), draw(st.integers(0, 4))
    head = f"{jobs} {machines}" + (f" {draw(NUMBER)}" if flexible and draw(st.booleans()) else "")
    rows = [" ".join(str(draw(NUMBER)) for _ in range(draw(st.integers(0, 9))))
            for _ in range(draw(st.integers(0, jobs + 1)))]
    return "\n".join([head, *rows]).encode()


def instance_bytes(suffix: str) -> st.SearchStrategy[bytes]:
    shipped = FT06 if suffix == ".jsp" else MK01
    return st.one_of(st.binary(max_size=200), damaged(shipped),
                     instance_text(flexible=suffix == ".fjs"))


@FUZZ
@given(data=st.data())
def test_an_instance_loads_or_gives_an_instance_error(data: st.DataObject) -> None:
    suffix = data.draw(st.sampled_from([".jsp", ".fjs"]))
    content = data.draw(instance_bytes(suffix))
    with scratch() as tmp:
        path = tmp / f"x{suffix}"
        path.write_bytes(content)
        try:
            inst = load_instance(path)
        except InstanceError as exc:
            assert str(exc).startswith(str(path)), str(exc)   # FILE:LINE
            return
        assert isinstance(inst, Instance)
        assert all(0 <= m < inst.n_machines for op in inst.operations() for m, _ in op.options)


@FUZZ
@given(data=st.data())
def test_an_instance_as_a_cell_loads_or_gives_a_config_error(data: st.DataObject) -> None:
    """What ``autocell run X.jsp`` and ``validate`` do: the instance, then its cell."""
    suffix = data.draw(st.sampled_from([".jsp", ".fjs"]))
    content = data.draw(instance_bytes(suffix))
    with scratch() as tmp:
        path = tmp / f"x{suffix}"
        path.write_bytes(content)
        try:
            cfg = load_cell_or_instance(path)
        except ConfigError as exc:
            assert "x" + suffix in str(exc), str(exc)
            return
        assert len(cfg.orders) >= 0


# -- every entry point's argument parsing --------------------------------------------------------

def entry_points() -> dict[tuple[str, ...], argparse.ArgumentParser]:
    """Every leaf command of ``autocell``, by its words (``("escalations", "ack")``)."""
    out: dict[tuple[str, ...], argparse.ArgumentParser] = {}

    def walk(parser: argparse.ArgumentParser, words: tuple[str, ...]) -> None:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            out[words] = parser
        for action in subs:
            for name, sub in action.choices.items():
                walk(sub, (*words, name))
    walk(build_parser(), ())
    return out


ENTRY_POINTS = entry_points()


def test_the_walk_finds_every_command() -> None:
    assert len(ENTRY_POINTS) >= 30
    for words in [("run",), ("up",), ("escalations", "decide"), ("keys", "issue"),
                  ("experiment",), ("bench", "fjsp"), ("equipment", "check")]:
        assert words in ENTRY_POINTS, words


@settings(max_examples=150, deadline=3000, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_entry_point_parses_its_arguments_or_exits_2(data: st.DataObject) -> None:
    words = data.draw(st.sampled_from(sorted(ENTRY_POINTS)))
    parser = ENTRY_POINTS[words]
    options = sorted(o for a in parser._actions for o in a.option_strings if o.startswith("--"))
    argv = list(words)
    for _ in range(data.draw(st.integers(0, 2))):       # positionals, of any text
        argv.append(data.draw(FLAG_VALUE))
    for opt in data.draw(st.lists(st.sampled_from(options), max_size=4)) if options else []:
        argv.append(opt)
        if data.draw(st.booleans()):
            argv.append(data.draw(FLAG_VALUE))
    code, text = run_cli_parse(argv)
    assert code in (0, 2), (argv, code, text[-500:])
    assert "Traceback" not in text


def run_cli_parse(argv: list[str]) -> tuple[int | None, str]:
    from contextlib import redirect_stderr, redirect_stdout
    from io import StringIO

    out, err = StringIO(), StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            build_parser().parse_args(argv)
            code: int | None = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
    return code, out.getvalue() + err.getvalue()


# -- more commands end to end ---------------------------------------------------------------------

def more_commands(tmp: Path) -> st.SearchStrategy[list[str]]:
    db, users = str(tmp / "e.db"), str(tmp / "users.json")
    commands = [
        (["experiment", str(tmp / "sweep.yaml"), "--dry-run", "--quiet"], ["--out", "--show"]),
        (["experiment", str(tmp / "sweep.yaml"), "--dry-run", "--quiet"], ["--workers"]),
        (["escalations", "show", "E1", "--db", db], ["--db"]),
        (["escalations", "ack", "E1", "--db", db], ["--user", "--db"]),
        (["escalations", "list", "--db", db], ["--db"]),
        (["users", "list", "--users", users], ["--users"]),
        (["users", "remove", "bob", "--users", users], ["--users"]),
        (["keys", "init"], ["--dir"]),
        (["keys", "revoke", "m1", "--dir", str(tmp / "keys")], ["--dir"]),
        (["validate", str(tmp / "x.jsp")], ["--faults"]),
    ]

    @st.composite
    def argv(draw: st.DrawFn) -> list[str]:
        head, flags = draw(st.sampled_from(commands))
        out = list(head)
        for flag in draw(st.lists(st.sampled_from(flags), max_size=2, unique=True)):
            out += [flag, draw(FLAG_VALUE)]
        return out
    return argv()


@settings(max_examples=60, deadline=8000, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_more_commands_answer_with_an_exit_code(data: st.DataObject) -> None:
    with scratch() as tmp:
        (tmp / "sweep.yaml").write_bytes(data.draw(st.one_of(
            st.just(SWEEP.read_bytes()), damaged(SWEEP.read_bytes()), st.binary(max_size=100))))
        (tmp / "x.jsp").write_bytes(data.draw(instance_bytes(".jsp")))
        (tmp / "e.db").write_bytes(data.draw(st.sampled_from([b"", b"\x00" * 100,
                                                              b"SQLite format 3\x00"])))
        (tmp / "cell.yaml").write_bytes(MINIMAL.read_bytes())
        KeyDir(tmp / "keys").init(1.0e9)
        argv = data.draw(more_commands(tmp))
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            code, text = run_cli(argv)
        finally:
            os.chdir(cwd)
        assert code in (0, 1, 2), (argv, code, text[-500:])
        assert "Traceback" not in text


# -- corpus: instance files read without the cell loader in front ---------------------------------

@pytest.mark.timeout(60)
def test_bench_fjsp_on_an_instance_that_is_not_utf8_or_a_fifo_exits_2(tmp_path: Path) -> None:
    """``bench fjsp DIR`` reads instances with ``load_instance`` directly: bytes that are
    not UTF-8 were a UnicodeDecodeError traceback, a FIFO hung the command."""
    (tmp_path / "bks.csv").write_text(
        "instance,format,jobs,machines,lower_bound,best_known_upper,source\n"
        "mk01,fjs,10,6,40,40,test\n")
    instance = tmp_path / "mk01.fjs"
    for make in (lambda: instance.write_bytes(b"\x80\x81 garbage"),
                 lambda: os.mkfifo(instance)):
        instance.unlink(missing_ok=True)
        make()
        code, text = run_cli(["bench", "fjsp", str(tmp_path)])
        assert code == 2 and "Traceback" not in text, text[-800:]
        assert "mk01.fjs:0:" in text and ("not UTF-8" in text or "FIFO" in text), text
