"""``autocell bench scale``: run tiny, check the JSON contract and the counts.

A benchmark, not a test of speed: no figure is compared with a time
threshold.  What is checked could fail: the message count per task is
exactly ``3B + 1`` (so every cfp was answered, every proposal awarded or
rejected, every award confirmed), every agent received its signed probe,
nothing was rejected, and the fit helpers are right on known data.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ops.bench.scale import agent_ids, growth, linear_fit, quadratic_share


def _autocell() -> str:
    exe = Path(sys.executable).with_name("autocell")
    assert exe.exists(), "the autocell console script is not installed (pip install -e .)"
    return str(exe)


@pytest.mark.timeout(120)
def test_bench_scale_json_tiny(tmp_path: Path) -> None:
    r = subprocess.run([_autocell(), "bench", "scale", "--agents", "10", "--bidders", "1,2,5",
                        "--tasks", "3", "--json"], check=False, capture_output=True, text=True,
                       timeout=100,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1, r.stdout
    data = json.loads(lines[0])
    assert data["shared_inbound_socket"] is True
    assert set(data["targets"]) >= {"ready_within_5_s_at_largest", "largest_agents",
                                    "per_task_cost_linear_in_bidders"}
    [size] = data["sizes"]
    assert (size["agents"], size["orders"], size["machines"]) == (10, 1, 9)
    assert 0 < size["bind_s"] <= size["ready_s"]
    assert size["keys_s"] > 0
    assert size["rejected"] == {}
    # the list as given: every value fits in 9 machines
    assert [p["bidders"] for p in size["per_task"]] == [1, 2, 5]
    for p in size["per_task"]:
        assert p["messages_per_task"] == 3 * p["bidders"] + 1
        assert p["wall_us_per_task"] > 0 and p["latency_p50_us"] > 0 and p["us_per_message"] > 0
        assert p["cpu_us_per_task"] > 0 and p["cpu_us_per_message"] > 0
        assert p["latency_max_us"] >= p["latency_p50_us"]
    g = size["growth"]
    assert g["points"] == 3
    assert g["messages_slope_per_bidder"] == pytest.approx(3.0)
    assert g["messages_intercept"] == pytest.approx(1.0)
    assert 0.0 <= g["r2"] <= 1.0 and isinstance(g["linear"], bool)


def test_bench_scale_sweeps_up_to_every_machine(tmp_path: Path) -> None:
    from ops.bench.scale import run

    r = run(agents=(10,), bidders=(2, 50), tasks=2)
    assert [p["bidders"] for p in r["sizes"][0]["per_task"]] == [2, 9]


def test_bench_scale_bad_input_exits_2(tmp_path: Path) -> None:
    for flags in (["--agents", "1"], ["--agents", "ten"], ["--bidders", "0"], ["--tasks", "0"]):
        r = subprocess.run([_autocell(), "bench", "scale", *flags], check=False,
                           capture_output=True,
                           text=True, timeout=60, cwd=tmp_path)
        assert r.returncode == 2, (flags, r.stderr)
        assert "Traceback" not in r.stderr
        assert r.stderr.startswith("autocell: error:"), r.stderr


def test_agent_ids_split() -> None:
    roles = agent_ids(1000)
    assert len(roles) == 1000
    assert sum(r == "order" for r in roles.values()) == 100
    with pytest.raises(ValueError):
        agent_ids(1)


def test_fits_on_known_data() -> None:
    xs = [1.0, 2.0, 5.0, 10.0, 20.0]
    fit = linear_fit(xs, [3.0 + 2.0 * x for x in xs])
    assert fit["slope"] == pytest.approx(2.0) and fit["intercept"] == pytest.approx(3.0)
    assert fit["r2"] == pytest.approx(1.0)
    assert quadratic_share(xs, [3.0 + 2.0 * x for x in xs]) == pytest.approx(0.0, abs=1e-6)
    # y = x²: the quadratic term is the whole fit at the largest x
    assert quadratic_share(xs, [x * x for x in xs]) == pytest.approx(1.0, abs=1e-6)
    quad = growth([{"bidders": x, "cpu_us_per_task": x * x, "messages_per_task": 3 * x + 1}
                   for x in xs])
    assert quad["linear"] is False and quad["per_message_ratio_max_min_b"] > 1.25
    lin = growth([{"bidders": x, "cpu_us_per_task": 100 + 50 * x, "messages_per_task": 3 * x + 1}
                  for x in xs])
    assert lin["linear"] is True and lin["slope_us_per_bidder"] == pytest.approx(50.0)


@pytest.mark.timeout(120)
def test_bench_negotiation_json_tiny(tmp_path: Path) -> None:
    r = subprocess.run([_autocell(), "bench", "negotiation", "--bidders", "3", "--rounds", "5",
                        "--processes", "2", "--json"], check=False, capture_output=True,
                       text=True, timeout=100, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1, r.stdout
    d = json.loads(lines[0])
    assert (d["bidders"], d["processes"], d["rounds"]) == (3, 2, 5)
    # every cfp of every round (warm-up included) got exactly one verified proposal back
    assert d["proposals_received"] == 3 * (d["rounds"] + d["warmup"])
    assert d["rejected"] == {} and d["peer_rejected"] == {}
    assert 0 < d["round_p50_us"] <= d["round_p99_us"] <= d["round_max_us"]
    assert d["sign_us"] > 0 and d["verify_us"] > 0 and d["caller_cpu_us_per_round"] > 0
    # the cfp is one multicast envelope per round (the product path): one seal, 3 verifies
    assert d["cfp"] == "multicast" and d["cfp_envelopes_per_round"] == 1.0
    assert d["caller_signs_per_round"] == 1
    assert d["caller_crypto_us"] == pytest.approx(d["sign_us"] + 3 * d["verify_us"], rel=0.01)
    assert set(d["targets"]) == {"round_p99_within_5_ms", "round_p99_within_5_ms_every_layout"}
    assert [x["processes"] for x in d["layouts"]] == [2]
    assert d["layouts"][0]["round_p99_us"] == d["round_p99_us"]


@pytest.mark.timeout(120)
def test_bench_negotiation_layouts_and_unicast(tmp_path: Path) -> None:
    r = subprocess.run([_autocell(), "bench", "negotiation", "--bidders", "3", "--rounds", "5",
                        "--processes", "3,1", "--cfp", "unicast", "--json"], check=False,
                       capture_output=True, text=True, timeout=100, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert [x["processes"] for x in d["layouts"]] == [3, 1] and d["processes"] == 3
    for x in d["layouts"]:
        assert x["proposals_received"] == 3 * (d["rounds"] + d["warmup"])
        assert x["rejected"] == {} and x["peer_rejected"] == {}
        assert x["cfp_envelopes_per_round"] == 3.0            # one envelope per bidder
        assert 0 < x["round_p50_us"] <= x["round_p99_us"] <= x["round_max_us"]
    assert d["caller_signs_per_round"] == 3
    assert d["targets"]["round_p99_within_5_ms_every_layout"] == all(
        x["round_p99_us"] <= 5000 for x in d["layouts"])


def test_bench_negotiation_bad_input_exits_2(tmp_path: Path) -> None:
    for flags in (["--bidders", "0"], ["--rounds", "0"], ["--processes", "5", "--bidders", "2"],
                  ["--processes", "1,x"], ["--processes", "0,1"]):
        r = subprocess.run([_autocell(), "bench", "negotiation", *flags], check=False,
                           capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert r.returncode == 2, (flags, r.stderr)
        assert r.stderr.startswith("autocell: error:"), r.stderr
    r = subprocess.run([_autocell(), "bench", "negotiation", "--cfp", "broadcast"], check=False,
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 2 and "invalid choice: 'broadcast'" in r.stderr, r.stderr
