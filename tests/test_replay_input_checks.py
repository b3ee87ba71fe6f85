"""``autocell replay``'s inputs and honesty (ops/replay.py, ops/cell_change.py).

A user review found replay saying "OK" where it should not: ``--until nan``
replayed everything, ``--until -1`` checked nothing, a cut or reordered log
replayed "OK" with no word that it was not intact, ``--what-if ""`` compared
the recorded strategy with itself, the unknown-strategy message offered a
plug-in that --what-if then refused, the orders table showed "due at None"
for a cell without the recorded orders and one due date for both columns
when a change moved it, ``--set sim.seed=7`` "changed sim" and nothing else,
a damaged log's message named an exception class, and counts of one read
"1 entries".  Each case runs on a real recorded log (the demo cell, seed 2,
``autocell run --decision-log``) and compares with the recorded cell or with
what ``audit verify`` says of the same file, not with constants.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from agents.runtime.flight_log import verify_log
from ops.cell_change import cell_change
from ops.cli import main
from ops.config import load_cell
from ops.replay import (
    ReplayReport,
    _orders_table,
    check_lines,
    check_order_strategy,
    plugin_kinds,
    print_what_if,
    replay_check,
    what_if,
)
from security.errors import ConfigurationError

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "cell_configs" / "demo_cell.yaml"
MINIMAL = ROOT / "cell_configs" / "minimal_cell.yaml"


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo cell's decision log, seed 2 (intact: closed with its final seal)."""
    path = tmp_path_factory.mktemp("log") / "run.jsonl"
    assert main(["run", str(DEMO), "--quiet", "--seed", "2", "--decision-log", str(path)]) == 0
    return path


def header(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text().splitlines()[0])


