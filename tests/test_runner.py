"""The runner (agents/runtime/runner.py): the one executor under every driver.

Driven here through a recording driver, so every decision is visible:
multicast grouping of consecutive Sends of one body, the network model's
fate per addressee (with the very draws one send per addressee makes),
timers with generations, down and paused agents, crash and restart from the
journal, order completion.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import pytest

from agents.base import Agent, Timing
from agents.protocol.actions import Action, CancelTimer, Command, Log, Send, SetTimer
from agents.protocol.messages import CallForProposals, Message, Rejection
from agents.runtime.journal import MemoryJournal
from agents.runtime.runner import PERFECT, NetworkModel, Runner

TIMING = Timing()


def cfp(task: str = "o1/0") -> CallForProposals:
    return CallForProposals(task=task, order="o1", kind="operation", capability="mill", op="op",
                            quantity=1, earliest_start_at=0.0, due_at=1.0, reply_by_at=1.0)


class RecordingDriver:
    """Keeps what the runner asked for; :meth:`fire_until` plays the wake-ups."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list[str], Any, str, tuple[float, ...]]] = []
        self.wakes: list[tuple[float, int]] = []
        self.commands: list[tuple[str, Command]] = []
        self.records: list[tuple[str, dict[str, Any]]] = []
        self.runner: Runner | None = None

    def send(self, sender: str, tos: Sequence[str], body: Any, conv: str,
             delays_s: Sequence[float]) -> None:
        self.sent.append((sender, list(tos), body, conv, tuple(delays_s)))

    def wake_at(self, at: float, token: int) -> None:
        self.wakes.append((at, token))

    def command(self, sender: str, cmd: Command) -> None:
        self.commands.append((sender, cmd))

    def record(self, event: str, fields: dict[str, Any]) -> None:
        self.records.append((event, fields))

    def fire_until(self, t: float) -> None:
        """Fire every wake-up due by ``t``, in time order (ties in arming order)."""
        assert self.runner is not None
        while True:
            due = sorted((at, tok) for at, tok in self.wakes if at <= t)
            if not due:
                return
            at, tok = due[0]
            self.wakes.remove((at, tok))
            self.runner.fire(tok, at)


class Script(Agent):
    """An agent whose reactions are given: on_start/on_timer/on_message return these."""

    def __init__(self, agent_id: str, **reactions: list[Action]) -> None:
        super().__init__(agent_id, timing=TIMING)
        self.reactions = reactions
        self.seen: list[tuple[str, float]] = []

    def on_start(self, now: float) -> list[Action]:
        self.seen.append(("start", now))
        return list(self.reactions.get("start", []))

    def on_timer(self, key: str, now: float) -> list[Action]:
        self.seen.append((f"timer:{key}", now))
        return list(self.reactions.get(f"timer:{key}", []))

    def on_message(self, msg: Message, now: float) -> list[Action]:
        self.seen.append((f"msg:{msg.type}", now))
        return []

    def on_recover(self, now: float) -> list[Action]:
        self.seen.append(("recover", now))
        return []


def runner_of(*agents: Agent, network: NetworkModel = PERFECT, seed: int = 7,
              journal: MemoryJournal | None = None,
              orders: Sequence[str] = ()) -> tuple[Runner, RecordingDriver]:
    driver = RecordingDriver()
    r = Runner({a.id: a for a in agents}, driver, journal=journal, network=network,
               rng=random.Random(seed), orders=orders,
               rebuild=lambda a: Script(a, **{k: v for k, v in next(
                   x for x in agents if x.id == a).reactions.items()}))  # type: ignore[attr-defined]
    driver.runner = r
    return r, driver


def message(to: str, body: Any = None) -> Message:
    return Message("peer", to, "c", b"\0" * 16, 1, 1, 0.0, body or Rejection("t"))


# -- multicast grouping -------------------------------------------------------------------

