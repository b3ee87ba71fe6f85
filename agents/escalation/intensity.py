"""Restart intensity: when a supervisor stops restarting a process, as data.

Theory of operation
-------------------
A process supervisor (``autocell up``'s, or the Ray driver under ``up
--ray``) restarts a dead process at once, but not forever: more than
``max_restarts`` deaths within ``window_s`` means something is wrong that a
restart will not fix.  :class:`RestartBudget` is that rule, with no clock of
its own (times come in as arguments) so it is tested in virtual time; the
supervisor then holds the process down and raises ``restart_intensity``
through the :class:`~agents.escalation.raiser.EscalationRaiser` (the same
raise / re-send / decide cycle as every other raiser), or gives up when
nobody can be asked.  A ``restart`` decision gives a fresh budget.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from agents.base import Agent, Timing
from agents.protocol.actions import Action
from agents.protocol.messages import Decision, Escalate, Message

from .policy import Rule
from .raiser import EscalationRaiser

SUPERVISOR_ID = "supervisor"
"""The bus identity (role ``host``) of ``autocell up``'s process supervisor."""


@dataclass
class RestartBudget:
    """At most ``max_restarts`` deaths within any ``window_s`` (any processes)."""

    max_restarts: int
    window_s: float
    deaths: deque[float] = field(default_factory=deque)

    def death(self, now: float) -> bool:
        """Count a death at ``now``; True when the budget is exceeded by it."""
        self.deaths.append(now)
        while self.deaths and now - self.deaths[0] > self.window_s:
            self.deaths.popleft()
        return len(self.deaths) > self.max_restarts

    @property
    def count(self) -> int:
        """Deaths within the window as of the last one."""
        return len(self.deaths)

    def renew(self) -> None:
        """A person decided to restart: a fresh budget."""
        self.deaths.clear()


class SupervisorVoice(Agent):
    """A process supervisor on the bus (identity ``supervisor``, role ``host``): it raises
    ``restart_intensity`` through the raiser, re-sends it on a timer until the console's
    decision comes, and hands each decision (the process it held, the decision) to the
    supervisor through :attr:`decided`.  Sans-io: it runs on a runner like any agent."""

    role = "host"

    def __init__(self, agent_id: str, *, console: str, resend_s: float,
                 timing: Timing) -> None:
        super().__init__(agent_id, timing=timing)
        self.raiser: EscalationRaiser[str] = EscalationRaiser(agent_id, console, resend_s)
        self.decided: list[tuple[str, Decision]] = []

    def escalate(self, process: str, body: Escalate, now: float) -> list[Action]:
        """``process`` is held down: ask the console what to do with it."""
        return self.raiser.raise_(body, process, now)

    def on_timer(self, key: str, now: float) -> list[Action]:
        return self.raiser.on_timer(key, now)

    def on_message(self, msg: Message, now: float) -> list[Action]:
        body = self.raiser.decision_in(msg)
        if body is None:
            return []
        entry, actions = self.raiser.decided(body.escalation)
        if entry is not None:
            self.decided.append((entry.about, body))
        return actions


def restart_intensity_escalation(rule: Rule, *, process: str, number: int, deaths: int,
                                 window_s: float, max_restarts: int, returncode: int | None,
                                 agents: list[str], log_path: str) -> Escalate:
    """The ``restart_intensity`` case: the supervisor stopped restarting ``process``.

    Options, safe default first: ``stop_cell`` (what the supervisor did before there was a
    console: stop every process), ``restart`` (once more, with a fresh restart budget)."""
    shown = ", ".join(agents[:8]) + (f" and {len(agents) - 8} more" if len(agents) > 8 else "")
    return Escalate(
        escalation=f"{SUPERVISOR_ID}/e{number}", priority=rule.priority,
        cause="restart_intensity",
        consequence=(f"process {process} died {deaths} times within {window_s:g} s (at most "
                     f"{max_restarts} restarts allowed); the supervisor stopped restarting it"
                     + (f": its agents ({shown}) are down" if agents else "")
                     + "; the rest of the cell keeps running"),
        resource=process,
        options=[
            {"id": "stop_cell", "label": "Stop the cell",
             "effect": "stop every process and end the run (exit 3); fix the cause, then "
                       "`autocell up` again"},
            {"id": "restart", "label": f"Restart {process}",
             "effect": f"start {process} again (it resumes from its journal) with a fresh "
                       f"budget of {max_restarts} restarts per {window_s:g} s"},
        ],
        safe_default="stop_cell",
        context={"process": process, "deaths": deaths, "window_s": window_s,
                 "max_restarts": max_restarts,
                 "last_returncode": returncode if returncode is not None else "",
                 "agents": len(agents), "log": log_path})
