"""``autocell up --ray`` and a process that refuses to start (issue 20, class 5; ADR 42).

Under ``up``, a child that exits 2 — bad input, a damaged journal — is not
restarted: it would fail the same way, and the run stops with its message and
exit 2.  Under ``--ray`` the same process is a Ray actor: it must not die (Ray
would restart it ``max_restarts`` times and the driver would report a gone
actor), but end, say why through ``wait``, and the driver stop with exit 2.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import ModuleType

import pytest
from helpers.hostile import MINIMAL

from ops.config import load_cell
from ops.ray_up import CellProcess, RaySupervisor
from ops.supervisor import EXIT_USAGE, ensure_keys


def test_a_host_on_a_damaged_journal_ends_its_actor_with_the_message(tmp_path: Path) -> None:
    """The actor's own code, without Ray: the host's journal is garbage, so the process
    refuses (no ``os._exit``, which would take this test down with it) and ``wait`` names
    the journal and what to do."""
    cfg = load_cell(MINIMAL)
    host = "main"                     # the minimal cell's one host
    ensure_keys(cfg, tmp_path)
    journal = tmp_path / f"journal-{host}.sqlite"
    journal.write_bytes(b"\x00garbage, not SQLite\xff" * 64)
    proc = CellProcess("host", str(MINIMAL), host, str(tmp_path), 1.0, None)
    proc.begin(time.time())
    ended = proc.wait()
    assert ended["refused"] is True
    assert str(journal) in ended["error"] and "move it aside" in ended["error"]


def test_a_garbage_cell_file_ends_its_actor_with_the_message(tmp_path: Path) -> None:
    bad = tmp_path / "cell.yaml"
    bad.write_bytes(b"cell: [\x07\x00")
    proc = CellProcess("sim", str(bad), "sim", str(tmp_path), 1.0, None)
    proc.begin(time.time())
    ended = proc.wait()
    assert ended["refused"] is True and "cell.yaml" in ended["error"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_up_ray_stops_with_exit_2_when_an_actor_refuses(ray_local: ModuleType,
                                                        tmp_path: Path) -> None:
    """On a real local Ray: the driver loaded a good cell, but the actors read a file that
    has become garbage since.  Every actor refuses; the run stops at once with exit 2 and
    the message, and no actor is restarted."""
    cfg = load_cell(MINIMAL)
    bad = tmp_path / "cell.yaml"
    bad.write_bytes(b"cell: [\x07\x00")
    state = tmp_path / "state"
    state.mkdir()
    said: list[str] = []
    sup = RaySupervisor(cfg, str(bad), state_dir=state, speed=1.0, faults_path=None,
                        faults=None, max_restarts=3, restart_window_s=60.0, until_s=None,
                        timeout_s=120.0, log=said.append, keys_dir=ensure_keys(cfg, state))
    t0 = time.monotonic()
    code = sup.run()
    assert code == EXIT_USAGE
    assert sup.refused is not None and "cell.yaml" in sup.refused
    assert any("cannot start" in line and "cell.yaml" in line for line in said), said
    assert all(c.respawns == 0 for c in sup.children.values())
    assert not sup.gone
    assert time.monotonic() - t0 < 120.0