def test_consecutive_sends_of_one_body_in_one_conversation_are_one_group() -> None:
    call, other_call, same_value = cfp(), cfp("o1/1"), cfp()
    assert same_value == call and same_value is not call
    actions: list[Action] = [
        Send("m1", call, "c"), Send("m2", call, "c"), Send("m3", call, "c"),
        Send("m4", call, "other conv"),                  # another conversation: not joined
        Send("m5", same_value, "other conv"),            # equal, but another object
        SetTimer("deadline", 5.0),
        Send("m6", call, "c"),                           # not consecutive with m1..m3
        Send("r1", other_call, "c1"), Send("r2", other_call, "c1"),
        Send("o2", Rejection("t"), "c2"), Send("o3", Rejection("t"), "c2"),   # two objects
        CancelTimer("x"), Log("hello", {}),
        Command("start_operation", "m1", "o1/0", {}),
    ]
    r, d = runner_of(Script("o1"))
    r.execute("o1", actions, 0.0)
    assert [(tos, conv) for _, tos, _, conv, _ in d.sent] == [
        (["m1", "m2", "m3"], "c"), (["m4"], "other conv"), (["m5"], "other conv"),
        (["m6"], "c"), (["r1", "r2"], "c1"), (["o2"], "c2"), (["o3"], "c2")]
    assert d.sent[0][2] is call and all(delays == (0.0,) for *_, delays in d.sent)
    assert [(s, c.command) for s, c in d.commands] == [("o1", "start_operation")]
    assert [at for at, _ in d.wakes] == [5.0] and ("hello", {}) in d.records
    assert r.stats.messages_sent == 10 and r.stats.multicast_groups == 2


FAULTY = NetworkModel(latency_s=0.002, loss=0.25, duplication=0.2, reorder=0.2)


@pytest.mark.parametrize("seed", range(20))
def test_the_network_decides_per_addressee_with_the_unicast_draws(seed: int) -> None:
    """One group through the runner = one send per addressee, with the same draws in the
    same order; only consecutive plain deliveries share an envelope."""
    tos = ["m1", "m2", "m3", "m4", "m5", "m6"]
    body = cfp()
    one_by_one, d1 = runner_of(Script("o1"), network=FAULTY, seed=seed)
    for t in tos:
        one_by_one.execute("o1", [Send(t, body, "c")], 0.0)
    together, d2 = runner_of(Script("o1"), network=FAULTY, seed=seed)
    together.execute("o1", [Send(t, body, "c") for t in tos], 0.0)
    assert one_by_one.rng.random() == together.rng.random()     # same number of draws
    per_addressee = [(t, delays) for _, [t], _, _, delays in d1.sent]
    grouped = [(t, delays) for _, ts, _, _, delays in d2.sent for t in ts]
    assert grouped == per_addressee                 # same fates, same order
    for _, ts, _, _, delays in d2.sent:             # a group only for plain deliveries
        assert len(ts) == 1 or delays == (FAULTY.latency_s,)
    assert together.stats.messages_lost == one_by_one.stats.messages_lost


def test_the_fault_draws_do_drop_duplicate_delay_and_group() -> None:
    """Over the seeds above, each fate happened at least once (the test is not vacuous)."""
    fates = {"lost": 0, "duplicated": 0, "delayed": 0, "grouped": 0}
    for seed in range(20):
        r, d = runner_of(Script("o1"), network=FAULTY, seed=seed)
        body = cfp()
        r.execute("o1", [Send(t, body, "c") for t in ["m1", "m2", "m4", "m5", "m6"]], 0.0)
        fates["lost"] += r.stats.messages_lost > 0
        fates["duplicated"] += any(len(x[4]) == 2 for x in d.sent)
        fates["delayed"] += any(x[4][0] > FAULTY.latency_s for x in d.sent)
        fates["grouped"] += any(len(x[1]) > 1 for x in d.sent)
    assert all(fates.values()), fates


