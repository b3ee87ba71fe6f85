"""Words, not identifiers; time pressure visible (issue 18): a title and a supervisor's
sentence per cause, the audit log as a short timeline with wall-clock times (cell seconds on
hover), a labelled countdown in wall seconds, re-escalation shown."""

from __future__ import annotations

import ast
import re
from datetime import datetime
from pathlib import Path

import pytest

from ops.console.backend import fact
from ops.console.views import Link, clock_time, timeline, view, wall_text, when
from ops.console.wording import CAUSE_TITLES, describe, equipment

ROOT = Path(__file__).resolve().parents[1]
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
    ("no_capable_resource", "o-011", "turning", {"capability": "turning", "down": ["lathe1"],
                                               "waited_s": 0.2},
     "No machine can do the next step",
     "Lathe 1 is down and no other machine can turn o-011."),
    ("cap_makes_order_late", "o-010", "", {"task": "o-010/2", "cap_kw": 10.0,
                                           "late_by_s": 198.0},
     "The power cap would make an order late",
     "The cell's peak-power cap of 10 kW holds back o-010/2; o-010 would finish about "
     "3 min after its due date."),
    ("maintenance_no_window", "", "mill1", {"latest_start_at": 1500.0,
                                            "window_start_at": 3900.0, "detected_at": 900.0},
     "A machine needs maintenance and no technician is free in time",
     "Mill 1 should be maintained within 10 min, but the first technician is free only in "
     "50 min; it may fail before."),
    ("maintenance_no_part", "", "mill1", {"latest_start_at": 1500.0, "eta_at": 2700.0,
                                          "part": "spindle_bearing", "detected_at": 900.0},
     "The spare part will not arrive in time",
     "Mill 1 should be maintained within 10 min, but its spare part (spindle_bearing) "
     "arrives only in 30 min."),
    ("maintenance_prediction_miss", "", "lathe1", {"fail_by": 4500.0, "detected_at": 600.0},
     "A machine failed long before its prediction",
     "Lathe 1 failed 65 min before its health model expected it could; the model should not "
     "be trusted until it is re-trained."),
    ("a quality reject", "o-1", "cmm-1", {}, "a quality reject", "as raised"),
], ids=["no capable resource", "repeat faults", "late reroute", "restart intensity",
        "reject burst", "a wait at the reply deadline is not said", "power cap",
        "no technician in time", "no part in time", "prediction miss",
        "unknown cause: the raiser's words"])
def test_each_cause_has_a_title_and_a_sentence(cause, order, resource, context, title,
                                               sentence):
    assert describe(cause, "as raised", order, resource, context) == (title, sentence)


def _raised_causes() -> dict[str, str]:
    """Every cause the code raises, found in the source: a snake_case string given to a
    call that raises an escalation (``Escalate(cause=…)``, ``_escalate(…, "cause", …)``),
    directly or through a module-level constant; where it is raised, for the message."""
    found: dict[str, str] = {}
    for root in ("agents", "ops", "sim_bridge"):
        for path in sorted((ROOT / root).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            consts = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
                      and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)
                      for t in n.targets if isinstance(t, ast.Name)}
            for n in ast.walk(tree):
                if not isinstance(n, ast.Call):
                    continue
                name = n.func.attr if isinstance(n.func, ast.Attribute) else \
                    getattr(n.func, "id", "")
                if "escalat" not in name.lower() or name == "EscalationUpdate":
                    continue
                for a in [*n.args, *(k.value for k in n.keywords if k.arg == "cause")]:
                    v = a.value if isinstance(a, ast.Constant) else \
                        consts.get(a.id) if isinstance(a, ast.Name) else None
                    if isinstance(v, str) and re.fullmatch(r"[a-z]+(_[a-z0-9]+)+", v):
                        found.setdefault(v, f"{path.relative_to(ROOT)}:{n.lineno}")
    return found


def test_every_cause_an_agent_raises_has_words():
    from agents.maintenance.cases import CASES
    from agents.escalation.policy import RULES

    raised = _raised_causes()
    assert {"no_capable_resource", "cap_makes_order_late", "maintenance_no_part",
            "reject_burst", "restart_intensity"} <= set(raised)        # the scan finds them
    missing = {c: where for c, where in raised.items() if c not in CAUSE_TITLES}
    assert not missing, f"causes raised without a title and sentence: {missing}"
    assert set(RULES) | set(CASES) | {"equipment_refuses"} <= set(CAUSE_TITLES)
    for cause in CAUSE_TITLES:                  # facts missing: still a sentence, no crash
        title, sentence = describe(cause, "raw", "", "", {})
        assert title and sentence


def test_cell_times_the_agents_wrote_read_as_wall_clock_times():
    link = Link("live", cell_at=100.0, wall_at=T0, speed=10.0)     # cell 700 s = T0 + 60
    clock = clock_time(T0 + 60)
    assert wall_text(link, "order o-1 cannot continue; due at 700 s") == \
        f"order o-1 cannot continue; due at {clock}"
    assert wall_text(link, "expected back at 700 s (in 600 s)") == \
        f"expected back at {clock} (in 600 s)"                   # a duration stays one
    assert wall_text(link, "about 120 s after its due date (700 s)") == \
        f"about 120 s after its due date ({clock})"
    assert wall_text(link, fact("detected_at", 700.0)) == f"detected at {clock}"
    assert wall_text(link, fact("late_by_s", 120.0)) == "late by s: 120"
    assert wall_text(Link("never"), "due at 700 s") == "due at 700 s"   # nothing to map by


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
