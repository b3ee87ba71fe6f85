"""A strategy plug-in that breaks its contract while the cell runs stops the run with one
line naming the strategy, the method, the task and (for an exception) its own line — not a
livelock of malformed bids, a silent fall-back to the tie-breaks, or a traceback."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from ops.cli import main

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "cell_configs" / "demo_cell.yaml"

BROKEN = textwrap.dedent('''\
    import math
    from agents.negotiation.strategies import OrderStrategy, ResourceStrategy

    class PriceInt(ResourceStrategy):
        def price(self, cfp, slot):
            return 42

    class PriceNaN(ResourceStrategy):
        def price(self, cfp, slot):
            return {"queue_s": math.nan}

    class ScoreStr(OrderStrategy):
        def score(self, cfp, proposal):
            return "fast"

    class ScoreNone(OrderStrategy):
        def score(self, cfp, proposal):
            pass

    class ScoreNaN(OrderStrategy):
        def score(self, cfp, proposal):
            return math.nan

    class ScoreRaises(OrderStrategy):
        def score(self, cfp, proposal):
            return proposal.cost["no_such_term"]

    class ChooseForeign(OrderStrategy):
        def choose(self, cfp, proposals):
            return ("nobody", None)

    class RankRaises(ResourceStrategy):
        def rank(self, cfp):
            raise RuntimeError("my bug in rank")

    class RankUnordered(ResourceStrategy):
        def rank(self, cfp):
            return object()

    class SequenceInt(ResourceStrategy):
        def sequence(self, queue, now):
            return 5

    class SequenceStr(ResourceStrategy):
        def sequence(self, queue, now):
            return "o-001/0"

    class PriceHuge(ResourceStrategy):
        def price(self, cfp, slot):
            return {"queue_s": 10 ** 400}

    class PriceNumpy(ResourceStrategy):
        def price(self, cfp, slot):
            import numpy as np
            terms = super().price(cfp, slot)
            return {k: np.float64(v) for k, v in terms.items()} | {"extra": np.int64(3)}

    class FirstBid(OrderStrategy):
        def choose(self, cfp, proposals):
            return proposals[0] if proposals else None

    class Fine(OrderStrategy):
        def score(self, cfp, proposal):
            return proposal.finish_at + 0.5 * proposal.cost.get("setup_s", 0.0)
''')


def forget(package: str) -> None:
    """Drop ``package`` from the import cache: each test imports its own copy."""
    for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        del sys.modules[name]


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "__init__.py").write_text("")
    (tmp_path / "lab" / "broken.py").write_text(BROKEN)
    forget("lab")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    forget("lab")


def cell_with(tmp_path: Path, side: str, spec: str) -> Path:
    data = yaml.safe_load(DEMO.read_text())
    data.setdefault("negotiation", {}).setdefault("strategy", {})[side] = spec
    path = tmp_path / f"{spec.split(':')[1]}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("side,cls,says", [
    ("resource", "PriceInt", "price() returned int 42; expected None or a dict of cost terms"),
    ("resource", "PriceNaN", "price() returned dict {'queue_s': nan}; expected None or a dict"),
    ("resource", "PriceHuge", "price() returned dict {'queue_s': 1000000000"),
    ("order", "ScoreStr", "score() returned str 'fast'; expected a number, not NaN"),
    ("order", "ScoreNone", "score() returned NoneType None; expected a number"),
    ("order", "ScoreNaN", "score() returned float nan; expected a number, not NaN"),
    ("order", "ScoreRaises", "score() raised KeyError: 'no_such_term' at "),
    ("order", "ChooseForeign", "choose() returned tuple ('nobody', None); expected None or one"),
    ("resource", "RankRaises", "rank() raised RuntimeError: my bug in rank at "),
    ("resource", "RankUnordered", "rank() raised TypeError: '<' not supported"),
    ("resource", "SequenceInt", "sequence() returned int 5; expected None or a list of task"),
    ("resource", "SequenceStr", "sequence() returned str 'o-001/0'; expected None or a list"),
])
def test_a_broken_strategy_stops_the_run_with_one_line(lab: Path, capsys, side: str, cls: str,
                                                       says: str) -> None:
    rc = main(["run", str(cell_with(lab, side, f"lab.broken:{cls}")), "--quiet",
               "--until", "20000"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert f"strategy lab.broken:{cls}: " in err and says in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "(task o-" in err or "booked task(s) at t=" in err or "(tasks o-" in err
    if "raised" in says and "TypeError" not in says:   # the plug-in's own line is named
        assert f"{lab / 'lab' / 'broken.py'}:" in err


def test_a_strategy_keeping_its_contract_runs(lab: Path, capsys) -> None:
    assert main(["run", str(cell_with(lab, "order", "lab.broken:Fine")), "--quiet"]) == 0


def test_a_plugin_beside_the_user_but_not_importable_says_how_to_fix_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    pkg = "contract_trial_lab"                       # a name no other test imports
    forget(pkg)
    (tmp_path / pkg).mkdir()
    (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / pkg / "s.py").write_text(BROKEN)
    cell = cell_with(tmp_path, "order", f"{pkg}.s:Fine")
    monkeypatch.chdir(tmp_path)                      # not on sys.path: the installed command
    assert main(["validate", str(cell)]) == 2
    err = capsys.readouterr().err
    assert f"No module named '{pkg}'" in err
    assert f"'{pkg}' is in the current directory, which is not on the import path: run " \
           "with PYTHONPATH=." in err
    monkeypatch.chdir(ROOT)
    assert main(["validate", str(cell)]) == 2
    assert "(set PYTHONPATH to the directory that holds it" in capsys.readouterr().err


def test_replay_of_a_log_whose_plugin_is_gone_exits_2_with_one_line(
        lab: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    log = lab / "run.jsonl"
    cell = cell_with(lab, "order", "lab.broken:Fine")
    assert main(["run", str(cell), "--quiet", "--decision-log", str(log)]) == 0
    assert main(["replay", str(log), "--check"]) == 0
    capsys.readouterr()
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(lab)])
    forget("lab")
    assert main(["replay", str(log), "--check"]) == 2   # not 1, which means "diverged"
    err = capsys.readouterr().err
    assert "(from the log)" in err and "cannot load strategy 'lab.broken:Fine'" in err
    assert "Traceback" not in err


def test_the_report_and_the_log_name_the_strategy_code_and_replay_says_when_it_changed(
        lab: Path, capsys) -> None:
    log, report = lab / "run.jsonl", lab / "r.json"
    cell = cell_with(lab, "order", "lab.broken:Fine")
    assert main(["run", str(cell), "--quiet", "--decision-log", str(log),
                 "--report", str(report)]) == 0
    code = json.loads(report.read_text())["strategies"]
    assert code["order"]["class"] == "lab.broken:Fine" and code["order"]["source_sha256"]
    assert code["resource"]["class"] == "agents.negotiation.strategies:DefaultResource"
    header = json.loads(log.read_bytes().split(b"\n", 1)[0])
    assert header["run"]["strategy_code"] == code
    assert main(["replay", str(log), "--check"]) == 0
    capsys.readouterr()
    # the plug-in edited after the recording: the divergence comes with its reason
    broken = lab / "lab" / "broken.py"
    broken.write_text(broken.read_text().replace(
        "return proposal.finish_at + 0.5 * proposal.cost.get(\"setup_s\", 0.0)",
        "return -proposal.finish_at"))
    forget("lab")
    assert main(["replay", str(log), "--check"]) == 1
    out = capsys.readouterr().out
    assert "replay DIVERGES" in out
    assert (f"note: the order strategy lab.broken:Fine: source_sha256 "
            f"{code['order']['source_sha256'][:12]} recorded") in out
    assert "the code changed since the recording, which may be why" in out


def test_numbers_of_other_kinds_are_sent_as_floats(lab: Path, capsys) -> None:
    """numpy's numbers pass the check and go on the wire as plain floats (msgpack cannot
    pack numpy.int64)."""
    report = lab / "r.json"
    assert main(["run", str(cell_with(lab, "resource", "lab.broken:PriceNumpy")), "--quiet",
                 "--report", str(report)]) == 0
    assert json.loads(report.read_text())["orders_completed"] > 0


def test_a_strategy_that_only_chooses_records_its_awards_without_scores(
        lab: Path, capsys) -> None:
    log = lab / "run.jsonl"
    assert main(["run", str(cell_with(lab, "order", "lab.broken:FirstBid")), "--quiet",
                 "--decision-log", str(log)]) == 0
    whys = [w for line in log.read_text().splitlines()
            for w in json.loads(line).get("why", [])]
    assert whys and all(c["score"] is None for w in whys for c in w["candidates"])
    capsys.readouterr()
    assert main(["explain", str(log), "o-001/0"]) == 0
    assert "(lab.broken:FirstBid: score — vs " in capsys.readouterr().out
