"""The input journal (agents.runtime.journal) and the plant's fencing that recovery relies on.

* **Records**: ``encode``/``decode`` round-trip every input kind.
* **Storage**: one contract for :class:`MemoryJournal` and :class:`SqliteJournal`;
  the SQLite one also in WAL mode, across close/reopen, in a new directory.
* **Recovery equivalence**: the demo cell runs in virtual time with a journal
  until ``t``; then every agent is rebuilt afresh (same config, same seed) and
  fed its journal.  The rebuilt agent must equal the live one — its whole
  state, RNG included — and :func:`replay` must return exactly the timers the
  driver holds for it.
* **Crashes** mid-run keep every invariant and the run reproducible.
* **Plant fencing** (:class:`EmbeddedPlant` on a bare ``simpy.Environment``):
  nothing is done twice, stale winners are refused, ``query_state`` re-sends
  what a restarted agent missed, robots break down mid-move.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import simpy

from agents.base import Agent, PlantEventIn
from agents.cell.build import build_agents
from agents.cell.faults import FaultScenario
from agents.cell.specs import MachineSpec
from agents.order import OrderAgent
from agents.protocol.actions import Command
from agents.protocol.messages import (
    Award,
    CallForProposals,
    Done,
    Escalate,
    Failure,
    Heartbeat,
    Message,
    PlantCommand,
    Proposal,
)
from agents.resource import ResourceAgent
from agents.runtime.journal import (
    Inbound,
    Input,
    Journal,
    MemoryJournal,
    PlantIn,
    Recover,
    SqliteJournal,
    Start,
    Timer,
    decode,
    encode,
    replay,
)
from ops.config import load_cell
from security.errors import ConfigurationError
from sim_bridge.plant import EmbeddedPlant
from sim_bridge.report import build_report
from sim_bridge.virtual import VirtualCell

ROOT = Path(__file__).resolve().parents[1]
CFG = load_cell(ROOT / "cell_configs" / "demo_cell.yaml")


# -- records --------------------------------------------------------------------------------------

def msg(body: Any, *, sender: str = "o-001", to: str = "mill1", seq: int = 7) -> Message:
    return Message(sender, to, "o-001/0#0", bytes(range(16)), 3, seq, 1_700_000_123.25, body)


CFP = CallForProposals(task="o-001/0", order="o-001", kind="operation", capability="milling",
                       op="cut", quantity=2, earliest_start_at=12.5, due_at=1020.0,
                       reply_by_at=12.7, origin="store", attempt=1, priority=2,
                       work_remaining_s=110.0)

INPUTS: list[Input] = [
    Start(0.0),
    Start(120.0),
    Inbound(msg(CFP), 12.5),
    Inbound(msg(Proposal("o-001/0", "operation", 20.0, 80.0, 12.9,
                         {"queue_s": 7.5, "setup_s": 8.0, "energy_kwh": 0.125}),
                sender="mill1", to="o-001"), 12.55),
    Inbound(msg(Award("o-001/0", 2, 30.0, 20.0)), 12.7),
    Inbound(msg(Heartbeat("busy", [["o-001/0", 2, True], ["o-004/1", 1, False]]),
                sender="mill1", to="o-001"), 17.7),
    Inbound(msg(Done("o-001/0", 2, 20.0, 80.0, "scrap", "mill_bay"), sender="mill1",
                to="o-001"), 80.001),
    Inbound(msg(Failure("o-001/0", 2, "mill1 injected", retry_at=0.0, repair_at=1020.0),
                sender="mill1", to="o-001"), 600.0),
    Inbound(msg(Escalate("esc-1", 1, "late", "o-001 late by 400 s", order="o-001",
                         options=[{"id": "wait", "label": "Wait", "effect": "late"}],
                         safe_default="wait", deadline_at=900.0, context={"late_s": 400.5}),
                sender="o-001", to="c1"), 601.0),
    Inbound(msg(PlantCommand("start_operation", "mill1", "o-001/0",
                             {"award_epoch": 2, "duration_s": 68.0})), 20.0),
    Timer("deadline:o-001/0", 12.7),
    Timer("heartbeat", 17.7),
    PlantIn(PlantEventIn("operation_done", "mill1", "o-001/0", {"quality": "ok"}), 80.0),
    PlantIn(PlantEventIn("repaired", "mill1"), 1020.0),
    PlantIn(PlantEventIn("fault", "mill1", "", {"reason": "injected", "repair_eta_s": 420.0}),
            600.0),
    Recover(1002.0),
]


@pytest.mark.parametrize("inp", INPUTS, ids=lambda i: type(i).__name__ + (
    f"-{i.msg.type}" if isinstance(i, Inbound) else ""))
def test_every_input_kind_round_trips(inp: Input) -> None:
    record = encode(inp)
    assert isinstance(record, bytes)
    back = decode(record)
    assert back == inp
    assert type(back) is type(inp)
    if isinstance(inp, Inbound):
        assert isinstance(back, Inbound)
        assert type(back.msg.body) is type(inp.msg.body)
        assert back.msg.type == inp.msg.type
    assert encode(back) == record                  # stable: a record re-encodes byte for byte


def test_every_input_kind_is_covered() -> None:
    assert {type(i) for i in INPUTS} == {Start, Inbound, Timer, PlantIn, Recover}
    assert len({i.msg.type for i in INPUTS if isinstance(i, Inbound)}) >= 6


# -- storage --------------------------------------------------------------------------------------

@pytest.fixture(params=["memory", "sqlite"])
def journal(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Journal]:
    j: Journal = MemoryJournal() if request.param == "memory" else SqliteJournal(tmp_path / "j.db")
    yield j
    j.close()


def test_records_are_kept_in_order_per_agent(journal: Journal) -> None:
    assert journal.agents() == [] and list(journal.records("mill1")) == []
    for i, agent in enumerate(["mill1", "o-001", "mill1", "agv1", "mill1", "o-001"]):
        journal.append(agent, encode(Timer(f"k{i}", float(i))))
    assert journal.agents() == ["agv1", "mill1", "o-001"]
    assert [decode(r) for r in journal.records("mill1")] == [
        Timer("k0", 0.0), Timer("k2", 2.0), Timer("k4", 4.0)]
    assert [decode(r) for r in journal.records("o-001")] == [Timer("k1", 1.0), Timer("k5", 5.0)]
    assert list(journal.records("nobody")) == []


def test_records_is_a_snapshot(journal: Journal) -> None:
    journal.append("a", b"1")
    it = journal.records("a")
    journal.append("a", b"2")
    assert list(it) == [b"1"]
    assert list(journal.records("a")) == [b"1", b"2"]


def test_boot_counters_count_per_name(journal: Journal) -> None:
    assert [journal.next_boot("mill1") for _ in range(3)] == [1, 2, 3]
    assert journal.next_boot("o-001") == 1
    assert journal.next_boot("mill1") == 4
    assert journal.agents() == []          # boots are not inputs


def test_sqlite_journal_is_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    j = SqliteJournal(path)
    j.append("mill1", encode(Start(0.0)))
    with sqlite3.connect(path) as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
        # each append is committed at once: another connection sees it
        assert other.execute("SELECT count(*) FROM inputs").fetchone()[0] == 1
    j.close()


def test_sqlite_journal_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    j = SqliteJournal(path)
    for k, agent in enumerate(["mill1", "o-001", "mill1"]):
        j.append(agent, encode(Timer(f"t{k}", float(k))))
    assert (j.next_boot("mill1"), j.next_boot("mill1"), j.next_boot("o-001")) == (1, 2, 1)
    j.close()

    again = SqliteJournal(path)
    assert again.agents() == ["mill1", "o-001"]
    assert [decode(r) for r in again.records("mill1")] == [Timer("t0", 0.0), Timer("t2", 2.0)]
    assert (again.next_boot("mill1"), again.next_boot("o-001"), again.next_boot("agv1")) == (
        3, 2, 1)
    again.append("mill1", encode(Recover(9.0)))             # appends continue after the old ones
    again.close()

    third = SqliteJournal(path)
    assert [decode(r) for r in third.records("mill1")] == [
        Timer("t0", 0.0), Timer("t2", 2.0), Recover(9.0)]
    assert third.next_boot("mill1") == 4
    third.close()


def test_sqlite_journal_creates_its_directory(tmp_path: Path) -> None:
    path = tmp_path / "new" / "deeper" / "journal.sqlite"
    j = SqliteJournal(path)
    assert path.is_file() and j.path == path
    j.append("x", b"r")
    j.close()
    assert list(SqliteJournal(path).records("x")) == [b"r"]


# -- recovery equivalence -------------------------------------------------------------------------

def order_view(a: OrderAgent) -> dict[str, Any]:
    return {"next_exec": a.next_exec, "location": a.location, "released": a.released,
            "parts_busy": a.parts_busy, "completed_at": a.completed_at, "moves": a.moves,
            "ops": [(n.task, n.state, n.epoch, n.winner, n.attempt) for n in a.ops],
            "move": None if a.move is None else (a.move.task, a.move.state, a.move.epoch,
                                                 a.move.winner)}


def resource_view(a: ResourceAgent) -> dict[str, Any]:
    return {"up": a.up, "running": a.running, "location": a.location,
            "busy_until_at": a.busy_until_at,
            "tasks": {tid: (t.state, t.award_epoch, t.ready, t.start_at, t.finish_at)
                      for tid, t in sorted(a.tasks.items())},
            "completed": sorted(a.completed)}


def whole_state(a: Agent) -> dict[str, Any]:
    """Everything the agent holds, its RNG's position included (strategy and timing are
    configuration, shared objects of the same class)."""
    state = {k: v for k, v in vars(a).items() if k not in ("strategy", "timing", "rng")}
    state["rng"] = a.rng.getstate()
    return state


def live_timers(cell: VirtualCell, agent_id: str) -> set[str]:
    return {key for owner, key in cell.runner.timers if owner == agent_id}


def assert_replay_equals_live(cell: VirtualCell) -> None:
    assert cell.journal is not None
    fresh = build_agents(cell.cfg, cell.seed, escalation=cell.policy)
    assert set(fresh) == set(cell.agents)
    for agent_id, live in cell.agents.items():
        rebuilt = fresh[agent_id]
        rec = replay(rebuilt, cell.journal.records(agent_id))
        assert rec.started, agent_id
        assert rec.inputs == len(list(cell.journal.records(agent_id)))
        if isinstance(live, OrderAgent):
            assert order_view(rebuilt) == order_view(live), agent_id  # type: ignore[arg-type]
        else:
            assert isinstance(live, ResourceAgent)
            assert resource_view(rebuilt) == resource_view(live), agent_id  # type: ignore[arg-type]
        assert whole_state(rebuilt) == whole_state(live), agent_id
        assert set(rec.timers) == live_timers(cell, agent_id), agent_id
        assert all(at >= 0.0 for at in rec.timers.values())


@functools.cache
def memory_run(until: float) -> VirtualCell:
    cell = VirtualCell(CFG, journal=MemoryJournal())
    cell.run(until=until)
    assert cell.ended_by == "until"
    return cell


@pytest.mark.parametrize("until", [0.15, 333.3, 1234.5, 2500.25])
def test_replaying_the_memory_journal_rebuilds_every_agent(until: float) -> None:
    cell = memory_run(until)
    assert cell.journal is not None and cell.journal.agents() == sorted(cell.agents)
    assert_replay_equals_live(cell)


def test_the_check_is_not_vacuous() -> None:
    """Mid-run there is real state to get wrong: leases held, work running, timers armed."""
    cell = memory_run(1234.5)
    orders = [a for a in cell.agents.values() if isinstance(a, OrderAgent)]
    resources = [a for a in cell.agents.values() if isinstance(a, ResourceAgent)]
    assert any(o.completed_at is not None for o in orders)
    assert any(o.next_exec > 0 and o.completed_at is None for o in orders)
    assert any(r.running for r in resources)
    assert any(t.state == "committed" for r in resources for t in r.tasks.values())
    assert len(cell.runner.timers) > 5
    # and a replay of only part of the journal does differ
    agent_id = next(r.id for r in resources if r.running)
    records = list(cell.journal.records(agent_id))  # type: ignore[union-attr]
    short = build_agents(CFG, cell.seed, escalation=cell.policy)[agent_id]
    replay(short, records[: len(records) // 2])
    assert whole_state(short) != whole_state(cell.agents[agent_id])


def test_replaying_a_sqlite_journal_rebuilds_every_agent(tmp_path: Path) -> None:
    path = tmp_path / "journals" / "cell.sqlite"
    cell = VirtualCell(CFG, journal=SqliteJournal(path))
    cell.run(until=1234.5)
    assert_replay_equals_live(cell)
    assert isinstance(cell.journal, SqliteJournal)
    cell.journal.close()
    # and from the file alone, as a host restarting after kill -9 would
    reopened = SqliteJournal(path)
    fresh = build_agents(CFG, cell.seed, escalation=cell.policy)
    for agent_id in ("mill1", "agv1", "o-012"):
        rebuilt = fresh[agent_id]
        rec = replay(rebuilt, reopened.records(agent_id))
        assert whole_state(rebuilt) == whole_state(cell.agents[agent_id]), agent_id
        assert set(rec.timers) == live_timers(cell, agent_id)
    assert reopened.next_boot("mill1") == 2      # the cell's first boot was counted in the file
    reopened.close()


def test_the_same_journal_records_the_same_inputs_in_memory_and_in_sqlite(tmp_path: Path) -> None:
    mem = memory_run(333.3)
    cell = VirtualCell(CFG, journal=SqliteJournal(tmp_path / "j.db"))
    cell.run(until=333.3)
    assert cell.event_log_sha256() == mem.event_log_sha256()
    for agent_id in cell.agents:
        assert list(cell.journal.records(agent_id)) == list(  # type: ignore[union-attr]
            mem.journal.records(agent_id)), agent_id  # type: ignore[union-attr]
    cell.journal.close()  # type: ignore[union-attr]


# -- crashes mid-run ------------------------------------------------------------------------------

CRASHES = {"name": "crashes", "crashes": [
    {"agent": "agv2", "at_s": 905.0, "down_s": 5.0},      # just before it starts a move
    {"agent": "mill1", "at_s": 1000.0, "down_s": 1.0},    # while its operation runs
    {"agent": "o-012", "at_s": 1020.0, "down_s": 3.0},
    {"agent": "mill1", "at_s": 1500.0, "down_s": 30.0},   # longer than the lease window
]}


@functools.cache
def crash_run(seed: int) -> tuple[VirtualCell, dict[str, Any]]:
    cell = VirtualCell(CFG, seed=seed, faults=FaultScenario.model_validate(CRASHES))
    cell.run()
    return cell, build_report(cell)


def test_crashes_mid_run_keep_every_invariant() -> None:
    cell, report = crash_run(1)
    assert isinstance(cell.journal, MemoryJournal)     # the scenario needs one: made for it
    assert report["invariant_violations"] == {}
    assert all(report["invariants"].values()), report["invariants"]
    assert cell.ended_by == "completed"
    assert report["orders_completed"] == report["orders_total"] and report["orders_lost"] == 0
    assert cell.stats.restarts == report["restarts"] == 4
    assert cell.stats.dropped_agent_down > 0           # inputs did arrive while it was down
    assert not cell.down


def test_a_restarted_agent_is_still_its_journal() -> None:
    cell, _ = crash_run(1)
    assert cell.orders[[o.id for o in cell.orders].index("o-012")] is cell.agents["o-012"]
    assert_replay_equals_live(cell)


def test_same_seed_same_event_log_with_crashes() -> None:
    first, report = crash_run(1)
    again = VirtualCell(CFG, seed=1, faults=FaultScenario.model_validate(CRASHES))
    again.run()
    assert again.event_log_sha256() == first.event_log_sha256() == report["event_log_sha256"]
    assert again.events == first.events


def test_a_crash_does_change_the_run() -> None:
    """The scenario is not a no-op: the log differs from the fault-free run's."""
    plain = VirtualCell(CFG, seed=1)
    plain.run()
    cell, _ = crash_run(1)
    assert plain.event_log_sha256() != cell.event_log_sha256()
    assert any('"ev":"agent_restart"' in e for e in cell.events)


