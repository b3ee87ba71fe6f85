"""The schedule view: a Gantt chart of a finished run, as SVG or a self-contained HTML page.

``autocell run CELL --gantt FILE`` draws the virtual-time run it just made;
``autocell gantt STATE_DIR --out FILE`` draws a finished ``autocell up`` run from the
processes' event logs (``events-sim.jsonl``, and ``escalation_raised`` from the console's
and hosts' logs).  One row per machine, then per robot, in cell-file order; time runs left
to right in cell seconds.

* an operation is a bar coloured by its order (the same colour on every row, so an order's
  route through the cell can be followed); its setup is the hatched left part; a scrapped
  operation has a red outline, an aborted one (fault, cancel) is cut and faded;
* a robot's move is a bar in its order's colour, from pick-up to drop;
* a fault is a red band on its resource's row from the fault to the repair (to the end of
  the chart if it was never repaired), with a ✕ at the fault and a ✓ at the repair;
* an escalation is a ▼ on its resource's row (on the top strip when it names none), in the
  colour of its priority.

Every mark carries a tooltip (SVG ``<title>``): order, task, times, cause; with the run's
decision logs (``run --decision-log``, an ``up`` state dir's), also its story as
``autocell explain`` tells it (ops/stories.py; on the HTML page each mark links to it in a
panel under the chart; ADR 57).  Pure code:
events in, text out; :func:`gantt_svg` is what both commands write, :func:`gantt_html`
wraps it with a legend.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ops.paths import output_file
from security.errors import ConfigurationError

if TYPE_CHECKING:
    from ops.stories import Stories

WIDTH = 1200          # px of the time axis
LABEL_W = 110         # px of the row labels
ROW_H = 26
TOP = 46              # the title and the escalation strip
PRIORITY_COLOURS = {1: "#c0392b", 2: "#e67e22", 3: "#f1c40f", 4: "#7f8c8d"}
FORMATS = (".svg", ".html", ".htm")


@dataclass(frozen=True)
class Bar:
    row: str
    start: float
    end: float
    order: str
    label: str
    setup_s: float = 0.0
    scrapped: bool = False
    aborted: bool = False
    task: str = ""          # the task operated or carried: the subject of its story


@dataclass(frozen=True)
class Band:
    row: str
    start: float
    end: float | None       # None: never repaired
    reason: str


@dataclass(frozen=True)
class Mark:
    row: str                # "" = the top strip
    at: float
    priority: int
    label: str
    escalation: str = ""    # its id: the subject of its story


@dataclass(frozen=True)
class Schedule:
    rows: list[tuple[str, str]]     # (id, "machine" | "robot")
    orders: list[str]
    bars: list[Bar]
    bands: list[Band]
    marks: list[Mark]
    end: float


def schedule(events: Iterable[Mapping[str, Any]], machines: Sequence[str],
             robots: Sequence[str], orders: Sequence[str]) -> Schedule:
    """Bars, fault bands and escalation marks from a run's events (any order)."""
    evs = sorted((e for e in events if "t" in e), key=lambda e: float(e["t"]))
    rows = [(m, "machine") for m in machines] + [(r, "robot") for r in robots]
    known = {r for r, _ in rows}
    running: dict[str, dict[str, Any]] = {}
    down: dict[str, tuple[float, str]] = {}
    bars: list[Bar] = []
    bands: list[Band] = []
    marks: list[Mark] = []
    seen_orders: list[str] = list(orders)
    end = 0.0
    for e in evs:
        ev, t = e.get("ev"), float(e["t"])
        end = max(end, t)
        who = str(e.get("machine") or e.get("robot") or "")
        if ev in ("op_start", "move_start") and who in known:
            order = str(e.get("order") or str(e.get("task", "")).split("/")[0])
            if order not in seen_orders:
                seen_orders.append(order)
            running[who] = {"t": t, "order": order, "task": str(e.get("task", "")),
                            "setup_s": float(e.get("setup_s", 0.0)),
                            "move": f"{e.get('origin', '')} → {e.get('destination', '')}"
                            if ev == "move_start" else ""}
        elif ev in ("op_done", "op_abort", "arrived", "move_abort") and who in running:
            r = running.pop(who)
            what = r["move"] or r["task"]
            bars.append(Bar(who, r["t"], t, r["order"], what, min(r["setup_s"], t - r["t"]),
                            scrapped=ev == "op_done" and e.get("quality") not in (None, "ok"),
                            aborted=ev in ("op_abort", "move_abort"), task=r["task"]))
        elif ev == "fault" and who in known and who not in down:
            down[who] = (t, str(e.get("reason", "")))
        elif ev == "repaired" and who in down:
            start, reason = down.pop(who)
            bands.append(Band(who, start, t, reason))
        elif ev == "escalation_raised":
            resource = str(e.get("resource") or "")
            marks.append(Mark(resource if resource in known else "", t,
                              int(e.get("priority") or 4),
                              f"{e.get('escalation', '')}: {e.get('cause', '')}"
                              + (f" (order {e['order']})" if e.get("order") else ""),
                              str(e.get("escalation") or "")))
    for who, r in running.items():        # still running at the end of the log
        bars.append(Bar(who, r["t"], end, r["order"], r["move"] or r["task"], r["setup_s"],
                        task=r["task"]))
    bands += [Band(who, start, None, reason) for who, (start, reason) in down.items()]
    return Schedule(rows, seen_orders, bars, bands, marks, max(end, 1.0))


