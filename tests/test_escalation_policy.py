"""The escalation policy in the cell config: defaults, shorthand, FILE:LINE errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from ops.config import load_cell, validate_command

ROOT = Path(__file__).resolve().parents[1]
MINIMAL = (ROOT / "cell_configs" / "minimal_cell.yaml").read_text()


def cell_with(tmp_path: Path, section: str) -> tuple[Path, int]:
    """The minimal cell plus an escalation section; returns the path and its first line."""
    text = MINIMAL.rstrip("\n") + "\n"
    first = text.count("\n") + 1
    path = tmp_path / "cell.yaml"
    path.write_text(text + section)
    return path, first


def test_defaults_cover_the_six_situations() -> None:
    esc = load_cell(ROOT / "cell_configs" / "minimal_cell.yaml").escalation
    rules = [esc.no_capable_resource, esc.late_reroute, esc.repeat_faults,
             esc.restart_intensity, esc.quality_reject, esc.reject_burst]
    assert all(r.enabled for r in rules)
    assert all(1 <= r.priority <= 4 for r in rules)
    assert esc.no_capable_resource.priority == 1 and esc.quality_reject.priority == 3
    assert esc.final_deadline_s > esc.response_deadline_s
    assert (esc.flood.count, esc.flood.window_s) == (10, 600.0)


def test_bool_shorthand_switches_a_rule(tmp_path: Path) -> None:
    path, _ = cell_with(tmp_path, "escalation:\n  quality_reject: false\n"
                                  "  late_reroute: {late_by_s: 60}\n")
    esc = load_cell(path).escalation
    assert not esc.quality_reject.enabled
    assert esc.late_reroute.enabled and esc.late_reroute.late_by_s == 60


@pytest.mark.parametrize(("section", "offset", "where", "fragment"), [
    ("escalation:\n  response_deadline_s: 900\n  final_deadline_s: 600\n", 0, "escalation",
     "final_deadline_s (600) must be longer than response_deadline_s (900)"),
    ("escalation:\n  quality_reject: {priority: 7}\n", 1, "escalation.quality_reject.priority",
     "less than or equal to 4"),
    ("escalation:\n  no_capable_resource: {max_wait_s: -1}\n", 1,
     "escalation.no_capable_resource.max_wait_s", "greater than or equal to 0"),
    ("escalation:\n  flood: {count: 0}\n", 1, "escalation.flood.count",
     "greater than or equal to 1"),
    ("escalation:\n  max_shelve_s: 0\n", 1, "escalation.max_shelve_s", "greater than 0"),
    ("escalation:\n  late_reroute: {late_by: 60}\n", 1, "escalation.late_reroute.late_by",
     "unknown key 'late_by'"),
], ids=["deadline order", "priority range", "negative wait", "flood count", "shelve time",
        "typo"])
def test_policy_errors_name_file_line_and_path(tmp_path: Path, section: str, offset: int,
                                               where: str, fragment: str) -> None:
    path, first = cell_with(tmp_path, section)
    code, report = validate_command(path)
    assert code == 2
    prefix = f"{path}:{first + offset}: {where}: "
    rows = [r for r in report.splitlines() if r.startswith(prefix)]
    assert rows, f"no issue starting {prefix!r} in:\n{report}"
    assert fragment in rows[0]


def test_false_switches_off_the_count_rules_too(tmp_path: Path) -> None:
    """``false`` alone is documented for every rule, the count/window ones included."""
    path, _ = cell_with(tmp_path, "escalation:\n  repeat_faults: false\n  reject_burst: false\n")
    esc = load_cell(path).escalation
    assert not esc.repeat_faults.enabled and not esc.reject_burst.enabled
    path, _ = cell_with(tmp_path, "escalation:\n  repeat_faults: {count: 5}\n")
    esc = load_cell(path).escalation
    assert (esc.repeat_faults.count, esc.repeat_faults.window_s) == (5, 3600.0)
    assert (esc.reject_burst.count, esc.reject_burst.window_s, esc.reject_burst.priority) == (
        20, 60.0, 1)
