"""The README's two commands: the demo runs exactly as written, CI runs the test command.

The first fenced block installs autocell and runs the demo.  The install has
already happened in the test environment, so the test runs the part after
``pip install -e .`` — the ``autocell run …`` command, unchanged — with the
environment's ``bin`` directory first on ``PATH``, from the repository root,
as someone who just followed the README would.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)


def fenced_blocks() -> list[tuple[str, str]]:
    return [(lang, body.strip()) for lang, body in FENCE.findall(README)]


def commands() -> tuple[str, str]:
    (lang1, first), (lang2, second) = fenced_blocks()[:2]
    assert (lang1, lang2) == ("sh", "sh")
    return first, second


def after_install(command: str) -> str:
    steps = [s.strip() for s in command.split("&&")]
    assert "pip install -e ." in steps, f"no 'pip install -e .' step in {command!r}"
    rest = steps[steps.index("pip install -e .") + 1:]
    assert rest, f"nothing after the install in {command!r}"
    return " && ".join(rest)


def test_the_two_commands_are_the_first_two_fenced_blocks() -> None:
    first, second = commands()
    assert "\n" not in first and "\n" not in second          # one command each, copy-paste
    assert first.startswith("python3 -m venv .venv && . .venv/bin/activate && ")
    assert first.endswith("pip install -e . && autocell run cell_configs/demo_cell.yaml")
    assert second.startswith("bash tests/setup.sh && python3 -m venv .venv && "
                             ". .venv/bin/activate && ")
    assert second.endswith("pip install -e '.[test]' && python -m pytest")
    # nothing but a title comes before them
    assert README.index("```") < README.index("\n## ")


def test_ci_runs_the_second_command_verbatim() -> None:
    """.ci/run reads the command from the README (so the two cannot drift): its extraction,
    run on this README, gives exactly the second command, which it then executes."""
    _, second = commands()
    ci = (ROOT / ".ci" / "run").read_text()
    extract = next(line for line in ci.splitlines() if line.startswith("cmd=$("))
    out = subprocess.run(["bash", "-c", f'{extract}; printf %s "$cmd"'], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert out == second
    assert 'exec bash -c "$cmd"' in ci
    assert os.access(ROOT / ".ci" / "run", os.X_OK)


def test_the_setup_script_says_what_to_install_when_it_cannot(tmp_path: Path) -> None:
    """Not root and a package missing: a clear message naming it, exit 1 (PATH without
    prometheus makes it missing whatever this machine has)."""
    bare = tmp_path / "bin"
    bare.mkdir()
    for tool in ("bash", "id", "env"):
        found = subprocess.run(["bash", "-c", f"command -v {tool}"], capture_output=True,
                               text=True).stdout.strip()
        (bare / tool).symlink_to(found)
    fake_id = bare / "id"
    fake_id.unlink()
    fake_id.write_text("#!/bin/sh\necho 1000\n")      # not root
    fake_id.chmod(0o755)
    proc = subprocess.run([str(bare / "bash"), str(ROOT / "tests" / "setup.sh")],
                          env={"PATH": str(bare)}, capture_output=True, text=True)
    assert proc.returncode == 1
    assert "prometheus" in proc.stderr and "apt-get install -y" in proc.stderr
    assert "nodejs npm" in proc.stderr          # no node on that PATH either


def test_the_demo_command_runs_as_written() -> None:
    first, _ = commands()
    demo = after_install(first)
    assert demo == "autocell run cell_configs/demo_cell.yaml"
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    proc = subprocess.run(demo, shell=True, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "orders completed" in out
    assert re.search(r"orders completed / total\s*│\s*24 / 24", out), out
    assert "VIOLATED" not in out
    assert out.count("holds") == 5
    assert "demo-cell" in out
