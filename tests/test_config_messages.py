"""Cell-file errors in the words of the person editing the file (issue 18): what to write,
not which pydantic type failed; and `up` prints no negative cell time."""

from __future__ import annotations

from pathlib import Path

import pytest

from ops.config import load_cell, validate_command
from ops.config.hints import key_suggestion
from tests.test_config import BASE, write_cell

ROOT = Path(__file__).resolve().parents[1]


def message(tmp_path: Path, old: str, new: str) -> str:
    assert old in BASE
    code, out = validate_command(write_cell(tmp_path, BASE.replace(old, new)))
    assert code == 2
    return out


def test_power_given_as_a_number_says_what_to_write(tmp_path: Path) -> None:
    out = message(tmp_path, "power_kw: {idle: 0.8, busy: 6.5}", "power_kw: 9.5")
    assert "machines[0].power_kw: power_kw is a mapping, not a single value: write " \
           "`power_kw: {idle: 9.5, busy: 9.5}`" in out
    assert "PowerDraw" not in out and "Input should be" not in out


@pytest.mark.parametrize("written", ["[drilling, milling]", "drilling"])
def test_capabilities_as_a_list_explain_seconds_per_unit(tmp_path: Path, written: str) -> None:
    out = message(tmp_path, "capabilities: {drilling: 15.0}", f"capabilities: {written}")
    assert "capability → seconds per unit" in out
    assert "`capabilities: {drilling: 30.0" in out
    assert "no machine offers" not in out          # one mistake, one message
    assert len(out.splitlines()) == 1


def test_qty_means_quantity(tmp_path: Path) -> None:
    out = message(tmp_path, "quantity: 2,", "qty: 2,")
    assert "orders[0].qty: unknown key 'qty' (did you mean 'quantity'?)" in out


@pytest.mark.parametrize(("key", "allowed", "meant"), [
    ("qty", ["id", "product", "quantity", "release_at", "due_at"], "quantity"),
    ("leas", ["reply_deadline_s", "lease_s"], "lease_s"),
    ("due", ["release_at", "due_at"], "due_at"),
    ("colour", ["id", "product"], None),
])
def test_unknown_keys_get_suggestions(key: str, allowed: list[str], meant: str | None) -> None:
    assert key_suggestion(key, allowed) == meant


@pytest.mark.parametrize(("written", "hint"), [
    ("5", "less than or equal to 1; got 5 — for 5 % write 0.05"),
    ("-0.1", "greater than or equal to 0; got -0.1"), ("1.5", "got 1.5")])
def test_scrap_rate_is_a_fraction(tmp_path: Path, written: str, hint: str) -> None:
    out = message(tmp_path, "scrap_rate: 0.01", f"scrap_rate: {written}")
    assert "scrap_rate is a fraction from 0 to 1 (0.05 means 5 %)" in out and hint in out


def test_a_mapping_given_a_number_lists_its_keys(tmp_path: Path) -> None:
    out = message(tmp_path, "network: {latency_s: 0.001, loss: 0.0}", "network: 3")
    assert "sim.network: network is a mapping with the keys latency_s, jitter_s, loss" in out


def test_up_prints_no_negative_cell_time(tmp_path: Path) -> None:
    from ops.supervisor import Supervisor

    cfg = load_cell(ROOT / "cell_configs" / "demo_cell.yaml")
    lines: list[str] = []
    sup = Supervisor(cfg, "demo_cell.yaml", state_dir=tmp_path, speed=10.0, faults_path=None,
                     faults=None, max_restarts=3, restart_window_s=60.0, until_s=None,
                     timeout_s=None, log=lines.append)
    assert sup.cell_now() < 0                      # before start_at, as when `up` starts
    sup.note("started", processes=len(sup.children), speed=10.0,
             clock_starts_in_s=round(sup.start_at - __import__("time").time(), 2))
    assert lines[0].startswith("[      0.0] started") and "clock_starts_in_s=1." in lines[0]
    assert sup.events[0]["t"] == 0.0
