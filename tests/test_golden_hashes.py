"""Golden event-log hashes: refactorings must not change what a run does.

Every run here is virtual time, so the same config and seed give the same
event log byte for byte; ``tests/data/golden_hashes.json`` holds the
``event_log_sha256`` of each case as recorded before the one-runtime
restructuring (docs/decisions.md, ADR 37).  A case whose hash changes on
purpose (a behaviour fixed on purpose) is re-recorded with

    python tests/test_golden_hashes.py --write

and the change is explained in an ADR.  Runs go through the command line
(``ops.cli.main``), the interface users have, so the test survives any
reshuffle of the modules behind it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "data" / "golden_hashes.json"
SHARED = ROOT.parent / "shared" / "benchmarks" / "fjsp"
DEMO = "cell_configs/demo_cell.yaml"
NOJITTER = "tests/data/demo_cell_nojitter.yaml"
FAULTS = ["breakdowns", "crash", "long_outage", "lossy_network", "partition"]
CHAOS_SEEDS = range(1, 13)


def cases() -> dict[str, list[str]]:
    """Case name -> the command-line arguments of its run (``--report`` added later)."""
    out: dict[str, list[str]] = {
        "demo/seed1": ["run", DEMO, "--seed", "1"],
        "minimal/seed1": ["run", "cell_configs/minimal_cell.yaml", "--seed", "1"],
        "ft06/seed1": ["run", str(SHARED / "ft06.jsp"), "--seed", "1"],
        "mk01/seed1": ["run", str(SHARED / "mk01.fjs"), "--seed", "1"],
    }
    for f in FAULTS:
        for seed in (1, 2):
            out[f"demo/{f}/seed{seed}"] = ["run", DEMO, "--seed", str(seed),
                                           "--faults", f"cell_configs/faults/{f}.yaml"]
    # without jitter, plain deliveries coincide and the runner merges a call for proposals
    # into one multicast envelope: the log must be the one the unicast driver wrote
    for f in ("", "crash", "partition"):
        args = ["run", NOJITTER, "--seed", "1"]
        out[f"demo-nojitter/{f or 'plain'}/seed1"] = (
            args + ["--faults", f"cell_configs/faults/{f}.yaml"] if f else args)
    for seed in CHAOS_SEEDS:
        out[f"chaos/seed{seed}"] = ["chaos", DEMO, "--seed", str(seed), "--orders", "8"]
    return out


def run_hash(args: list[str], report: Path) -> str:
    from ops.cli import main

    code = main([*args, "--report", str(report), "--quiet"])
    assert code in (0, 1), f"autocell {' '.join(args)} exited {code}"
    return json.loads(report.read_text())["event_log_sha256"]


@pytest.mark.parametrize("name", sorted(cases()))
def test_event_log_hash_unchanged(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                  ) -> None:
    monkeypatch.chdir(ROOT)
    golden = json.loads(GOLDEN.read_text())
    assert run_hash(cases()[name], tmp_path / "r.json") == golden[name], (
        f"the event log of {name} changed: a refactoring changed behaviour (or re-record "
        "on purpose, with an ADR: python tests/test_golden_hashes.py --write)")


if __name__ == "__main__":
    import os
    import tempfile

    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_golden_hashes.py --write")
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory() as d:
        table = {name: run_hash(args, Path(d) / "r.json") for name, args in sorted(cases().items())}
    GOLDEN.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(table)} hashes to {GOLDEN}")
