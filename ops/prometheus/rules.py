"""``autocell ops prometheus-rules CELL``: Prometheus alert rules for a cell.

Four alerts, each on metrics the cell's processes and the console already serve
(ops/metrics.py; docs/operations.md, "Alerts"):

* ``AutocellProcessDown`` — a scrape target of the cell unreachable for a minute
  (``up == 0``): ``autocell up`` restarts a dead process at once, so this long means it
  gave up, or the PC is gone;
* ``AutocellCellStalled`` — orders are open, yet no unit was finished and no negotiation
  round ran for the stall window (twice the cell's longest operation, at least 10 min of
  wall time);
* ``AutocellP1EscalationOverdue`` — the oldest unacknowledged priority-1 escalation is
  older than the cell's ``escalation.response_deadline_s``, from the console's age gauge
  ``autocell_escalation_oldest_unacknowledged_seconds`` (cell seconds, so exact at any
  speed);
* ``AutocellRejectBurst`` — one process rejected ``escalation.reject_burst.count`` messages
  or more within the rule's window (forged, replayed, forbidden …).

Times in the cell file are cell seconds; alerts run on wall time, so each is divided by
``--speed`` (what ``autocell up --speed`` runs at).  The output is deterministic: the
sample in ``ops/prometheus/`` is this command's output for the demo cell, a test keeps it
current and checks it with ``promtool check rules`` and ``promtool test rules``.
"""

from __future__ import annotations

import math
from typing import Any

import yaml

from security.errors import ConfigurationError

#: The shortest window a rate over scrapes is meaningful for (several 15 s scrapes).
MIN_WINDOW_S = 60
#: The shortest stall window: a cell may legitimately wait this long between events.
MIN_STALL_S = 600


def duration(seconds: float) -> str:
    """Whole seconds as a Prometheus duration (rounded up: an alert never fires early)."""
    return f"{max(1, math.ceil(seconds))}s"


def longest_operation_s(cfg: Any) -> float:
    """The longest one operation of the cell can take: the slowest capable machine's time
    per unit × the largest order quantity, plus its setup."""
    quantity = max((o.quantity for o in cfg.orders), default=1)
    return max((t * quantity + m.setup_s for m in cfg.machines
                for t in m.capabilities.values()), default=0.0)


def alert_rules(cfg: Any, *, speed: float = 1.0) -> str:
    """The rules file text for the cell run at ``speed`` cell seconds per wall second."""
    if not speed > 0:
        raise ConfigurationError(f"--speed {speed:g}: must be a positive number of cell "
                                 "seconds per wall second")
    cell = cfg.cell
    esc = cfg.escalation
    stall = duration(max(MIN_STALL_S, 2 * longest_operation_s(cfg) / speed))
    overdue = duration(esc.response_deadline_s / speed)
    burst = esc.reject_burst
    burst_window = duration(max(MIN_WINDOW_S, burst.window_s / speed))
    sel = f'cell="{cell}"'
    rules = [
        {"alert": "AutocellProcessDown",
         "expr": f'up{{{sel}}} == 0',
         "for": "1m",
         "labels": {"severity": "critical"},
         "annotations": {
             "summary": "autocell process {{ $labels.process }} of cell {{ $labels.cell }} "
                        "is down",
             "description": "{{ $labels.instance }} has not answered a scrape for 1 minute. "
                            "`autocell up` restarts a dead process at once: it gave up "
                            "(restart intensity) or the PC is gone. See STATE_DIR/NAME.log."}},
        {"alert": "AutocellCellStalled",
         "expr": (f'sum by (cell) (autocell_orders{{{sel}, state="open"}}) > 0 '
                  f'unless on (cell) (sum by (cell) (changes(autocell_cell_units_finished'
                  f'{{{sel}}}[{stall}])) > 0) '
                  f'unless on (cell) (sum by (cell) (increase(autocell_negotiation_rounds_total'
                  f'{{{sel}}}[{stall}])) > 0)'),
         "for": "1m",
         "labels": {"severity": "warning"},
         "annotations": {
             "summary": "cell {{ $labels.cell }} has open orders and made no progress for "
                        f"{stall}",
             "description": f"No unit finished and no negotiation round ran for {stall} "
                            "(twice the longest operation, at least 10 min) while "
                            "{{ $value }} order(s) are open: look at the console and the "
                            "hosts' logs."}},
        {"alert": "AutocellP1EscalationOverdue",
         "expr": (f'max by (cell) (autocell_escalation_oldest_unacknowledged_seconds'
                  f'{{{sel}, priority="1"}}) > {esc.response_deadline_s:g}'),
         "labels": {"severity": "critical"},
         "annotations": {
             "summary": "a priority-1 escalation of cell {{ $labels.cell }} has waited "
                        "longer than its response deadline "
                        f"({esc.response_deadline_s:g} cell s, {overdue} at this speed)",
             "description": "The oldest unacknowledged priority-1 escalation was raised "
                            "{{ $value }} cell seconds ago (escalation.response_deadline_s "
                            f"= {esc.response_deadline_s:g}): acknowledge or decide in the "
                            "console or with `autocell escalations decide`."}},
        {"alert": "AutocellRejectBurst",
         "expr": (f'sum by (cell, process) (increase(autocell_messages_rejected_total'
                  f'{{{sel}}}[{burst_window}])) >= {burst.count}'),
         "labels": {"severity": "critical"},
         "annotations": {
             "summary": "process {{ $labels.process }} of cell {{ $labels.cell }} rejected "
                        f"{burst.count} or more messages within {burst_window}",
             "description": "Forged, replayed or forbidden messages ({{ $value }}): see "
                            "autocell_messages_rejected_total by reason, and the process's "
                            "log."}},
    ]
    doc = {"groups": [{"name": f"autocell-{cell}", "rules": rules}]}
    head = [f"# Prometheus alert rules for the autocell cell {cell!r} at --speed {speed:g}.",
            "# Written by `autocell ops prometheus-rules`; see docs/operations.md, \"Alerts\"."]
    return "\n".join(head) + "\n" + yaml.safe_dump(doc, sort_keys=False, width=100)