def test_crashing_without_a_journal_is_refused() -> None:
    cell = VirtualCell(CFG)
    with pytest.raises(ConfigurationError, match="journal"):
        cell.crash("mill1")


# -- plant fencing --------------------------------------------------------------------------------

class Plant:
    """An EmbeddedPlant on its own clock, with its events and log kept in lists."""

    def __init__(self, *, scrap_rate: float = 0.0) -> None:
        self.env = simpy.Environment()
        self.emitted: list[PlantEventIn] = []
        self.log: list[tuple[float, str, dict[str, Any]]] = []
        self.plant = EmbeddedPlant(
            self.env,
            [MachineSpec("m1", location="bay1", scrap_rate=scrap_rate),
             MachineSpec("m2", location="bay2", scrap_rate=scrap_rate)],
            ["r1"], seed=0, emit=self.emitted.append,
            record=lambda ev, **f: self.log.append((self.env.now, ev, f)),
            sensor_interval_s=0.0, breakdowns=False)

    def start(self, machine: str, task: str, epoch: int = 1, duration_s: float = 10.0) -> None:
        self.plant.command(Command("start_operation", machine, task,
                                   {"award_epoch": epoch, "duration_s": duration_s}))

    def run(self, until: float) -> None:
        self.env.run(until=until)

    def settle(self) -> None:
        """Process what is due now (an interrupt reaches its process one step later)."""
        while self.env.peek() <= self.env.now:
            self.env.step()

    def events(self, name: str) -> list[PlantEventIn]:
        return [e for e in self.emitted if e.event == name]

    def logged(self, name: str) -> list[dict[str, Any]]:
        return [f for _, ev, f in self.log if ev == name]


