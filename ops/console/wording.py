"""Words for a supervisor, not identifiers: a title and one sentence per cause.

The agents raise escalations with a machine-readable ``cause``
(``no_capable_resource``, ``repeat_faults`` …) and context facts; a person
at the console should read "No machine can do the next step of o-011 —
Lathe 1 is down and no other machine can turn o-011", not the identifier and
a key/value dump (the issue's own example).  :func:`describe` turns one escalation (as
:func:`ops.console.views.view` reads it) into that title and sentence; a
cause it does not know keeps the words the raiser gave (the demo's causes are
already sentences).  Equipment names are spelled as people say them
(``lathe1`` → "Lathe 1", ``agv-2`` → "AGV 2").

Nothing here changes what is stored: the identifiers stay in the store, the
audit log and the CSV export, and the page shows them small, under the words.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["CAUSE_TITLES", "cell_times", "describe", "equipment", "minutes"]

_ACRONYMS = {"agv", "amr", "cmm", "cnc", "plc", "opc"}
_NAME = re.compile(r"^([A-Za-z]{2,})[-_ ]?(\d+)$")


def equipment(name: str) -> str:
    """``lathe1`` → "Lathe 1", ``agv-2`` → "AGV 2"; other names as they are."""
    m = _NAME.match(name or "")
    if not m:
        return name
    word, number = m.groups()
    word = word.upper() if word.lower() in _ACRONYMS else word.capitalize()
    return f"{word} {number}"


def minutes(seconds: Any) -> str:
    try:
        s = float(seconds)
    except (TypeError, ValueError):
        return str(seconds)
    if s < 90:
        return f"{s:.0f} s"
    return f"{s / 60:.0f} min" if s < 5400 else f"{s / 3600:.1f} h"


def _names(value: Any) -> str:
    items = [equipment(str(v)) for v in (value if isinstance(value, (list, tuple)) else [value])
             if str(v)]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _is_are(value: Any) -> str:
    return "are" if isinstance(value, (list, tuple)) and len(value) > 1 else "is"


#: capability -> the verb a supervisor uses ("no other machine can turn o-011")
_VERBS = {"turning": "turn", "milling": "mill", "drilling": "drill", "tapping": "tap",
          "deburr": "deburr", "deburring": "deburr", "sawing": "saw", "grinding": "grind",
          "inspection": "inspect", "assembly": "assemble", "welding": "weld",
          "painting": "paint", "washing": "wash", "packing": "pack"}


def _can(capability: Any, order: str) -> str:
    """"turn o-011", else "do CAPABILITY for o-011"."""
    what = order or "this order"
    verb = _VERBS.get(str(capability or ""))
    return f"{verb} {what}" if verb else f"do {capability or 'this step'} for {what}"


Facts = Mapping[str, Any]
Sentence = Callable[[str, str, Facts], str]

#: cause -> (title, sentence from (order, resource, context facts))
CAUSE_TITLES: dict[str, tuple[str, Sentence]] = {
    "no_capable_resource": (
        "No machine can do the next step",
        lambda order, res, c: (
            f"{_names(c.get('down') or res)} {_is_are(c.get('down'))} down and no other "
            f"machine can {_can(c.get('capability'), order)}"
            # the wait when it was raised: a reply deadline (0.2 s) is no wait worth saying
            + (f"; {order} has waited {minutes(c['waited_s'])}"
               if float(c.get("waited_s") or 0) >= 1 else "")
            + ".")),
    "late_reroute": (
        "Re-routing would make an order late",
        lambda order, res, c: (
            f"{equipment(res)} failed; the best other machine"
            + (f", {equipment(str(c['best']))}," if c.get("best") else "")
            + f" finishes {order or 'the order'} {minutes(c.get('late_by_s', 0))} late.")),
    "repeat_faults": (
        "A machine keeps breaking down",
        lambda order, res, c: (
            f"{equipment(res)} broke down {c.get('faults', 'several')} times within "
            f"{minutes(c.get('window_s', 0))}; its work keeps being moved elsewhere.")),
    "equipment_refuses": (
        "A machine refuses to start work",
        lambda order, res, c: (
            f"{equipment(res)} refuses every start ({c.get('why', 'no reason given')}); "
            "its work goes to other machines.")),
    "job_outcome_unknown": (
        "A machine lost track of a job",
        lambda order, res, c: (
            f"{equipment(res)} restarted and no longer knows whether it finished "
            f"{c.get('task') or 'a step'} of {order or 'an order'}; check the part, then say "
            "whether it was done or must be done again.")),
    "quality_reject": (
        "Parts keep failing inspection",
        lambda order, res, c: (
            f"{order or 'An order'} failed its quality check {c.get('failures', 'several')} "
            f"times, last on {equipment(str(c.get('machine') or res))}; it waits for you.")),
    "restart_intensity": (
        "A cell process keeps crashing",
        lambda order, res, c: (
            f"Process {c.get('process') or res} died {c.get('deaths', 'several')} times within "
            f"{minutes(c.get('window_s', 0))}; it is no longer restarted and its agents are "
            "down.")),
    "reject_burst": (
        "Forged or replayed messages",
        lambda order, res, c: (
            f"{sum(int(v) for v in (c.get('rejected_by_reason') or {}).values()) or 'Many'} "
            "messages were rejected as forged, replayed or forbidden"
            + (f" at {c.get('process') or res}" if (c.get('process') or res) else "")
            + ": someone may be attacking the cell.")),
    "cap_makes_order_late": (
        "The power cap would make an order late",
        lambda order, res, c: (
            f"The cell's peak-power cap of {c['cap_kw']:g} kW holds back {c.get('task')}; "
            f"{order or 'the order'} would finish about {minutes(c.get('late_by_s', 0))} "
            "after its due date.")),
    "maintenance_no_window": (
        "A machine needs maintenance and no technician is free in time",
        lambda order, res, c: (
            f"{equipment(res)} should be maintained within "
            f"{_after(c, 'latest_start_at')}, but the first technician is free only in "
            f"{_after(c, 'window_start_at')}; it may fail before.")),
    "maintenance_no_part": (
        "The spare part will not arrive in time",
        lambda order, res, c: (
            f"{equipment(res)} should be maintained within "
            f"{_after(c, 'latest_start_at')}, but its spare part ({c.get('part')}) arrives "
            f"only in {_after(c, 'eta_at')}.")),
    "maintenance_prediction_miss": (
        "A machine failed long before its prediction",
        lambda order, res, c: (
            f"{equipment(res)} failed {_after(c, 'fail_by')} before its health model "
            "expected it could; the model should not be trusted until it is re-trained.")),
}


def _after(c: Facts, key: str) -> str:
    """How long after the case was detected the cell time ``c[key]`` is, in words."""
    return minutes(abs(float(c[key]) - float(c["detected_at"])))


#: a cell time in the agents' own words: "due at 3840 s", "back at 4200 s", "until 5100 s",
#: "its due date (3840 s)"; a duration ("about 120 s", "in 60 s") is not one
_CELL_TIME = re.compile(r"\b(at |until |by |date \()(\d+(?:\.\d+)?) s\b")


def cell_times(text: str, to_clock: Callable[[float], str | None]) -> str:
    """``text`` with each cell time the agents wrote ("due at 3840 s") as a wall-clock time
    ("due at 14:03:07"), by ``to_clock`` (the heartbeat's mapping; ``None``: unknown, the
    text is kept).  The agents' words are part of the hashed event log, so they keep cell
    seconds and the console turns them into times a supervisor reads."""
    def one(m: re.Match[str]) -> str:
        clock = to_clock(float(m.group(2)))
        return f"{m.group(1)}{clock}" if clock else m.group(0)

    return _CELL_TIME.sub(one, text)


def describe(cause: str, consequence: str, order: str, resource: str,
             context: Facts) -> tuple[str, str]:
    """(title, sentence) for a supervisor; unknown causes keep the raiser's words."""
    known = CAUSE_TITLES.get(cause)
    if known is None:
        return cause.replace("_", " ") if "_" in cause and " " not in cause else cause, \
            consequence
    title, sentence = known
    try:
        return title, sentence(order, resource, context)
    except (TypeError, ValueError, KeyError):   # facts of an unexpected shape: the raiser's
        return title, consequence
