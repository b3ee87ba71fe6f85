"""``autocell explain`` on the logs of a real ``autocell up`` run (ops/explain.py).

Under ``up`` each process records its own agents: the machines' log holds
lathe1's calls and jobs, the orders' log the awards and their scores.  One
short run of the demo cell's first orders (the fixtures of
tests/test_processes.py, waiting for the run to end, never sleeping) is
explained from its state directory and from its logs given one by one.  The
jobs lathe1 ran are read from the simulator's own event log, not from the
decision logs the stories are told from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_processes import assert_all_done_once, events, report, small_cell, up

from ops.cli import main
from ops.explain import Recorded, explain, state_dir_logs
from ops.stories import Stories

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("explain-up")
    st = tmp / "state"
    res = up(small_cell(tmp, orders=4), st)
    assert res.returncode == 0, res.stderr[-3000:]
    assert_all_done_once(report(st))
    return st


def _story(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    assert main(["explain", *argv, "--json"]) == 0
    return dict(json.loads(capsys.readouterr().out))


def _lathe_jobs(state: Path) -> set[str]:
    return {e["task"] for e in events(state, "sim")
            if e["ev"] == "op_start" and e["machine"] == "lathe1"}


def test_a_resource_story_from_the_state_directory_names_its_jobs_and_awards(
        state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    jobs = _lathe_jobs(state)
    assert jobs, "the run gave lathe1 no job: the cell under test changed"
    story = _story(capsys, str(state), "lathe1")
    texts = [x["text"] for x in story["lines"]]
    assert story["kind"] == "resource" and "note" not in story
    assert {t.removeprefix("started ").split(" ")[0] for t in texts
            if t.startswith("started o-")} == jobs
    assert len(story["logs"]) == len(state_dir_logs(state)) >= 3
    # the awards lathe1 won, scored in the orders' log: each job's award names the winner
    # and the score of every candidate
    for job in jobs:
        task = _story(capsys, str(state), job)
        award = [x for x in task["lines"] if "award" in x.get("data", {})]
        assert award, (job, [x["text"] for x in task["lines"]])
        w = award[-1]["data"]["award"]
        assert w["winner"] == "lathe1" and w["candidates"]
        score = next(c["score"] for c in w["candidates"] if c["resource"] == "lathe1")
        assert f"awarded {job} to lathe1 ({w['strategy']}: score {score:.4g}" in \
            award[-1]["text"]


def test_the_logs_given_one_by_one_tell_the_same_story(
        state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from_dir = _story(capsys, str(state), "lathe1")
    logs = [str(p) for p in state_dir_logs(state)]
    assert _story(capsys, *logs, "lathe1")["lines"] == from_dir["lines"]


def test_one_log_that_does_not_record_the_subject_is_an_error(
        state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The audit's case: the orders' log alone said lathe1 had been idle all run."""
    orders_log = state / "decisions-orders-1.jsonl"
    assert main(["explain", str(orders_log), "lathe1"]) == 2
    err = capsys.readouterr().err
    assert "lathe1 is in none of these logs" in err and "decisions-machines-" in err
    assert main(["explain", str(state / "decisions-machines-1.jsonl"), "o-001"]) == 2
    assert "host orders" in capsys.readouterr().err
    # one host's log of its own agents still tells their stories, as before
    alone = _story(capsys, str(state / "decisions-machines-1.jsonl"), "lathe1")
    assert "no order's log" in alone["note"] and "logs" not in alone
    assert explain(Recorded.load(orders_log), "o-001")["kind"] == "order"


def test_a_cut_story_names_a_command_that_tells_it(state: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    stories = Stories.load(state_dir_logs(state))
    assert stories is not None
    cmd = stories.command("lathe1")
    assert cmd == f"autocell explain {state} lathe1"
    argv = cmd.split()[1:]
    assert main([*argv, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "resource"
    two = Stories.load(state_dir_logs(state)[:2])
    assert two is not None and two.command("x") == (
        "autocell explain " + " ".join(str(p) for p in state_dir_logs(state)[:2]) + " x")


def test_every_processs_log_is_sealed_by_its_certificate_key(
        state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``audit verify --certs``: each host sealed its log with its ``host-NAME`` key, the
    console-agent process with its ``console`` key."""
    logs = state_dir_logs(state)
    assert "decisions-console-1.jsonl" in [p.name for p in logs]
    for log in logs:
        assert main(["audit", "verify", str(log), "--certs", str(state / "keys"),
                     "--json"]) == 0, log
        out = json.loads(capsys.readouterr().out)
        who = "console" if out["host"] == "console" else f"host-{out['host']}"
        assert out["key_checked"] == [f"{who}'s certificate key in {state / 'keys'}"]
    other = json.loads(logs[0].read_bytes().split(b"\n")[0])["key"]
    assert main(["audit", "verify", str(logs[1]), "--key", other]) == 1
    assert "not the key given with --key" in capsys.readouterr().out


def test_plant_events_are_recorded_as_the_plants_signed_envelopes(state: Path) -> None:
    """Each plant event a machine got is recorded as the plant process's envelope: it
    reads back as the agent's ``plant`` input, replays, and ``--certs`` checks the sim's
    signature on it (the senders' count includes them)."""
    from agents.runtime.flight_log import read_lines
    from agents.runtime.segment_log import signed_inputs
    from ops.replay import replay_check

    log = next(p for p in state_dir_logs(state) if p.name.startswith("decisions-machines-"))
    plant = [e for e in read_lines(log) if e.get("k") == "in" and e["in"]["kind"] == "plant"]
    done = [e for e in plant if e["in"]["event"] == "operation_done"]
    assert len(done) == sum(1 for e in events(state, "sim") if e["ev"] == "op_done")
    assert plant and all(e.get("env", [None])[0] == "sim" for e in plant)
    signed = {n for n, sender, *_ in signed_inputs(log) if sender == "sim"}
    assert {e["n"] for e in plant} <= signed
    assert replay_check(log).ok
