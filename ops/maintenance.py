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
import difflib
import json
import math
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from agents.maintenance.rul import HealthModel
from agents.maintenance.training import fit_events
from ops.paths import output_file
from security.errors import ConfigurationError

__all__ = ["add_parsers", "attach_to_run", "cell_models", "load_models", "model_file_problems",
           "models_from_cell", "read_events"]


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


def model_file_problems(path: Path, wearing: Sequence[str], machines: Sequence[str],
                        named: str = "") -> list[str]:
    """What is wrong with the model file ``path`` for a cell whose machines are
    ``machines``, ``wearing`` those with a ``degradation:`` block; empty when it is fine.
    ``maintenance.models`` is checked by this when the cell file loads (ops/config/loader.py),
    so ``autocell validate``, ``run`` and ``up`` refuse a bad file before anything starts."""
    named = named or str(path)
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        return [f"model file {str(path)!r} {what}; write it with `autocell maintenance fit "
                f"LOGS... --out {named}`, or fix the path, which is relative to the cell file"]
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        return [f"{path}: cannot read the model file: {exc}"]
    except json.JSONDecodeError as exc:
        return [f"{path}:{exc.lineno}: not JSON ({exc.msg}); a model file is what "
                "`autocell maintenance fit` writes"]
    table = data.get("machines") if isinstance(data, dict) else None
    if not isinstance(table, dict) or not table:
        return [f"{path}: not a model file: expected {{\"machines\": {{ID: model, ...}}}}, "
                "as `autocell maintenance fit` writes"]
    out: list[str] = []
    for mid, d in table.items():
        if mid not in machines:
            close = difflib.get_close_matches(str(mid), list(machines), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            out.append(f"{path}: machine {mid!r} is not a machine of the cell{hint}; "
                       f"wearing machines: {', '.join(wearing) or 'none'}")
            continue
        if mid not in wearing:
            out.append(f"{path}: machine {mid!r} has no degradation block, so nothing "
                       "estimates its health; drop it from the file or give it one")
            continue
        try:
            model = HealthModel.from_json(d)
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            out.append(f"{path}: machines.{mid}: not a health model ({type(exc).__name__}: "
                       f"{exc})")
            continue
        if not (0 < model.weibull_shape < math.inf and 0 < model.weibull_scale_s < math.inf):
            out.append(f"{path}: machines.{mid}: the Weibull shape and scale must be positive "
                       f"and finite (got {model.weibull_shape:g}, {model.weibull_scale_s:g})")
        if any(c.per_wear == 0 for c in model.channels.values()):
            out.append(f"{path}: machines.{mid}: a channel with per_wear 0 tells no wear")
    return out


def cell_models(cfg: Any) -> dict[str, HealthModel]:
    """The trained models the cell file names (``maintenance.models``), per machine; empty
    when it names none.  Every process of a cell reads them from the cell file as it reads
    the rest of it — the hosts of ``autocell up`` (OS processes or Ray actors) and
    ``autocell run`` — so a model never travels on a wire."""
    path = cfg.maintenance_models_path()
    if path is None:
        return {}
    wearing = [m.id for m in cfg.machines if m.degradation is not None]
    problems = model_file_problems(path, wearing, [m.id for m in cfg.machines])
    if problems:
        raise ConfigurationError(f"{cfg.source}: maintenance.models: " + "; ".join(problems))
    return load_models(path)


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
    its estimators started from MODEL (``maintenance fit``), else from the file the cell
    names (``maintenance.models``, :func:`cell_models`), else from the cell file's
    figures (:func:`models_from_cell`); its gauges on ``--metrics-port``, its escalations
    in the report (docs/maintenance.md)."""
    from sim_bridge.maintenance.policies import attach

    if not any(m.degradation is not None for m in cell.cfg.machines):
        raise ConfigurationError("--maintenance-policy: the cell has no machine with a "
                                 "degradation block (docs/maintenance.md)")
    models = {**models_from_cell(cell.cfg), **cell_models(cell.cfg)}
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
        w = model.wear
        print(f"  wear process: rate {w.rate:.4g}/exposure s, gamma scale {w.beta:.3g}, idle "
              f"wear {w.idle_wear:.3g}, threshold sd {w.threshold_sd:.3g}" if w else
              f"  wear process {model.meta.get('wear', 'not fitted')} (the wear estimator "
              "takes it from the Weibull life)")
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