def colour(index: int) -> str:
    """The colour of the ``index``-th order: hues a golden angle apart, so neighbours differ."""
    hue = (index * 137.508) % 360
    return f"hsl({hue:.0f}, 62%, {52 + 10 * (index % 2)}%)"


def _tick_step(end: float) -> float:
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400,
                 28800, 86400):
        if end / step <= 12:
            return float(step)
    return 86400.0 * max(1, round(end / 86400 / 12))


def _fmt(s: float) -> str:
    if s < 120:
        return f"{s:g} s"
    if s < 7200:
        return f"{s / 60:g} min"
    return f"{s / 3600:g} h"


def gantt_svg(s: Schedule, title: str = "", stories: Stories | None = None) -> str:
    """The chart as one SVG document; with ``stories``, each mark's tooltip tells its story."""
    return _svg(s, title, stories, anchors=False)[0]


@dataclass
class _Told:
    """The stories a chart told, in the order of their marks (for the HTML page's panel)."""

    stories: Stories | None
    anchors: bool
    shown: dict[str, tuple[str, str, list[str]]] = field(default_factory=dict)

    def tell(self, key: str, heading: str, lines: Callable[[], list[str]]) -> tuple[str, str]:
        """The tooltip's extra text and the link target (``""``: none) of mark ``key``."""
        if self.stories is None:
            return "", ""
        if key not in self.shown:
            self.shown[key] = (f"story-{len(self.shown)}", heading, lines())
        anchor, _, told = self.shown[key]
        if not told:
            return "", ""
        return "\n\n" + "\n".join(told), (f"#{anchor}" if self.anchors else "")


def _linked(href: str, body: str) -> str:
    return f'<a href="{html.escape(href)}">{body}</a>' if href else body


