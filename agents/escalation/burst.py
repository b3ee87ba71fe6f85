"""A burst of rejected messages: when one starts, and the escalation it raises.

Theory of operation
-------------------
Whoever sees rejections — the virtual-time driver (``host:virtual``) or a
ZeroMQ host (its own identity ``host-NAME``, a :class:`BurstWatch` agent on
its runner) — feeds each one's time to a :class:`BurstDetector`.  A burst *starts* when ``count`` rejections fall
within ``window_s`` (the newest at ``now``, the oldest after
``now - window_s``); :meth:`BurstDetector.observe` says so once, and stays
quiet for the rest of the burst.  It re-arms the first time a rejection
arrives with fewer than ``count`` in the window (the rate fell below the
threshold), so the next burst escalates again.

Only the last ``count`` times are kept: with times that never go back, "at
least ``count`` in the window" is "the oldest of the last ``count`` is in
the window", so a forger sending thousands of envelopes a second costs a
fixed amount of memory and O(1) per rejection.

:func:`reject_burst_escalation` builds the ``escalate`` body, the same for
every raiser: options ``continue`` (the safe default: the rejected messages
were never acted on) and ``investigate``, the counts by reason in its
context.  No I/O, no clock: times come in as arguments.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

from agents.base import Agent, Timing
from agents.protocol.actions import Action, Log
from agents.protocol.messages import Escalate, Message

from .policy import Rule
from .raiser import EscalationRaiser

CAUSE = "reject_burst"


class BurstDetector:
    """Sliding-window rate detector: ``observe(now)`` is True when a burst starts."""

    def __init__(self, count: int, window_s: float) -> None:
        if count < 1 or window_s <= 0:
            raise ValueError(f"a burst needs count >= 1 and window_s > 0 "
                             f"(got count={count}, window_s={window_s})")
        self.count = count
        self.window_s = window_s
        self._last: deque[float] = deque(maxlen=count)
        self.open = False          # inside a burst already escalated

    @classmethod
    def of(cls, rule: Rule) -> BurstDetector:
        return cls(rule.count, rule.threshold_s)

    def observe(self, now: float) -> bool:
        """One rejection at ``now``; True if it starts a burst (once per burst)."""
        last = self._last
        last.append(now)
        if len(last) < self.count or last[0] <= now - self.window_s:
            self.open = False
            return False
        if self.open:
            return False
        self.open = True
        return True


def reject_burst_escalation(rule: Rule, *, escalation: str, now: float,
                            rejected_by_reason: Mapping[str, int],
                            resource: str = "") -> Escalate:
    """The ``reject_burst`` case raised as ``escalation`` (its id), detected at ``now``.

    ``rejected_by_reason`` is every rejection the raiser counted so far, by reason;
    ``resource`` (optional) names the process that saw them, and groups its bursts."""
    reasons = dict(sorted(rejected_by_reason.items()))
    context: dict[str, object] = {"rejected_by_reason": reasons, "detected_at": now}
    if resource:
        context["process"] = resource
    return Escalate(
        escalation=escalation, priority=rule.priority, cause=CAUSE,
        consequence=f"{rule.count} messages rejected within {rule.threshold_s:.0f} s"
                    + (f" by {resource}" if resource else "")
                    + " (forged, replayed or forbidden): someone may be attacking the cell",
        resource=resource,
        options=[{"id": "continue", "label": "Continue", "effect": "keep running; the "
                  "rejected messages were never acted on"},
                 {"id": "investigate", "label": "Investigate", "effect": "keep running "
                  "and record that the security event is being investigated"}],
        safe_default="continue", context=context)


class BurstWatch(Agent):
    """A process's own voice on the bus for reject bursts (identity ``host-NAME``).

    Sans-io like every agent: the driver reports each rejection with
    :meth:`on_reject` and runs the returned actions on its runner; a burst is
    raised through the :class:`~agents.escalation.raiser.EscalationRaiser`,
    re-sent every ``resend_s`` (cell seconds) until the console's ``decision``
    arrives.  ``replayed`` refusals before ``grace_until_at`` are the expected
    cost of the process's own restart (docs/PROTOCOL.md §10.2) and do not count.
    """

    role = "host"

    def __init__(self, agent_id: str, *, rule: Rule, console: str, resend_s: float,
                 process: str, grace_until_at: float, timing: Timing) -> None:
        super().__init__(agent_id, timing=timing)
        self.rule = rule
        self.process = process
        self.grace_until_at = grace_until_at
        self.detector = BurstDetector.of(rule)
        self.raiser: EscalationRaiser[None] = EscalationRaiser(agent_id, console, resend_s)
        self.raised = 0

    def on_reject(self, reason: str, now: float,
                  rejected_by_reason: Mapping[str, int]) -> list[Action]:
        if reason == "replayed" and now <= self.grace_until_at:
            return []
        if not self.detector.observe(now):
            return []
        rule = self.rule
        body = reject_burst_escalation(
            rule, escalation=f"{self.id}/{CAUSE}/{round(now, 3)}", now=now,
            rejected_by_reason=rejected_by_reason, resource=self.process)
        self.raised += 1
        return [Log("reject_burst_escalated", {
                    "escalation": body.escalation, "identity": self.id, "count": rule.count,
                    "window_s": rule.threshold_s,
                    "rejected_by_reason": body.context["rejected_by_reason"]}),
                *self.raiser.raise_(body, None, now)]

    def on_timer(self, key: str, now: float) -> list[Action]:
        return self.raiser.on_timer(key, now)

    def on_message(self, msg: Message, now: float) -> list[Action]:
        body = self.raiser.decision_in(msg)
        if body is None:
            return []
        entry, actions = self.raiser.decided(body.escalation)
        return [Log("reject_burst_decision", {
                    "escalation": body.escalation, "option": body.option, "user": body.user,
                    "reason": body.reason, "raised_here": entry is not None}),
                *actions]
