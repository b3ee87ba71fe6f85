"""Words, not identifiers; time pressure visible (issue 18): a title and a supervisor's
sentence per cause, the audit log as a short timeline with wall-clock times (cell seconds on
hover), a labelled countdown in wall seconds, re-escalation shown."""

from __future__ import annotations

import re
from datetime import datetime

import pytest

from ops.console.views import Link, clock_time, timeline, view, when
from ops.console.wording import CAUSE_TITLES, describe, equipment

T0 = 1_780_000_000.0


@pytest.mark.parametrize(("cause", "order", "resource", "context", "title", "sentence"), [
    ("no_capable_resource", "o-011", "turning", {"capability": "turning", "down": ["lathe1"],
                                               "waited_s": 300.0},
     "No machine can do the next step",
     "Lathe 1 is down and no other machine can turn o-011; o-011 has waited 5 min."),
    ("repeat_faults", "", "agv-2", {"faults": 4, "window_s": 3600},
     "A machine keeps breaking down",
     "AGV 2 broke down 4 times within 60 min; its work keeps being moved elsewhere."),
    ("late_reroute", "o-3", "mill1", {"best": "mill2", "late_by_s": 840.0},
     "Re-routing would make an order late",
     "Mill 1 failed; the best other machine, Mill 2, finishes o-3 14 min late."),
    ("restart_intensity", "", "machines", {"process": "machines", "deaths": 3,
                                           "window_s": 60},
     "A cell process keeps crashing",
     "Process machines died 3 times within 60 s; it is no longer restarted and its agents "
     "are down."),
    ("reject_burst", "", "", {"rejected_by_reason": {"bad_signature": 19, "replay": 8}},
     "Forged or replayed messages",
     "27 messages were rejected as forged, replayed or forbidden: someone may be attacking "
     "the cell."),
    ("a quality reject", "o-1", "cmm-1", {}, "a quality reject", "as raised"),
], ids=["no capable resource", "repeat faults", "late reroute", "restart intensity",
        "reject burst", "unknown cause: the raiser's words"])
def test_each_cause_has_a_title_and_a_sentence(cause, order, resource, context, title,
                                               sentence):
    assert describe(cause, "as raised", order, resource, context) == (title, sentence)


def test_every_cause_an_agent_raises_has_words():
    from agents.runtime.console_service import RULES

    assert set(RULES) | {"equipment_refuses"} <= set(CAUSE_TITLES)
    for cause in CAUSE_TITLES:                  # facts missing: still a sentence, no crash
        title, sentence = describe(cause, "raw", "", "", {})
        assert title and sentence


def test_equipment_names_read_as_people_say_them():
    assert [equipment(n) for n in ("lathe1", "agv-2", "mill_3", "o-014", "robot")] == [
        "Lathe 1", "AGV 2", "Mill 3", "o-014", "robot"]


def test_times_are_wall_clock_with_cell_seconds_on_hover():
    link = Link("live", cell_at=100.0, wall_at=T0, speed=10.0)
    html = str(when(link, 700.0))                        # 600 cell s at ×10 = 60 wall s later
    assert 'title="cell time 700.0 s"' in html
    iso = datetime.fromtimestamp(T0 + 60).isoformat(timespec="seconds")
    assert f'datetime="{iso}"' in html and f">{clock_time(T0 + 60)}<" in html
    today = datetime.now().timestamp()
    assert re.search(r">\d\d:\d\d:\d\d</time>$", str(when(link, 0.0, wall_at=today)))
    assert "s (cell)" in str(when(Link("never"), 42.0))  # no heartbeat: cell seconds only


def test_the_audit_log_reads_as_a_timeline():
    e = view({"id": "o1/e1", "priority": 1, "initial_priority": 3, "escalations": 2,
              "cause": "no_capable_resource", "options": [
                  {"id": "wait_for_repair", "label": "Wait for repair", "effect": ""}],
              "safe_default": "wait_for_repair", "state": "resolved"})
    assert e.reescalated and e.initial_priority == 3
    entries = [
        {"at": 10.0, "actor": "agent:o1", "action": "raise", "escalation": "o1/e1",
         "details": {"priority": 3}},
        {"at": 130.0, "actor": "console", "action": "re_escalate", "escalation": "o1/e1",
         "details": {"priority": 2}},
        {"at": 140.0, "actor": "alice", "action": "decide", "escalation": "o1/e1",
         "details": {"option": "wait_for_repair", "reason": "fitter on site",
                     "wall_at": T0}},
    ]
    assert [(t.who, t.text, t.wall_at) for t in timeline(entries, e)] == [
        ("o1", "raised as P3", None),
        ("the console", "nobody acknowledged in time: re-escalated to P2", None),
        ("alice", "decided: Wait for repair — “fitter on site”", T0)]