def test_a_partition_cuts_messages_across_it_until_healed() -> None:
    r, d = runner_of(Script("o1"))
    side = {"m3"}
    r.partition(side)
    body = cfp()
    r.execute("o1", [Send(t, body, "c") for t in ["m1", "m3", "m2"]], 0.0)
    assert [tos for _, tos, *_ in d.sent] == [["m1", "m2"]]
    assert r.stats.dropped_partition == 1
    r.heal(side)
    r.execute("o1", [Send("m3", body, "c")], 1.0)
    assert d.sent[-1][1] == ["m3"] and ("partition_healed", {"agents": ["m3"]}) in d.records


# -- timers -------------------------------------------------------------------------------

def test_a_replaced_or_cancelled_timer_never_fires() -> None:
    a = Script("a", start=[SetTimer("k", 5.0), CancelTimer("k"), SetTimer("k", 10.0),
                           SetTimer("j", 3.0), SetTimer("j", 4.0)])
    r, d = runner_of(a)
    r.start("a", 0.0)
    d.fire_until(20.0)
    assert a.seen == [("start", 0.0), ("timer:j", 4.0), ("timer:k", 10.0)]
    assert not r.timers


# -- down and paused agents, crash and restart ---------------------------------------------

def test_a_paused_agent_gets_its_held_inputs_at_resumption() -> None:
    a = Script("a", start=[SetTimer("k", 2.0)])
    r, d = runner_of(a)
    r.start("a", 0.0)
    r.pause("a")
    d.fire_until(5.0)
    r.deliver(message("a"), 6.0)
    assert a.seen == [("start", 0.0)]
    r.resume("a", 9.0)
    assert a.seen == [("start", 0.0), ("timer:k", 9.0), ("msg:reject", 9.0)]
    assert ("agent_resume", {"agent": "a", "held": 2}) in d.records


def test_a_crashed_agent_drops_inputs_and_restarts_from_its_journal() -> None:
    journal = MemoryJournal()
    a = Script("a", start=[SetTimer("k", 10.0)])
    r, d = runner_of(a, journal=journal)
    r.start("a", 0.0)
    r.deliver(message("a"), 1.0)
    assert r.crash("a") and not r.crash("a")
    r.deliver(message("a"), 2.0)
    assert r.stats.dropped_agent_down == 1 and not r.timers
    rec = r.restart("a", 3.0)
    assert rec is not None and rec.inputs == 2
    fresh = r.agents["a"]
    assert fresh is not a
    assert fresh.seen == [("start", 0.0), ("msg:reject", 1.0), ("recover", 3.0)]  # type: ignore[attr-defined]
    assert set(r.timers) == {("a", "k")}                    # re-armed from the journal
    d.fire_until(20.0)
    assert fresh.seen[-1] == ("timer:k", 10.0)              # type: ignore[attr-defined]
    assert r.restart("a", 4.0) is None and r.stats.restarts == 1


def test_completion_counts_each_order_once_and_tells_listeners() -> None:
    r, d = runner_of(Script("o1"), Script("o2"), orders=["o1", "o2"])
    heard: list[str] = []
    r.listeners.append(heard.append)
    r.execute("o1", [Log("order_completed", {"order": "o1"})], 1.0)
    assert not r.all_done
    r.execute("o2", [Log("order_cancelled", {"order": "o2"})], 2.0)
    assert r.all_done and heard == ["o1", "o2"]


def test_an_agent_error_is_contained_only_when_the_driver_asks() -> None:
    class Broken(Script):
        def on_message(self, msg: Message, now: float) -> list[Action]:
            raise RuntimeError("bug")

    r, _ = runner_of(Broken("a"))
    with pytest.raises(RuntimeError):
        r.deliver(message("a"), 0.0)
    errors: list[str] = []
    r.on_agent_error = lambda agent, exc: errors.append(f"{agent}: {exc}")
    r.deliver(message("a"), 0.0)
    assert errors == ["a: bug"]
