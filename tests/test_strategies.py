"""Strategy plug-ins: loading by name and dotted path, and the documented worked example."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from agents.negotiation.strategies import (
    EarliestFinish,
    FirstComeResource,
    order_strategy,
    resource_strategy,
)
from ops.config import load_cell
from security.errors import ConfigurationError
from sim_bridge.report import build_report
from sim_bridge.virtual import VirtualCell

ROOT = Path(__file__).resolve().parents[1]


def test_names_resolve() -> None:
    assert isinstance(order_strategy("earliest_finish"), EarliestFinish)
    assert isinstance(resource_strategy("first_come"), FirstComeResource)


@pytest.mark.parametrize("spec, fragment", [
    ("nope", "unknown strategy"),
    ("no_such_module_xyz:Thing", "cannot load strategy"),
    ("agents.negotiation.strategies:Slot", "not a subclass"),
])
def test_bad_names_are_configuration_errors(spec: str, fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        order_strategy(spec)


def test_worked_example_from_the_docs_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = (ROOT / "docs" / "strategies.md").read_text()
    code = re.search(r"```python\n(.*?)```", doc, re.S)
    assert code is not None
    pkg = tmp_path / "mylab"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "strategies.py").write_text(code.group(1))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("mylab", None)
    sys.modules.pop("mylab.strategies", None)
    cfg = load_cell(ROOT / "cell_configs" / "demo_cell.yaml")
    base = build_report(_run(cfg, None))
    slack = build_report(_run(cfg, "mylab.strategies:SlackAware"))
    for r in (base, slack):
        assert r["orders_completed"] == r["orders_total"]
        assert all(r["invariants"].values())
    assert base["event_log_sha256"] != slack["event_log_sha256"]


def _run(cfg, order: str | None) -> VirtualCell:  # noqa: ANN001
    cell = VirtualCell(cfg, seed=7, order_strategy=order)
    cell.run()
    return cell