def refused(capsys: pytest.CaptureFixture, *argv: str) -> str:
    """Run ``autocell replay ...``; it must be exit 2 with one error line and no output."""
    assert main(["replay", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1, captured
    return captured.err


# -- 1: --until is a cell time ------------------------------------------------------------------

@pytest.mark.parametrize("until", ["nan", "-1", "inf", "-inf"])
def test_until_that_is_no_cell_time_is_refused(log: Path, capsys: pytest.CaptureFixture,
                                               until: str) -> None:
    err = refused(capsys, str(log), f"--until={until}")
    assert f"--until {until}" in err and "finite and not negative" in err


def test_until_zero_and_a_time_still_replay(log: Path) -> None:
    assert main(["replay", str(log), "--until", "0"]) == 0
    assert 0 < replay_check(log, until=300.0).entries < replay_check(log).entries


# -- 2: a log that is not intact ----------------------------------------------------------------

def _cut(lines: list[str]) -> list[str]:
    text = "".join(lines)
    return [text[:len(text) // 3]]            # mid-line, as `head -c` leaves it


def _removed(lines: list[str]) -> list[str]:
    k = [i for i, line in enumerate(lines) if '"k":"in"' in line][300]
    return lines[:k] + lines[k + 1:]


def _swapped(lines: list[str]) -> list[str]:
    ins = [i for i, line in enumerate(lines) if '"k":"in"' in line]
    a, b = ins[300], ins[301]
    out = list(lines)
    out[a], out[b] = out[b], out[a]
    return out


def test_an_intact_log_says_nothing_extra(log: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["replay", str(log)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("replay OK") and len(out.splitlines()) == 1
    assert "audit verify" not in out
    assert main(["replay", str(log), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["ok"] and rep["log_intact"] is True and "log_problem" not in rep


@pytest.mark.parametrize("damage", [_removed, _swapped])
def test_a_damaged_log_replays_but_is_not_called_ok(log: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture,
                                                    damage: Any) -> None:
    """What replay can read it replays; --check exits 1 and never says "OK", and the
    problem is the one ``audit verify`` finds in the same file."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(damage(log.read_text().splitlines(keepends=True))))
    verified = verify_log(bad)
    assert not verified.ok and not verified.cut
    rep = replay_check(bad)
    assert rep.entries > 100 and not rep.log_intact
    assert main(["replay", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "replay OK" not in out
    assert verified.problem in out and f"`autocell audit verify {bad}`" in out
    assert main(["replay", str(bad), "--check", "--json"]) == 1
    j = json.loads(capsys.readouterr().out)
    assert j["log_intact"] is False
    assert (j["log_problem"], j["log_bad_entry"]) == (verified.problem, verified.bad_entry)


def test_a_cut_log_replays_ok_and_says_where_its_signed_part_ends(
        log: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A log cut mid-line, as a process killed with kill -9 leaves it: nothing in it was
    changed, so a check of every entry it holds is OK (exit 0) — with a line that says the
    log ends before its final seal and where what verifies ends (ADR 104)."""
    cut = tmp_path / "cut.jsonl"
    cut.write_text(_cut(log.read_text().splitlines(keepends=True))[0])
    verified = verify_log(cut)
    assert not verified.ok and verified.cut and verified.bad_entry is not None
    capsys.readouterr()
    assert main(["replay", str(cut)]) == 0
    first, second = capsys.readouterr().out.splitlines()
    assert first.startswith("replay OK")
    assert second.startswith("the log ends before its final seal: ")
    assert verified.problem in second and f"entry {verified.bad_entry} verifies" in second
    assert main(["replay", str(cut), "--check", "--json"]) == 0
    j = json.loads(capsys.readouterr().out)
    assert j["ok"] and j["log_intact"] is False and j["log_cut"] is True


def test_what_if_on_a_cut_log_says_it_is_not_intact(log: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "cut.jsonl"
    bad.write_text(_cut(log.read_text().splitlines(keepends=True))[0])
    w = what_if(bad, "lowest_cost")
    assert w["log_intact"] is False and w["log_problem"] == verify_log(bad).problem
    assert w["log_cut"] is True
    print_what_if(w)
    assert f"{bad} ends before its final seal" in " ".join(capsys.readouterr().out.split())
    assert what_if(log, "lowest_cost")["log_intact"] is True
    edited = tmp_path / "edited.jsonl"
    edited.write_text("".join(_removed(log.read_text().splitlines(keepends=True))))
    w = what_if(edited, "lowest_cost")
    assert w["log_intact"] is False and w["log_cut"] is False
    print_what_if(w)
    assert f"{edited} is not intact" in " ".join(capsys.readouterr().out.split())


# -- 3, 4: the strategy -------------------------------------------------------------------------

@pytest.mark.parametrize("given", ["", "  "])
def test_an_empty_strategy_is_refused(log: Path, capsys: pytest.CaptureFixture,
                                      given: str) -> None:
    assert "--what-if: no strategy given" in refused(capsys, str(log), "--what-if", given)


def test_unknown_strategy_offers_only_order_strategies(log: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    err = refused(capsys, str(log), "--what-if", "nosuch")
    offered = re.search(r"use one of (.*?), or a dotted path", err)
    assert offered is not None, err
    names = offered.group(1).split(", ")
    for name in names:                  # nothing offered fails when tried
        check_order_strategy(name)
    kinds = plugin_kinds()
    assert kinds.get("slack_bidding") == "resource strategy"
    for name, kind in kinds.items():
        if kind != "order strategy":    # named with its kind, never offered
            assert name not in names and f"{name} ({kind})" in err


def test_a_resource_strategy_plugin_is_named_as_one(log: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    err = refused(capsys, str(log), "--what-if", "slack_bidding")
    assert "'slack_bidding' is a resource strategy, not an order strategy" in err
    assert "pass --set negotiation.strategy.resource=slack_bidding" in err   # what works
    assert "not a subclass" not in err
    dotted = "agents.negotiation.slack:SlackBidding"      # the same class by its path
    err = refused(capsys, str(log), "--what-if", dotted)
    assert f"'{dotted}' is a resource strategy, not an order strategy" in err
    assert f"--set negotiation.strategy.resource={dotted}" in err and "subclass" not in err
    with pytest.raises(ConfigurationError, match="resource strategy"):
        what_if(log, "slack_bidding")


# -- 5, 6: due dates ----------------------------------------------------------------------------

def test_a_cell_without_the_recorded_orders_shows_their_recorded_due_dates(
        log: Path, capsys: pytest.CaptureFixture) -> None:
    due = {o.id: o.due_at for o in load_cell(DEMO).orders}
    assert main(["replay", str(log), "--what-if", f"cell:{MINIMAL}", "--json"]) == 0
    rows = {r["order"]: r for r in json.loads(capsys.readouterr().out)["orders_changed"]}
    assert set(due) <= set(rows)
    for order, at in due.items():
        assert (rows[order]["recorded_due_at"], rows[order]["what_if_due_at"]) == (at, None)
    assert main(["replay", str(log), "--what-if", f"cell:{MINIMAL}"]) == 0
    out = capsys.readouterr().out
    assert "None" not in out
    assert re.search(rf"o-011 +│ +{due['o-011']:g} +│ +— ", out), out


def test_a_moved_due_date_shows_both_dates(log: Path, capsys: pytest.CaptureFixture) -> None:
    recorded = next(o.due_at for o in load_cell(DEMO).orders if o.id == "o-011")
    assert recorded != 1000
    assert main(["replay", str(log), "--set", "orders.o-011.due_at=1000", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["orders_changed"]
    o11 = next(r for r in rows if r["order"] == "o-011")
    assert (o11["recorded_due_at"], o11["what_if_due_at"]) == (recorded, 1000)
    assert o11["what_if_late_s"] > 0
    assert main(["replay", str(log), "--set", "orders.o-011.due_at=1000"]) == 0
    out = capsys.readouterr().out
    assert "due at (recorded)" in out and "due at (what if)" in out
    assert re.search(rf"o-011 +│ +{recorded:g} +│ +1000 +│", out), out


def test_one_due_column_when_no_due_date_moved() -> None:
    rows = [{"order": "o-1", "recorded_due_at": 600.0, "what_if_due_at": 600.0,
             "recorded_late_s": 0.0, "what_if_late_s": 30.0}]
    console = Console(width=120, record=True)
    console.print(_orders_table(rows))
    text = console.export_text()
    assert "due at (recorded)" not in text and re.search(r"o-1 +│ +600 +│ +on time +│ +30",
                                                         text), text


# -- 7: sim keys a what-if never reads ----------------------------------------------------------

@pytest.mark.parametrize("given, key", [
    ("sim.seed=7", "sim.seed"), ("sim={seed: 7}", "sim.seed"),
    ("sim.endpoint=tcp://127.0.0.1:7000", "sim.endpoint"), ("sim.metrics_port=9700",
                                                            "sim.metrics_port")])
def test_a_sim_key_a_what_if_never_reads_is_refused(log: Path, capsys: pytest.CaptureFixture,
                                                    given: str, key: str) -> None:
    err = refused(capsys, str(log), "--set", given)
    assert f"--set {given}: {key} changes nothing in a what-if" in err


def test_sim_keys_that_matter_or_do_not_change_pass(log: Path) -> None:
    recorded = header(log)["run"]["cell"]
    same = cell_change(recorded, sets=[f"sim.seed={recorded['sim']['seed']}"])
    assert same.diff.lines() == ["no change"]
    loss = cell_change(recorded, sets=["sim.network.loss=0.1"])
    assert loss.diff.lines() == ["changed sim.network.loss: 0.0 -> 0.1"]
    resource = cell_change(recorded, sets=["negotiation.strategy.resource=slack_bidding"])
    assert resource.diff.lines() == [
        'changed negotiation.strategy.resource: "default" -> "slack_bidding"']


def test_a_cell_file_with_another_seed_is_no_change(log: Path, tmp_path: Path) -> None:
    recorded = header(log)["run"]["cell"]
    text = DEMO.read_text()
    seeded = re.sub(r"(?m)^  seed: \d+", f"  seed: {recorded['sim']['seed'] + 5}", text)
    assert seeded != text
    other = tmp_path / "cell.yaml"
    other.write_text(seeded)
    diff = cell_change(recorded, cell_path=str(other)).diff
    assert diff.sections == [] and diff.unused == ["sim.seed"]
    assert diff.lines()[0] == "no change" and "not used by a what-if: sim.seed" in \
        diff.lines()[1]


# -- 8: a damaged log, in plain words -----------------------------------------------------------

def test_a_damaged_entry_is_named_without_an_exception_class(log: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture
                                                             ) -> None:
    lines = log.read_text().splitlines(keepends=True)
    k = [i for i, line in enumerate(lines) if '"k":"in"' in line][50]
    entry = json.loads(lines[k])
    del entry["agent"]                              # what replay reads first
    lines[k] = json.dumps(entry) + "\n"
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(lines))
    err = refused(capsys, str(bad))
    assert "KeyError" not in err and "Error)" not in err
    assert verify_log(bad).problem in err and f"autocell audit verify {bad}" in err


# -- 9: counts of one ---------------------------------------------------------------------------

def test_counts_of_one_are_singular(log: Path, capsys: pytest.CaptureFixture) -> None:
    rep = ReplayReport(entries=1, agents=1, skipped={"console": 1}, restarts=1)
    assert check_lines(log, rep) == ["replay OK: 1 input to 1 agent gave the recorded "
                                     "decisions (1 restart; 1 entry not replayed: console)"]
    w = what_if(log, change=cell_change(header(log)["run"]["cell"],
                                        sets=["orders.o-011.due_at=1000"]))
    w["history"].update(operations=1, verdicts=1, drives=1, faults=1)
    print_what_if(w)
    out = " ".join(capsys.readouterr().out.split())      # the caption wraps
    assert "1 operation duration, 1 quality verdict, 1 robot drive and 1 fault with" in out
    assert not re.search(r"\b1 (entries|inputs|agents|restarts|faults|durations)\b", out)
