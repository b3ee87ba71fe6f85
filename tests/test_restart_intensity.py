"""Restart intensity in virtual time: the budget and the escalation cycle through the runner.

The real-process version (a host killed three times under ``autocell up``) lives in
tests/test_escalation_up.py; here the same decisions are checked on the fake link, with
the console agent and the raiser the supervisor uses, so no machine speed enters.
"""

from __future__ import annotations

import pytest

from agents.base import Timing
from agents.escalation.console import CONSOLE_ID, ConsoleAgent
from agents.escalation.intensity import RestartBudget
from agents.escalation.policy import Rule
from agents.escalation.store import EscalationStore


@pytest.mark.parametrize(("deaths", "exceeded_at"), [
    ([0, 10, 20], 2),              # three deaths in 60 s, two allowed: the third exceeds
    ([0, 70, 140, 210], None),     # spread out: never more than one in the window
    ([0, 30, 100, 110, 120], 4),   # the first two slid out of the window
])
def test_the_budget_counts_deaths_in_a_sliding_window(deaths: list[float],
                                                      exceeded_at: int | None) -> None:
    budget = RestartBudget(max_restarts=2, window_s=60.0)
    verdicts = [budget.death(t) for t in deaths]
    assert (verdicts.index(True) if True in verdicts else None) == exceeded_at
    if exceeded_at is not None:
        budget.renew()
        assert not budget.death(deaths[-1] + 1) and budget.count == 1


def test_the_supervisor_escalation_is_resent_until_decided_then_restarts() -> None:
    """Deaths exceed the budget; the supervisor's voice raises ``restart_intensity``; the
    first send is lost, the raiser re-sends it, a person decides ``restart``, the decision
    reaches the supervisor, re-sending stops and the budget is fresh."""
    from helpers.fake_link import FakeLink

    from agents.escalation.intensity import (
        SUPERVISOR_ID,
        SupervisorVoice,
        restart_intensity_escalation,
    )

    store = EscalationStore(":memory:")
    console = ConsoleAgent(CONSOLE_ID, timing=Timing(), store=store)
    voice = SupervisorVoice(SUPERVISOR_ID, console=CONSOLE_ID, resend_s=2.0, timing=Timing())
    link = FakeLink([console, voice]).start()
    budget = RestartBudget(max_restarts=2, window_s=60.0)
    for t in (10.0, 20.0, 30.0):
        link.advance(t - link.now)
        exceeded = budget.death(link.now)
    assert exceeded and budget.count == 3
    body = restart_intensity_escalation(
        Rule(1), process="machines", number=1, deaths=budget.count, window_s=60.0,
        max_restarts=2, returncode=-9, agents=["mill1"], log_path="machines.log")
    link.runner.execute(SUPERVISOR_ID, voice.escalate("machines", body, link.now), link.now)
    link.drop(0)                                   # lost on the way
    link.advance(2.0)                              # the raiser sends it again
    link.deliver_all()
    [rec] = store.list()
    assert (rec.id, rec.cause, rec.raised_by, rec.resource) == (
        "supervisor/e1", "restart_intensity", SUPERVISOR_ID, "machines")
    link.runner.execute(CONSOLE_ID, console.decide(rec.id, "bob", "restart", "", link.now),
                        link.now)
    link.deliver_all()
    [(process, decision)] = voice.decided
    assert (process, decision.option, decision.user) == ("machines", "restart", "bob")
    budget.renew()
    sent = len(link.sent_of("escalate"))
    link.advance(30.0)
    assert sent == 2 and len(link.sent_of("escalate")) == 2 and not voice.raiser.open
    assert not budget.death(link.now)