def _svg(s: Schedule, title: str, stories: Stories | None,
         anchors: bool) -> tuple[str, _Told]:
    told = _Told(stories, anchors)

    def s_of(subject: str) -> list[str]:
        return stories.of(subject) if stories is not None else []

    def s_between(band: Band) -> list[str]:
        return stories.between(band.row, band.start, band.end) if stories is not None else []

    x0 = LABEL_W
    scale = WIDTH / s.end

    def x(t: float) -> float:
        return round(x0 + t * scale, 2)

    height = TOP + ROW_H * len(s.rows) + 30
    y_of = {r: TOP + i * ROW_H for i, (r, _) in enumerate(s.rows)}
    order_index = {o: i for i, o in enumerate(s.orders)}
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{x0 + WIDTH + 20}" '
           f'height="{height}" font-family="sans-serif" font-size="11">',
           '<defs><pattern id="setup" width="6" height="6" patternUnits="userSpaceOnUse" '
           'patternTransform="rotate(45)"><rect width="3" height="6" fill="#fff" '
           'fill-opacity="0.55"/></pattern></defs>',
           f'<text x="4" y="14" font-size="13" font-weight="bold">{html.escape(title)}</text>',
           f'<text x="4" y="{TOP - 8}" fill="#555">escalations</text>']
    for i, (row, kind) in enumerate(s.rows):
        y = y_of[row]
        out.append(f'<rect x="0" y="{y}" width="{x0 + WIDTH}" height="{ROW_H}" '
                   f'fill="{"#f7f7f7" if i % 2 else "#ffffff"}"/>')
        out.append(f'<text x="4" y="{y + ROW_H * 0.65:.1f}">{html.escape(row)}'
                   f'<tspan fill="#888"> {kind}</tspan></text>')
    step = _tick_step(s.end)
    t = 0.0
    while t <= s.end + 1e-9:
        out.append(f'<line x1="{x(t)}" y1="{TOP - 4}" x2="{x(t)}" y2="{height - 26}" '
                   f'stroke="#ddd"/><text x="{x(t)}" y="{height - 12}" text-anchor="middle" '
                   f'fill="#555">{_fmt(t)}</text>')
        t += step
    for band in s.bands:
        y = y_of[band.row]
        stop = s.end if band.end is None else band.end
        tip = (f"{band.row} down {band.start:.1f} s → "
               + ("not repaired" if band.end is None else f"repaired {band.end:.1f} s")
               + (f" ({band.reason})" if band.reason else ""))
        more, href = told.tell(f"fault {band.row} {band.start}",
                               f"{band.row} down at {band.start:.1f} s",
                               partial(s_between, band))
        out.append(f'<g class="fault"><title>{html.escape(tip + more)}</title>'
                   + _linked(href, f'<rect x="{x(band.start)}" y="{y + 1}" '
                   f'width="{max(1.0, x(stop) - x(band.start)):.2f}" '
                   f'height="{ROW_H - 2}" fill="#e74c3c" fill-opacity="0.22"/>'
                   f'<text x="{x(band.start)}" y="{y + 10}" fill="#c0392b" '
                   f'text-anchor="middle">✕</text>'
                   + (f'<text x="{x(band.end)}" y="{y + 10}" fill="#27ae60" '
                      f'text-anchor="middle">✓</text>' if band.end is not None else ""))
                   + '</g>')
    for b in s.bars:
        y = y_of[b.row]
        w = max(1.0, x(b.end) - x(b.start))
        fill = colour(order_index.get(b.order, 0))
        tip = f"{b.order} · {b.label} · {b.start:.1f}–{b.end:.1f} s" + (
            f" (setup {b.setup_s:g} s)" if b.setup_s else "") + (
            " · SCRAPPED" if b.scrapped else "") + (" · aborted" if b.aborted else "")
        stroke = ' stroke="#c0392b" stroke-width="2"' if b.scrapped else ""
        opacity = ' fill-opacity="0.45"' if b.aborted else ""
        more, href = ("", "") if not b.task else told.tell(
            b.task, f"{b.task} ({b.order})", partial(s_of, b.task))
        out.append(f'<g class="bar" data-order="{html.escape(b.order)}">'
                   f'<title>{html.escape(tip + more)}</title>'
                   + _linked(href, f'<rect x="{x(b.start)}" y="{y + 4}" width="{w:.2f}" height="{ROW_H - 8}" '
                   f'rx="2" fill="{fill}"{stroke}{opacity}/>'
                   + (f'<rect x="{x(b.start)}" y="{y + 4}" '
                      f'width="{max(0.0, min(w, b.setup_s * scale)):.2f}" height="{ROW_H - 8}" '
                      f'fill="url(#setup)"/>' if b.setup_s > 0 else "")
                   + (f'<text x="{x(b.start) + 3}" y="{y + ROW_H * 0.65:.1f}" fill="#fff" '
                      f'font-size="10">{html.escape(b.order)}</text>' if w > 44 else ""))
                   + '</g>')
    for m in s.marks:
        y = (y_of[m.row] if m.row else TOP - ROW_H) + 2
        c = PRIORITY_COLOURS.get(m.priority, "#7f8c8d")
        more, href = ("", "") if not m.escalation else told.tell(
            m.escalation, f"escalation {m.escalation}", partial(s_of, m.escalation))
        tip = f"P{m.priority} {m.label} at {m.at:.1f} s" + more
        out.append(f'<g class="escalation"><title>{html.escape(tip)}</title>'
                   + _linked(href, f'<path d="M {x(m.at) - 6} {y} L {x(m.at) + 6} {y} '
                             f'L {x(m.at)} {y + 10} Z" fill="{c}" stroke="#000" '
                             f'stroke-width="0.5"/>') + '</g>')
    out.append("</svg>")
    return "\n".join(out) + "\n", told


_OPEN_ON_CLICK = """<script>
for (const a of document.querySelectorAll('svg a[href^="#story-"]')) {
  a.addEventListener('click', () => {
    const d = document.getElementById(a.getAttribute('href').slice(1));
    if (d) d.open = true;
  });
}
</script>
"""