def test_a_completed_task_is_never_started_again() -> None:
    p = Plant()
    p.start("m1", "o/0")
    p.run(11)
    assert [(e.resource, e.task) for e in p.events("operation_done")] == [("m1", "o/0")]
    for machine, epoch in (("m2", 2), ("m1", 1), ("m1", 5)):
        p.start(machine, "o/0", epoch)
    refused = p.events("command_refused")
    assert [(e.resource, e.task) for e in refused] == [("m2", "o/0"), ("m1", "o/0"),
                                                       ("m1", "o/0")]
    for e in refused:
        assert e.data == {"why": "task already completed (idempotency key)", "elsewhere": True,
                          "done_at": "bay1"}
    p.run(30)
    assert len(p.logged("op_start")) == 1 and len(p.events("operation_done")) == 1
    assert [f["resource"] for f in p.logged("plant_refused")] == ["m2", "m1", "m1"]


def test_a_scrapped_task_may_run_again() -> None:
    p = Plant(scrap_rate=1.0)
    p.start("m1", "o/0")
    p.run(11)
    assert p.events("operation_done")[0].data == {"quality": "scrap"}
    p.start("m2", "o/0", 2)
    p.run(22)
    assert p.events("command_refused") == []
    assert [f["machine"] for f in p.logged("op_start")] == ["m1", "m2"]


