"""``autocell bench energy --json`` on one small instance: the keys, and what must hold.

A three-job, two-machine flexible job shop named like a Brandimarte instance
(``mk99``) in a temporary ``bks.csv`` directory: the same code path as mk01–mk10,
in a few seconds of virtual time.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ops.bench.energy import FIGURES, METHODS, energy_extension, run
from ops.cli import main
from sim_bridge.instances import instance_to_cell_dict, load_instance

SMALL = """3 2 1.5
2 2 1 3 2 5 1 2 4
2 1 2 2 2 1 3 2 2
3 1 1 2 2 2 3 1 1 1 2 3
"""


@pytest.fixture
def bench_dir(tmp_path: Path) -> Path:
    (tmp_path / "mk99.fjs").write_text(SMALL)
    (tmp_path / "bks.csv").write_text(
        "instance,format,jobs,machines,lower_bound,best_known_upper,source\n"
        "mk99,fjs,3,2,7,7,made up for this test\n")
    return tmp_path


def test_the_json_has_the_documented_keys(bench_dir: Path, capsys: pytest.CaptureFixture[str]
                                          ) -> None:
    assert main(["bench", "energy", str(bench_dir), "--instances", "mk99", "--json"]) == 0
    out, err = capsys.readouterr()
    r = json.loads(out)
    assert set(r) == {"instances", "mean"}
    assert set(r["mean"]) == set(METHODS) == {"energy_blind", "energy_aware",
                                              "energy_aware_capped", "rule"}
    for method in METHODS:
        assert set(r["mean"][method]) == set(FIGURES) == {
            "energy_cost", "kwh", "peak_kw", "makespan", "tardiness", "cap_violations"}
    [entry] = r["instances"]
    assert entry["instance"] == "mk99"
    assert "mk99 energy_aware_capped:" in err          # the progress lines
    # under power leases the cap holds; the agents finish every order
    capped = entry["energy_aware_capped"]
    assert capped["cap_violations"] == 0 and capped["invariants_hold"]
    assert all(entry[m]["orders_completed"] == entry[m]["orders_total"]
               for m in METHODS if m != "rule")
    assert entry["rule"]["best_rule"] in ("SPT", "MWKR", "FIFO")


def test_the_energy_extension_is_seeded_and_documented(bench_dir: Path) -> None:
    cell = instance_to_cell_dict(load_instance(bench_dir / "mk99.fjs"))
    a, b = energy_extension(cell, "mk99", 0), energy_extension(cell, "mk99", 0)
    assert a == b and a != energy_extension(cell, "mk99", 1)
    for m in a["machines"]:
        p = m["power_kw"]
        assert 0.5 <= p["idle"] <= 2.0 and 3.0 <= p["busy"] - p["idle"] <= 10.01
        assert p["standby"] <= 0.3 * p["idle"] + 0.01
    assert len({p["price"] for p in a["energy"]["tariff"]["periods"]}) == 3


def test_an_unknown_instance_is_named(bench_dir: Path) -> None:
    from security.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="unknown instance.*mk42.*known: demo, mk99"):
        run(bench_dir, instances=["mk42"])
