"""``bench bus --decision-log`` and ``bench negotiation --decision-log``: the JSON's shape.

The cost of recording is a figure for the docs (docs/flight-recorder.md, "Cost"),
measured on a quiet host; here nothing compares it with a threshold.  One tiny run of
each checks that the recording half ran and that the figures the docs quote exist and
are numbers, so a change to either bench cannot drop them unnoticed.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest


def _bench(tmp_path: Path, *argv: str, who: str = "") -> dict:
    exe = Path(sys.executable).with_name("autocell")
    r = subprocess.run([str(exe), "bench", *argv, "--decision-log", *([who] if who else []),
                        "--json"], check=False,
                       capture_output=True, text=True, timeout=150, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1, r.stdout            # exactly one JSON object, nothing else
    return dict(json.loads(lines[0]))


def _number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


@pytest.mark.timeout(180)
def test_bench_bus_decision_log_json(tmp_path: Path) -> None:
    d = _bench(tmp_path, "bus", "--seconds", "0.3")["decision_log"]
    assert set(d) >= {"signed_msgs_per_s_without", "signed_msgs_per_s_with", "cost_pct",
                      "rounds"}
    assert _number(d["cost_pct"])
    assert d["signed_msgs_per_s_with"] > 0 and d["signed_msgs_per_s_without"] > 0
    assert d["rounds"] and all(x > 0 for x in d["rounds"])
    assert d["within_5_pct"] is (d["cost_pct"] <= 5.0)


@pytest.mark.timeout(180)
def test_bench_negotiation_decision_log_json(tmp_path: Path) -> None:
    r = _bench(tmp_path, "negotiation", "--bidders", "3", "--rounds", "20",
               "--decision-log-rounds", "40", "--processes", "2")
    d = r["decision_log"]
    # issue 19's verdict, from the three figures it names
    assert r["targets"]["decision_log_within_5_pct"] is all(
        d[k]["cost_pct"] <= 5.0 for k in ("round_p50_us", "round_p99_us",
                                          "caller_cpu_us_per_round"))
    for k in ("round_p50_us", "round_p99_us", "caller_cpu_us_per_round",
              "bidders_cpu_us_per_round", "cell_cpu_us_per_round"):
        assert set(d[k]) - {"ci95_pct"} == {"without", "with", "cost_pct"}, (k, d[k])
        assert _number(d[k]["cost_pct"]), (k, d[k])
        assert d[k]["without"] > 0 and d[k]["with"] > 0
    for mode in ("without", "with"):            # every process's CPU: the caller's and theirs
        assert d["cell_cpu_us_per_round"][mode] == pytest.approx(
            d["caller_cpu_us_per_round"][mode] + d["bidders_cpu_us_per_round"][mode], abs=0.2)
    for k in ("round_p50_us", "round_p99_us", "caller_cpu_us_per_round"):
        lo, hi = d[k]["ci95_pct"]                # 2 pairs of blocks of 10: an interval
        assert _number(lo) and _number(hi), (k, d[k])
    assert d["block_rounds"] > 0
    assert d["rounds"] == 40
    assert d["recording"] == "all"
    assert d["caller_entries"] > 0              # the caller did record
    # and so did the bidders: a call answered with a bid, per bidder and recorded round
    assert d["bidders_entries"] == 3 * 20
    assert d["wakes_per_round"]["without"] > 0 and d["wakes_per_round"]["with"] > 0
    # what recording costs per entry (ADR 103): a round's call and its 3 proposals in the
    # caller, a bid per bidder; the Δ of each side's CPU per round over those entries
    assert d["caller_entries_per_round"] == 4.0
    assert d["bidders_entries_per_round"] == 3.0
    for side in ("caller", "bidders"):
        cpu = d[f"{side}_cpu_us_per_round"]
        assert d[f"{side}_us_per_entry"] == pytest.approx(
            (cpu["with"] - cpu["without"]) / d[f"{side}_entries_per_round"], abs=0.01)
    assert _number(d["caller_us_per_entry_over_verify"])


@pytest.mark.timeout(180)
def test_bench_negotiation_decision_log_with_awards(tmp_path: Path) -> None:
    """``--award``: each round ends with the order's award, recorded in the caller's log
    (a call, 3 proposals, the award: 5 entries a recorded round, 10 rounds of 20 recorded)."""
    r = _bench(tmp_path, "negotiation", "--bidders", "3", "--rounds", "20",
               "--decision-log-rounds", "20", "--processes", "2",
               "--award")
    d = r["decision_log"]
    assert d["award"] is True
    assert d["caller_entries"] == 10 * 5
    assert r["cfp_envelopes_per_round"] == 1.0      # the awards are not counted as calls


@pytest.mark.timeout(180)
def test_bench_negotiation_decision_log_in_the_bidders_only(tmp_path: Path) -> None:
    """``--decision-log bidders``: the rounds alternate as with every process recording, but
    the caller keeps no log (ADR 92 splits the cost this way)."""
    d = _bench(tmp_path, "negotiation", "--bidders", "3", "--rounds", "20",
               "--decision-log-rounds", "20", "--processes",
               "2", who="bidders")["decision_log"]
    assert d["recording"] == "bidders"
    assert d["caller_entries"] == 0
    assert d["bidders_entries"] == 3 * 10
    assert d["caller_us_per_entry"] is None and d["caller_us_per_entry_over_verify"] is None
    assert _number(d["bidders_us_per_entry"])
    assert _number(d["caller_cpu_us_per_round"]["cost_pct"])


def test_the_decision_log_verdict_needs_every_figure_within_5_pct() -> None:
    from ops.bench.negotiation import decision_log_within

    def d(p50: float | None, p99: float | None, cpu: float | None) -> dict:
        return {"round_p50_us": {"cost_pct": p50}, "round_p99_us": {"cost_pct": p99},
                "caller_cpu_us_per_round": {"cost_pct": cpu},
                "bidders_cpu_us_per_round": {"cost_pct": 40.0}}    # not a target figure

    assert decision_log_within(d(4.9, 5.0, -1.0))
    assert not decision_log_within(d(4.9, 5.01, 1.0))
    assert not decision_log_within(d(6.0, 1.0, 1.0))
    assert not decision_log_within(d(1.0, 1.0, 5.5))
    assert not decision_log_within(d(1.0, None, 1.0))     # not measured: not met


def test_cost_intervals_bracket_a_known_cost_and_are_seeded() -> None:
    """The bootstrap behind ``ci95_pct``: a cost that is the same in every pair of blocks
    has a zero-width interval at it; a noisy one has an interval around the pooled figure,
    the same for the same seed; fewer than two pairs give none."""
    import random

    from ops.bench.negotiation import BLOCK_ROUNDS, cost_intervals

    pairs = 30
    rounds = {False: [1e-3] * (pairs * BLOCK_ROUNDS), True: [1.05e-3] * (pairs * BLOCK_ROUNDS)}
    cpu = {False: [0.02] * pairs, True: [0.021] * pairs}
    got = cost_intervals(rounds, cpu)
    assert got["round_p50_us"] == pytest.approx([5.0, 5.0])
    assert got["round_p99_us"] == pytest.approx([5.0, 5.0])
    assert got["caller_cpu_us_per_round"] == pytest.approx([5.0, 5.0])

    rng = random.Random(7)
    noisy = {mode: [(1.05e-3 if mode else 1e-3) * rng.uniform(0.8, 1.2)
                    for _ in range(pairs * BLOCK_ROUNDS)] for mode in (False, True)}
    cpu = {mode: [(0.021 if mode else 0.02) * rng.uniform(0.9, 1.1) for _ in range(pairs)]
           for mode in (False, True)}
    a, b = cost_intervals(noisy, cpu, seed=3), cost_intervals(noisy, cpu, seed=3)
    assert a == b
    lo, hi = a["round_p50_us"]
    pooled = 100.0 * (statistics.median(noisy[True]) / statistics.median(noisy[False]) - 1)
    assert lo < pooled < hi and lo < 5.0 < hi and hi - lo < 15.0
    assert cost_intervals(noisy, cpu, seed=4) != a
    short = {mode: xs[:BLOCK_ROUNDS] for mode, xs in noisy.items()}
    assert cost_intervals(short, cpu)["round_p50_us"] is None
    # a partial last block (the run stopped mid-block) is left out, in rounds and in CPU
    whole = {mode: xs[:4 * BLOCK_ROUNDS] for mode, xs in noisy.items()}
    whole_cpu = {mode: xs[:4] for mode, xs in cpu.items()}
    ragged = {False: noisy[False][:4 * BLOCK_ROUNDS + 5], True: whole[True]}
    ragged_cpu = {False: cpu[False][:5], True: whole_cpu[True]}
    assert cost_intervals(ragged, ragged_cpu) == cost_intervals(whole, whole_cpu)
    # nothing measured without the log: no interval, no division by zero
    idle = {False: [0.0] * pairs, True: cpu[True]}
    assert cost_intervals(rounds, idle)["caller_cpu_us_per_round"] is None


def test_the_recording_run_needs_two_blocks_and_the_flag_needs_the_log(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("autocell")
    for argv, says in ((["--decision-log", "--decision-log-rounds", "10"], "at least 20"),
                       (["--decision-log-rounds", "40"], "give --decision-log too")):
        r = subprocess.run([str(exe), "bench", "negotiation", "--rounds", "5", *argv],
                           capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert r.returncode != 0 and says in r.stderr, (argv, r.returncode, r.stderr)
        assert "Traceback" not in r.stderr