def test_a_task_in_progress_elsewhere_is_refused() -> None:
    p = Plant()
    p.start("m1", "o/0", epoch=1)
    p.run(3)
    p.start("m2", "o/0", epoch=2)                  # a newer winner, while the parts are on m1
    (refused,) = p.events("command_refused")
    assert (refused.resource, refused.task) == ("m2", "o/0")
    assert refused.data == {"why": "task in progress on m1", "elsewhere": True}
    p.run(20)
    assert [(e.resource, e.task) for e in p.events("operation_done")] == [("m1", "o/0")]
    assert p.plant.machines["m2"].task == "" and p.plant.completed_ok == {"o/0": "bay1"}


def test_a_stale_award_epoch_is_refused() -> None:
    p = Plant()
    p.start("m1", "o/0", epoch=3)
    p.run(2)
    p.plant.command(Command("abort_operation", "m1", "o/0"))   # epoch 3 started, then stopped
    p.run(3)
    assert p.logged("op_abort") == [{"machine": "m1", "task": "o/0", "why": "aborted"}]
    p.start("m2", "o/0", epoch=2)                               # a stale winner turns up
    (refused,) = p.events("command_refused")
    assert refused.resource == "m2"
    assert refused.data == {"why": "stale award epoch 2 (epoch 3 already started)",
                            "elsewhere": True}
    p.start("m2", "o/0", epoch=3)                               # the same epoch may restart
    p.run(20)
    assert [(e.resource, e.task) for e in p.events("operation_done")] == [("m2", "o/0")]
    assert p.plant.started_epoch == {"o/0": 3}


