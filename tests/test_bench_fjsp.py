"""``autocell bench fjsp DIR --json``: the interface (keys) and honest arithmetic, on ft06."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ops.cli import main

SHARED = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "fjsp"


@pytest.fixture(scope="module")
def ft06_result(tmp_path_factory: pytest.TempPathFactory) -> dict:
    if not (SHARED / "ft06.jsp").exists():
        pytest.fail(f"{SHARED} is missing: the benchmarks ship with the workspace")
    d = tmp_path_factory.mktemp("fjsp")
    shutil.copy(SHARED / "ft06.jsp", d / "ft06.jsp")
    rows = [line for line in (SHARED / "bks.csv").read_text().splitlines()
            if line.startswith(("instance,", "ft06,"))]
    (d / "bks.csv").write_text("\n".join(rows) + "\n")
    return {"dir": d}


def test_bench_fjsp_json_keys_and_figures(ft06_result: dict,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "fjsp", str(ft06_result["dir"]), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert set(r["mean_gap_pct"]) == {"agents", "SPT", "MWKR", "FIFO"}
    [e] = r["instances"]
    assert e["instance"] == "ft06" and e["bks"] == 55
    for m in ("agents", "SPT", "MWKR", "FIFO"):
        assert e[m]["valid"], e[m]["problems"]
        assert e[m]["makespan"] >= e["bks"]          # nobody beats the optimum
        assert e[m]["gap_pct"] == pytest.approx(100 * (e[m]["makespan"] - 55) / 55, abs=0.01)
    best = min(("SPT", "MWKR", "FIFO"), key=lambda m: e[m]["makespan"])
    assert e["best_rule"] == best
    assert e["agents_minus_best_rule"] == pytest.approx(
        e["agents"]["makespan"] - e[best]["makespan"], abs=1e-3)
    # the agents talk before the first operation starts: a little, not nothing
    assert 0 < e["agents"]["first_start_at"] < 1.0
    assert r["worse_than_best_rule"] == (["ft06"] if e["agents_minus_best_rule"] > 0 else [])
    assert set(r["worse_than_best_rule_beyond_latency"]) <= set(r["worse_than_best_rule"])


def test_bench_fjsp_refuses_a_directory_without_bks(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "fjsp", str(tmp_path)]) == 2
    assert "bks.csv" in capsys.readouterr().err
