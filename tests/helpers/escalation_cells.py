"""Shared by the multi-process escalation tests (``up`` and ``up --ray``): a small cell,
fault files, the store and event files of a run, the CLI twin in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from agents.escalation.store import EscalationStore
from ops.bench.healing import loopback_cell

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "cell_configs" / "demo_cell.yaml"


def small_cell(tmp_path: Path, **escalation: Any) -> Path:
    """The demo cell's o-001 (bracket) and o-005 (shaft: needs the only lathe), no scrap,
    a short ``max_wait_s`` and deadlines far enough out that a test decides first."""
    data = yaml.safe_load(DEMO.read_text())
    data["orders"] = [o for o in data["orders"] if o["id"] in ("o-001", "o-005")]
    for m in data["machines"]:
        m["scrap_rate"] = 0.0
    data["escalation"] = {"no_capable_resource": {"max_wait_s": 60},
                          "response_deadline_s": 1200, "final_deadline_s": 2400, **escalation}
    src = tmp_path / "src.yaml"
    src.write_text(yaml.safe_dump(data, sort_keys=False))
    return loopback_cell(src, tmp_path)


def faults(tmp_path: Path, **data: Any) -> Path:
    path = tmp_path / "faults.yaml"
    path.write_text(yaml.safe_dump({"name": "test", "mtbf_breakdowns": False, **data}))
    return path


def wait_for(what: str, check: Any, timeout_s: float = 30.0, every_s: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every_s)


def records(db: Path) -> dict[str, Any]:
    """Every escalation record in the store at ``db`` (none if there is no file yet)."""
    if not db.exists():
        return {}
    store = EscalationStore(db)
    try:
        return {r.id: r for r in store.list()}
    finally:
        store.close()


def events(state: Path, name: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (state / f"events-{name}.jsonl").read_text().splitlines()]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``autocell ARGS`` in a subprocess (another process on the same store)."""
    return subprocess.run([sys.executable, "-m", "ops.cli", *args], check=False, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