def test_a_busy_or_down_machine_refuses_a_second_start() -> None:
    p = Plant()
    p.start("m1", "a/0")
    p.start("m1", "b/0")
    assert p.events("command_refused")[0].data == {"why": "machine busy with a/0",
                                                   "elsewhere": False}
    p.plant.fail("m2", 50.0)
    p.start("m2", "c/0")
    assert p.logged("plant_refused")[-1]["why"] == "machine down"
    assert p.events("fault")[-1] == PlantEventIn("fault", "m2", "c/0", {"reason": "down at start"})


def query(p: Plant, resource: str, task: str) -> list[PlantEventIn]:
    before = len(p.emitted)
    p.plant.command(Command("query_state", resource, task))
    return p.emitted[before:]


def test_query_state_resends_what_a_restarted_agent_missed() -> None:
    p = Plant()
    p.start("m1", "done/0")
    p.start("m2", "aborted/0")
    p.run(4)
    p.plant.command(Command("abort_operation", "m2", "aborted/0"))
    p.run(11)
    assert query(p, "m1", "done/0") == [
        PlantEventIn("operation_done", "m1", "done/0", {"quality": "ok"}),
        PlantEventIn("state", "m1", "", {"up": True, "reason": "down"})]
    assert query(p, "m2", "aborted/0") == [
        PlantEventIn("command_refused", "m2", "aborted/0", {"why": "not running after restart"}),
        PlantEventIn("state", "m2", "", {"up": True, "reason": "down"})]
    assert query(p, "m1", "") == [PlantEventIn("state", "m1", "", {"up": True, "reason": "down"})]
    p.start("m1", "running/0")
    p.run(12)
    assert query(p, "m1", "running/0") == [
        PlantEventIn("state", "m1", "", {"up": True, "reason": "down"})]
    p.plant.fail("m1", 100.0)
    p.settle()
    assert p.logged("op_abort") == [{"machine": "m2", "task": "aborted/0", "why": "aborted"},
                                    {"machine": "m1", "task": "running/0", "why": "fault"}]
    assert query(p, "m1", "") == [PlantEventIn("state", "m1", "", {"up": False, "reason": "down"})]
    # the fault aborted running/0 while "the agent was away": it is reported as not running
    assert query(p, "m1", "running/0")[0] == PlantEventIn(
        "command_refused", "m1", "running/0", {"why": "not running after restart"})


