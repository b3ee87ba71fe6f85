"""``autocell bench bus --json``: the figures are there and agree with each other.

A benchmark, not a test of speed: nothing here compares a figure with a
threshold; it checks the JSON contract and the internal consistency of one
short run (the receiver saw every message, rejected none, the ratio is the
quotient it claims to be, p99 >= p50).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

KEYS = ("signed_msgs_per_s", "verify_bound_per_s", "ratio", "rtt_p50_us", "rtt_p99_us", "library")


@pytest.mark.timeout(180)
def test_bench_bus_json_is_complete_and_consistent(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("autocell")
    assert exe.exists(), "the autocell console script is not installed (pip install -e .)"
    r = subprocess.run([str(exe), "bench", "bus", "--json", "--seconds", "0.5"],
                       capture_output=True, text=True, timeout=150, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1, r.stdout            # exactly one JSON object, nothing else
    data = json.loads(lines[0])
    for key in KEYS:
        assert key in data, key
    assert isinstance(data["library"], str) and data["library"]
    for key in ("signed_msgs_per_s", "verify_bound_per_s", "sign_bound_per_s", "ratio",
                "rtt_p50_us", "rtt_p99_us"):
        assert isinstance(data[key], (int, float)) and data[key] > 0, (key, data[key])
    expected_ratio = data["signed_msgs_per_s"] / data["verify_bound_per_s"]
    assert data["ratio"] == pytest.approx(expected_ratio, abs=1e-3)
    assert data["rtt_p99_us"] >= data["rtt_p50_us"]
    assert data["messages_sent"] > 0
    assert data["messages_received"] == data["messages_sent"]
    assert data["messages_rejected"] == 0
    assert data["rtt_samples"] > 0 and data["envelope_bytes"] > 64
    assert data["seconds"] == 0.5
    stages = data["receive_path_us"]
    # open = authenticate + decode, and authenticate includes the verify itself
    # stages are timed separately: each is positive, but how they compare depends on the
    # machine's load, which is the benchmark's to report, not a test's to assert
    assert all(stages[k] > 0 for k in ("verify_us", "authenticate_us", "decode_us", "open_us"))
    assert stages["open_only_ratio"] == pytest.approx(
        stages["verify_us"] / stages["open_us"], abs=2e-3)
    for mix in ("proposal", "all_types"):    # the decoder both ways (ops/bench/wire.py)
        wire = data["wire_decode_us"][mix]
        assert wire["msgspec_us"] > 0 and wire["reference_us"] > 0


@pytest.mark.timeout(60)
def test_bench_bus_refuses_non_positive_seconds(capsys: pytest.CaptureFixture[str]) -> None:
    from ops.cli import main

    assert main(["bench", "bus", "--json", "--seconds", "0"]) == 2
    assert "--seconds must be positive" in capsys.readouterr().err
