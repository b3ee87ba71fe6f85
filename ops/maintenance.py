"""``autocell maintenance fit LOGS... --out MODEL``: train health models from recorded readings.

LOGS are event logs of earlier runs (``autocell run --events FILE.jsonl``, one
JSON object a line) or CSV files whose header names the same fields (``t``,
``ev``, ``machine``, the reading channels, ``reason``, ``kind``, ``life``); a
real machine's historian exported that way trains the same model.  MODEL is a
JSON file ``{"machines": {ID: HealthModel}}`` that the estimators start from
(agents/maintenance/estimators.py, docs/maintenance.md).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agents.maintenance.rul import HealthModel
from agents.maintenance.training import fit_events
from ops.paths import output_file
from security.errors import ConfigurationError

__all__ = ["add_parsers", "attach_to_run", "load_models", "models_from_cell", "read_events"]


def _number(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def read_events(path: Path) -> Iterator[dict[str, Any]]:
    """The events of one log: JSON lines, or CSV with a header (empty cells are absent)."""
    with path.open(encoding="utf-8", newline="") as f:
        if path.suffix.lower() == ".csv":
            for row in csv.DictReader(f):
                yield {k: (v if k in ("ev", "machine", "reason", "kind") else _number(v))
                       for k, v in row.items() if k and v not in (None, "")}
            return
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ConfigurationError(f"{path}:{n}: not a JSON event: {exc.msg}") from exc


def load_models(path: Path) -> dict[str, HealthModel]:
    """The per-machine models of a file written by ``maintenance fit``."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return {m: HealthModel.from_json(d) for m, d in data["machines"].items()}


def models_from_cell(cfg: Any) -> dict[str, HealthModel]:
    """A prior model per wearing machine from its ``degradation:`` block alone — the maker's
    figures a plant has before any history: the sensor channels as configured, and a Weibull
    life with the configured mean whose spread is the wear's and the threshold's together
    (shape ``cv**-1.086``, Justus' approximation)."""
    from agents.maintenance.rul import prior_model

    return {m.id: prior_model(m.degradation) for m in cfg.machines
            if m.degradation is not None}


def attach_to_run(cell: Any, policy: str, model: str | None) -> Any:
    """``autocell run --maintenance-policy``: the policy over the cell's wearing machines,
    its estimators started from MODEL (``maintenance fit``) or else from the cell file's
    figures (:func:`models_from_cell`); its gauges on ``--metrics-port``, its escalations
    in the report (docs/maintenance.md)."""
    from sim_bridge.maintenance.policies import attach

    if not any(m.degradation is not None for m in cell.cfg.machines):
        raise ConfigurationError("--maintenance-policy: the cell has no machine with a "
                                 "degradation block (docs/maintenance.md)")
    models = models_from_cell(cell.cfg)
    if model:
        try:
            models.update(load_models(Path(model)))
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigurationError(f"--maintenance-model {model}: {exc}") from None
    try:
        return attach(cell, policy, models)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None


def cmd_fit(args: argparse.Namespace) -> int:
    def events() -> Iterator[dict[str, Any]]:
        for p in args.logs:
            yield from read_events(Path(p))
    try:
        models = fit_events(events(), args.machine or None)
    except (ConfigurationError, OSError) as exc:
        print(f"autocell maintenance fit: {exc}", file=sys.stderr)
        return 2
    out = {"machines": {m: model.to_json() for m, model in models.items()},
           "sources": [str(p) for p in args.logs]}
    Path(args.out).write_text(json.dumps(out, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    for m, model in models.items():
        chans = ", ".join(f"{k} +{c.per_wear:.3g}/wear (noise {c.noise:.3g})"
                          for k, c in sorted(model.channels.items()))
        print(f"{m}: Weibull shape {model.weibull_shape:.3g}, scale {model.weibull_scale_s:.6g} "
              f"operating s, from {model.failures} failures and {model.censored} censored lives; "
              f"{chans}")
    print(f"wrote {args.out}")
    return 0


def add_parsers(sub: Any) -> None:
    """``maintenance fit`` (called by :mod:`ops.cli`)."""
    mp = sub.add_parser("maintenance", help="predictive maintenance: train health models")
    msub = mp.add_subparsers(dest="what", required=True, metavar="ACTION")
    fp = msub.add_parser("fit", help="fit a health model per machine from event logs or CSV")
    fp.add_argument("logs", nargs="+", metavar="LOG",
                    help="event log (.jsonl, from `autocell run --events`) or CSV with the "
                         "same field names as columns")
    fp.add_argument("--out", required=True, metavar="MODEL", type=output_file,
                    help="model file to write (JSON)")
    fp.add_argument("--machine", action="append", metavar="ID",
                    help="fit only this machine (repeatable; default: every machine with "
                         "readings)")
    fp.set_defaults(func=cmd_fit)
