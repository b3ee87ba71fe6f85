"""``autocell ops prometheus-rules``: the command line of :mod:`ops.prometheus.rules`
(``ops prometheus-config`` stays in :mod:`ops.cli`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ops.paths import output_file


def add_parsers(osub: Any) -> None:
    """Sub-commands of ``autocell ops`` (called by :mod:`ops.cli`)."""
    sp = osub.add_parser("prometheus-rules",
                         help="write Prometheus alert rules for the cell (process down, cell "
                              "stalled, overdue P1 escalation, rejected-message burst)")
    sp.add_argument("cell", help="cell YAML")
    sp.add_argument("--speed", type=float, default=1.0,
                    help="the --speed the cell runs at under `autocell up` (cell times in "
                         "the file become wall times; default 1)")
    sp.add_argument("--out", metavar="FILE", type=output_file,
                    help="write to this file instead of stdout")
    sp.set_defaults(func=cmd_rules)


def cmd_rules(args: argparse.Namespace) -> int:
    from ops.config import ConfigError, load_cell
    from ops.prometheus.rules import alert_rules

    try:
        cfg = load_cell(args.cell)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    text = alert_rules(cfg, speed=args.speed)
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
