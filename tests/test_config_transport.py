"""Teleporting parts (issue 18): a cell whose parts must move between locations and which has
no robot is refused by `validate`, unless it says transport is instantaneous."""

from __future__ import annotations

from pathlib import Path

import pytest

from ops.config import ConfigError, load_cell, validate_command

CELL = """\
cell: two-bays
layout:
  locations:
    - {id: store, x: 0.0, y: 0.0}
    - {id: bay1, x: 10.0, y: 0.0}
    - {id: bay2, x: 10.0, y: 8.0}
  input: store
%(transport)s
machines:
  - {id: mill1, location: %(mill)s, capabilities: {milling: 30.0}}
  - {id: drill1, location: %(drill)s, capabilities: {drilling: 15.0}}
products:
  - id: bracket
    routing:
      - {op: cut, capability: milling}
      - {op: drill, capability: drilling}
orders:
  - {id: o-001, product: bracket, quantity: 1, release_at: 0, due_at: 900}
"""


def cell(tmp_path: Path, *, transport: str = "", mill: str = "bay1", drill: str = "bay2",
         input_: str = "store") -> Path:
    path = tmp_path / "cell.yaml"
    text = CELL % {"transport": f"  transport: {transport}" if transport else "",
                   "mill": mill, "drill": drill}
    path.write_text(text.replace("input: store", f"input: {input_}"))
    return path


def test_several_locations_without_robots_is_an_error(tmp_path: Path) -> None:
    code, out = validate_command(cell(tmp_path))
    assert code == 2
    assert "cell.yaml:2: layout: parts move between 3 locations (bay1, bay2, store)" in out
    assert "no robots" in out and "transport: instantaneous" in out


def test_instantaneous_transport_is_said_explicitly(tmp_path: Path) -> None:
    cfg = load_cell(cell(tmp_path, transport="instantaneous"))
    assert cfg.layout.transport == "instantaneous" and cfg.robots == []


def test_everything_at_one_location_needs_no_robot(tmp_path: Path) -> None:
    cfg = load_cell(cell(tmp_path, mill="store", drill="store"))
    assert len(cfg.layout.locations) == 3       # unused locations move no part


def test_a_misspelt_transport_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_cell(cell(tmp_path, transport="instant"))
    assert any(i.path == "layout.transport" for i in caught.value.issues)


@pytest.mark.parametrize("path", sorted(Path(__file__).resolve().parents[1].glob(
    "cell_configs/*.yaml")), ids=lambda p: p.name)
def test_every_shipped_cell_still_validates(path: Path) -> None:
    assert validate_command(path)[0] == 0
