"""``autocell bench bus --metrics``: both figures from one run, and the cost they imply.

No threshold on speed here (benchmarks are re-measured on a quiet machine);
the test checks the contract: the with-metrics rounds really scraped the
receiver's metrics endpoint, and cost_pct is the quotient it claims to be.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_bench_bus_metrics_reports_both_rates_and_the_cost(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("autocell")
    r = subprocess.run([str(exe), "bench", "bus", "--json", "--metrics", "--seconds", "1.5"],
                       capture_output=True, text=True, timeout=200, cwd=tmp_path, check=False)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    m = data["metrics"]
    assert m["signed_msgs_per_s_without"] == data["signed_msgs_per_s"] > 0
    assert m["signed_msgs_per_s_with"] > 0
    assert m["cost_pct"] == pytest.approx(
        100 * (m["signed_msgs_per_s_without"] - m["signed_msgs_per_s_with"])
        / m["signed_msgs_per_s_without"], abs=0.01)
    assert m["scrapes"] >= 3 and len(m["rounds"]) == 3   # every round with metrics scraped
    assert data["messages_rejected"] == 0