def gantt_html(s: Schedule, title: str = "", stories: Stories | None = None) -> str:
    """A self-contained page: the SVG, a legend of the orders' colours and the marks; with
    ``stories``, each mark links to its story in a panel below the chart (and tells it in its
    tooltip)."""
    svg, told = _svg(s, title, stories, anchors=True)
    panel = "".join(
        f'<details class="story" id="{anchor}"><summary>{html.escape(heading)}</summary>'
        f'<pre>{html.escape(chr(10).join(lines))}</pre></details>\n'
        for anchor, heading, lines in told.shown.values() if lines)
    if panel:
        logs = ", ".join(stories.logs) if stories is not None else ""
        panel = (f'<h2>Stories</h2>\n<p class="legend">Why each operation, fault and '
                 f'escalation went as it did, from the decision log ({html.escape(logs)}; '
                 f'<code>autocell explain LOG SUBJECT</code> tells the same). Click a mark '
                 f'to open its story.</p>\n{panel}{_OPEN_ON_CLICK}')
    legend = "".join(
        f'<span class="o"><i style="background:{colour(i)}"></i>{html.escape(o)}</span>'
        for i, o in enumerate(s.orders))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 16px; }}
.legend {{ font-size: 12px; margin: 8px 0; }}
.o {{ display: inline-block; margin: 2px 10px 2px 0; }}
.o i {{ display: inline-block; width: 12px; height: 12px; margin-right: 4px;
        vertical-align: middle; }}
.scroll {{ overflow-x: auto; }}
.story pre {{ font-size: 12px; white-space: pre-wrap; margin: 4px 0 8px 16px; }}
.story:target {{ outline: 2px solid #2980b9; }}
</style></head><body>
<p class="legend">Bars: operations and robot moves, coloured by order (hatched: setup; red
outline: scrapped; faded: aborted). Red band: resource down (✕ fault, ✓ repair).
▼: an escalation, coloured by priority (P1 red, P2 orange, P3 yellow, P4 grey).
Hover for details; times are cell seconds.</p>
<p class="legend">{legend}</p>
<div class="scroll">
{svg}</div>
{panel}</body></html>
"""


def check_format(path: str) -> str:
    """The output format of ``path`` by its extension (``svg`` or ``html``)."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ConfigurationError(f"--gantt/--out {path}: use a .svg or .html file (got "
                                 f"{suffix or 'no extension'!r})")
    return "svg" if suffix == ".svg" else "html"


def write(path: str, events: Iterable[Mapping[str, Any]], cfg: Any, title: str,
          decision_logs: Sequence[str | Path] = ()) -> None:
    """Draw the run of ``cfg`` whose ``events`` these are into ``path`` (.svg or .html);
    with the run's ``decision_logs``, every mark carries its story (ops/stories.py)."""
    from ops.stories import Stories

    fmt = check_format(path)
    s = schedule(events, [m.id for m in cfg.machines], [r.id for r in cfg.robots],
                 [o.id for o in cfg.orders])
    stories = Stories.load(decision_logs)
    text = gantt_svg(s, title, stories) if fmt == "svg" else gantt_html(s, title, stories)
    Path(path).write_text(text, encoding="utf-8")


def up_events(state_dir: Path) -> list[dict[str, Any]]:
    """A finished ``up`` run's events: the plant's, and every process's escalations."""
    out: list[dict[str, Any]] = []
    for path in sorted(state_dir.glob("events-*.jsonl")):
        plant = path.name == "events-sim.jsonl"
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                e = json.loads(line)
            except ValueError:
                continue          # a line cut short by a kill
            if plant or e.get("ev") == "escalation_raised":
                out.append(e)
    return out


def add_parsers(sub: Any) -> None:
    """``autocell gantt STATE_DIR --out FILE`` (called by :mod:`ops.cli`)."""
    sp = sub.add_parser("gantt", help="draw a finished `autocell up` run as a Gantt chart "
                                      "(SVG or HTML); `run --gantt FILE` does it for run")
    sp.add_argument("state_dir", help="the run's state directory (`up --state-dir`, default "
                                      ".autocell/CELL)")
    sp.add_argument("--cell", required=True, help="the cell YAML the run used")
    sp.add_argument("--out", required=True, metavar="FILE", type=output_file,
                    help="a .svg or .html file")
    sp.add_argument("--no-stories", action="store_true",
                    help="leave out each mark's story (by default told from the decision "
                         "logs report.json names, docs/flight-recorder.md)")
    sp.set_defaults(func=cmd_gantt)


def cmd_gantt(args: Any) -> int:
    import sys

    from ops.config import ConfigError, load_cell

    check_format(args.out)
    try:
        cfg = load_cell(args.cell)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    state = Path(args.state_dir)
    if not (state / "events-sim.jsonl").exists():
        raise ConfigurationError(f"{state}: no events-sim.jsonl; give the state directory "
                                 "of a finished `autocell up` run")
    from ops.stories import state_dir_logs

    logs = [] if args.no_stories else state_dir_logs(state)
    write(args.out, up_events(state), cfg, f"{cfg.cell} · autocell up · {state}", logs)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0
