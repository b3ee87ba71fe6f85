"""``autocell experiment`` as a process: its own lean Ray leaves nothing behind; Ctrl-C keeps rows.

Slow (it starts a Ray of its own, which takes seconds): marked ``slow``, run by CI.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from ops.experiment.command import run_sweep
from ops.experiment.sweep import load_sweep

ROOT = Path(__file__).resolve().parents[1]
MINIMAL = ROOT / "cell_configs" / "minimal_cell.yaml"

pytestmark = pytest.mark.slow


def processes_mentioning(text: str) -> list[int]:
    """Pids whose command line mentions ``text`` (Ray's processes carry their session dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(int(entry.name))
    return found


def interrupt_after_three_rows(proc: subprocess.Popen, journal: Path,
                               tmpdir: Path) -> tuple[list[dict], list[Path]]:
    """Wait for three journalled rows, press Ctrl-C; the rows and Ray's session dirs seen."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.exists() and len(journal.read_text().splitlines()) >= 3:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
    sessions = list(tmpdir.glob("autocell-ray-*"))
    assert len(sessions) == 1   # Ray's session files live in a private directory
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode()
    assert "Traceback" not in err.decode()
    rows = [json.loads(line) for line in journal.read_text().splitlines()]
    assert len(rows) >= 3 and all(r["status"] == "ok" for r in rows)
    return rows, sessions


def test_lean_local_ray_leaves_no_files_and_ctrl_c_keeps_completed_rows(
        tmp_path: Path, ray_local) -> None:
    home, out = tmp_path / "home", tmp_path / "out"
    home.mkdir()
    # a short TMPDIR: Ray's socket paths below it must stay under 107 bytes
    tmpdir = Path(tempfile.mkdtemp(prefix="ac-t-", dir="/tmp"))
    sweep_file = tmp_path / "long.yaml"
    sweep_file.write_text(f"name: long\ncells: [{MINIMAL}]\n"
                          f"seeds: [{', '.join(str(s) for s in range(60))}]\n")
    env = {**os.environ, "HOME": str(home), "TMPDIR": str(tmpdir)}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen([sys.executable, "-m", "ops.cli", "experiment", str(sweep_file),
                             "--out", str(out), "--workers", "1", "--quiet"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    journal = out / "runs.jsonl"
    try:
        rows, sessions = interrupt_after_three_rows(proc, journal, tmpdir)
        # nothing left behind: no auth-token file, no session directory, no Ray process
        assert not (home / ".ray").exists()
        assert not list(tmpdir.glob("autocell-ray-*"))
        leftover: list[int] = []
        for _ in range(50):
            leftover = processes_mentioning(str(sessions[0]))
            if not leftover:
                break
            time.sleep(0.2)
        assert not leftover, f"Ray processes left running: {leftover}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmpdir, ignore_errors=True)

    # --resume (here on the session's Ray) runs only what the interrupted sweep had not
    resumed = run_sweep(load_sweep(sweep_file), out, workers=2, resume=True)
    assert resumed["skipped"] == len(rows) and resumed["ran"] == 60 - len(rows)
    assert resumed["failed"] == 0
