"""Maintenance under ``autocell up``: where the crew runs, and the negotiated policy on real
processes (docs/maintenance.md, "Operations").

The first tests are fast: ``hosts[].agents`` accepts every agent the cell's build makes —
the technician crew of a negotiating cell, the energy manager of a capped one — and names
the known ids, with the line, for one it does not make.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from agents.runtime.host import routes_of
from ops.config import ConfigError, load_cell

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "cell_configs" / "demo_cell_maintenance.yaml"


def _negotiating(tmp_path: Path, *, negotiate: bool = True, extra: list[str] | None = None,
                 name: str = "cell.yaml") -> Path:
    """The maintenance demo with a fourth host, ``crew-host``, listing ``crew`` (and
    ``extra``)."""
    data = yaml.safe_load(DEMO.read_text())
    data["maintenance"]["negotiate"] = negotiate
    data["hosts"].append({"name": "crew-host", "endpoint": "tcp://127.0.0.1:5604",
                          "agents": ["crew", *(extra or [])]})
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_hosts_agents_places_the_crew(tmp_path: Path) -> None:
    cfg = load_cell(_negotiating(tmp_path))
    assert cfg.host_of("crew") == "crew-host"
    assert routes_of(cfg)["crew"] == "tcp://127.0.0.1:5604"
    assert cfg.host_of("mill1") == "machines"


def test_hosts_agents_places_the_energy_manager(tmp_path: Path) -> None:
    data = yaml.safe_load((ROOT / "cell_configs" / "demo_cell_energy.yaml").read_text())
    data["hosts"][-1].setdefault("agents", []).append("energy")
    path = tmp_path / "energy.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    cfg = load_cell(path)
    assert cfg.host_of("energy") == data["hosts"][-1]["name"]
    assert routes_of(cfg)["energy"] == data["hosts"][-1]["endpoint"]


def test_an_agent_the_cell_does_not_build_is_named_with_its_line(tmp_path: Path) -> None:
    path = _negotiating(tmp_path, extra=["ghost"])
    with pytest.raises(ConfigError) as err:
        load_cell(path)
    text = str(err.value)
    line = next(i for i, x in enumerate(path.read_text().splitlines(), 1) if "ghost" in x)
    assert f"{path}:{line}: hosts[3].agents[1]: unknown agent 'ghost'" in text
    assert "unknown agent 'ghost'" in text and "(known: crew, mill1" in text


def test_the_crew_of_a_cell_that_does_not_negotiate_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_cell(_negotiating(tmp_path, negotiate=False))
    text = str(err.value)
    assert "unknown agent 'crew'" in text and "maintenance.negotiate is true" in text
