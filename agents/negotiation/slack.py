"""Slack-based bidding: a research strategy shipped as a plain plug-in example.

A resource collects the calls of one bidding round and gives the earliest
slot to the call it ranks first (see ``docs/strategies.md``, "How a round
works").  The default ranks by most work remaining.  This one ranks by
**slack** — how much time the order has left beyond its remaining work:

    slack = due_at − earliest_start_at − work_remaining_s

Least slack first (an order that is about to be late gets served before an
order with hours to spare), then higher priority, then the task id for a
stable order.  After a breakdown, the orders whose work was handed back have
lost time, so their slack is smaller and they are served first on the
machines that are left: the rule is meant to cut tardiness under faults.

It is installed as the entry point ``slack_bidding`` in the group
``autocell.strategies`` (see ``pyproject.toml``), so a cell or a sweep names
it as ``resource: slack_bidding`` (or, with parameters, ``resource: {name:
slack_bidding, params: {priority_weight_s: 600}}``); the dotted path
``agents.negotiation.slack:SlackBidding`` works too.  ``docs/research.md``
writes it step by step, and ``cell_configs/experiments/slack_vs_default.yaml``
compares it with the default under breakdowns.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from agents.negotiation.strategies import ResourceStrategy
from agents.protocol.messages import CallForProposals


class SlackBidding(ResourceStrategy):
    """Serve the call with the least slack first; bid like the default.

    Parameters (``{name: slack_bidding, params: {...}}``):

    ``work_weight``
        How much of the remaining work counts against the slack (default 1:
        all of it; 0 ranks by due date and arrival alone, earliest due first).
    ``priority_weight_s``
        Seconds of slack one priority point is worth (default 0: priority only
        breaks ties).  At 600 a priority-3 order goes ahead of a priority-1
        order with up to 20 minutes less slack.

    The defaults rank exactly as the rule above (``1.0 * x`` and ``x - 0.0``
    are exact in floating point), so a bare ``slack_bidding`` is unchanged.
    """

    name = "slack_bidding"

    def __init__(self, *, work_weight: Annotated[float, Field(ge=0)] = 1.0,
                 priority_weight_s: Annotated[float, Field(ge=0)] = 0.0) -> None:
        self.work_weight = work_weight
        self.priority_weight_s = priority_weight_s

    def rank(self, cfp: CallForProposals) -> tuple[Any, ...]:
        slack_s = (cfp.due_at - cfp.earliest_start_at - self.work_weight * cfp.work_remaining_s
                   - self.priority_weight_s * cfp.priority)
        return (slack_s, -cfp.priority, cfp.task)