def test_query_state_of_a_robot() -> None:
    p = Plant()
    p.plant.command(Command("move", "r1", "o/0/m1", {"destination": "bay2", "duration_s": 5.0}))
    p.run(6)
    assert query(p, "r1", "o/0/m1") == [
        PlantEventIn("arrived", "r1", "o/0/m1", {"at": "bay2"}),
        PlantEventIn("state", "r1", "", {"up": True, "reason": "down"})]
    assert query(p, "r1", "o/1/m2") == [
        PlantEventIn("command_refused", "r1", "o/1/m2", {"why": "not running after restart"}),
        PlantEventIn("state", "r1", "", {"up": True, "reason": "down"})]
    # a finished move is not driven twice
    p.plant.command(Command("move", "r1", "o/0/m1", {"destination": "bay2", "duration_s": 5.0}))
    assert p.events("command_refused")[-1].data == {
        "why": "move already done (idempotency key)", "elsewhere": True, "done_at": "bay2"}


def test_a_robot_breakdown_interrupts_its_move_until_repaired() -> None:
    p = Plant()
    p.plant.command(Command("move", "r1", "o/0/m1", {"origin": "bay1", "destination": "bay2",
                                                     "duration_s": 10.0}))
    p.run(3)
    p.plant.fail("r1", 5.0)
    p.settle()
    assert p.logged("move_abort") == [{"robot": "r1", "task": "o/0/m1", "why": "fault"}]
    assert p.events("fault") == [PlantEventIn("fault", "r1", "", {"reason": "injected",
                                                                   "repair_eta_s": 5.0})]
    assert not p.plant.robots["r1"].up and p.plant.robots["r1"].task == ""
    p.plant.command(Command("move", "r1", "o/0/m1", {"destination": "bay2", "duration_s": 1.0}))
    assert p.logged("plant_refused")[-1]["why"] == "robot down"
    p.run(7.9)
    assert p.events("repaired") == []
    p.run(8.1)
    assert p.events("repaired") == [PlantEventIn("repaired", "r1")]
    assert [(t, f) for t, ev, f in p.log if ev == "repaired"] == [(8.0, {"robot": "r1"})]
    assert p.plant.robots["r1"].up
    p.run(30)
    assert p.events("arrived") == []               # the interrupted move never arrived
    assert p.plant.robots["r1"].faults == 1
