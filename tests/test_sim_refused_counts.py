"""``autocell sim`` counts every command it refuses without an answering event.

A refused ``start_operation`` or ``move`` is answered (``command_refused`` or
``fault``); a ``set_state`` for a robot or an unknown id, and an unknown
command, are not — so the plant server counts them in the ``refused`` map of
``status-sim.json``, next to ``forbidden_resource`` (docs/PROTOCOL.md §13.2, §13.3).
"""

from __future__ import annotations

import time
from pathlib import Path

from agents.protocol.messages import Message, PlantCommand

ROOT = Path(__file__).resolve().parent.parent


def _server(tmp_path: Path):  # noqa: ANN202 - a PlantServer, imported lazily
    from agents.runtime.host import CellClock
    from ops.config import load_cell
    from ops.up import ensure_keys
    from sim_bridge.remote import PlantServer

    cfg = load_cell(ROOT / "cell_configs" / "demo_cell.yaml")
    state = tmp_path / "state"
    state.mkdir()
    keys = ensure_keys(cfg, state)
    return PlantServer(cfg, keys_dir=keys, state_dir=state, clock=CellClock(time.time(), 1.0))


def _command(sender: str, command: str, args: dict | None = None) -> Message:
    return Message(sender, "sim", "", bytes(16), 1, 1, time.time(),
                   PlantCommand(command, sender, "", dict(args or {})))


def test_a_refused_set_state_and_an_unknown_command_are_counted(tmp_path: Path) -> None:
    server = _server(tmp_path)
    try:
        server._on_message(_command("agv1", "set_state", {"state": "down"}))   # a robot
        server._on_message(_command("mill1", "calibrate"))                    # unknown command
        server._on_message(_command("mill1", "set_state", {"state": "up"}))  # already up: no-op
        server._on_message(_command("mill1", "start_operation"))   # starts
        server._on_message(_command("mill1", "start_operation"))   # refused, and answered
        refused = server.status()["refused"]
        assert refused == {"set_state": 1, "unknown_command": 1}, refused
        assert len(server.plant.stats.refused) == 3
    finally:
        server.events.close()
