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
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from agents.maintenance.rul import GammaWear, HealthModel
from agents.maintenance.training import fit_each, fit_events
from ops.paths import output_file
from security.errors import ConfigurationError

__all__ = ["add_parsers", "attach_for_run", "attach_to_run", "cell_models", "load_models", "model_file_problems",
           "model_problems", "models_from_cell", "read_events", "with_cell_wear"]


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
                        named: str = "", relative_to: str = "the cell file") -> list[str]:
    """What is wrong with the model file ``path`` for a cell whose machines are
    ``machines``, ``wearing`` those with a ``degradation:`` block; empty when it is fine.
    ``maintenance.models`` is checked by this when the cell file loads (ops/config/loader.py),
    so ``autocell validate``, ``run`` and ``up`` refuse a bad file before anything starts."""
    named = named or str(path)
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        return [f"model file {str(path)!r} {what}; write it with `autocell maintenance fit "
                f"LOGS... --out {named}`, or fix the path, which is relative to {relative_to}"]
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
        out += [f"{path}: machines.{mid}: {p}" for p in model_problems(model)]
    return out


def model_problems(model: HealthModel) -> list[str]:
    """What makes ``model`` unusable by an estimator (each a sentence; empty when fine):
    figures an estimator would divide by, overflow on or turn into NaN at its first
    reading, refused when the file loads rather than failing every reading on a host."""
    out: list[str] = []
    shape, scale = model.weibull_shape, model.weibull_scale_s
    if not (0 < shape < math.inf and 0 < scale < math.inf):
        out.append(f"the Weibull shape and scale must be positive and finite (got {shape:g}, "
                   f"{scale:g})")
    else:
        try:        # the life's second moment (the estimators' spread) must be finite
            math.gamma(1 + 2 / shape)
        except OverflowError:
            out.append(f"the Weibull shape {shape:g} is too small: the life's spread "
                       "overflows (a fitted shape is above 0.1)")
    for name, c in model.channels.items():
        figures = (c.idle, c.busy, c.per_wear, c.noise)
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in figures):
            out.append(f"channel {name!r}: idle, busy, per_wear and noise must be finite "
                       f"numbers (got {figures})")
        elif c.per_wear == 0:
            out.append(f"channel {name!r}: per_wear 0 tells no wear")
        elif c.noise < 0:
            out.append(f"channel {name!r}: noise must be >= 0 (got {c.noise:g})")
    w = model.wear
    if w is not None:
        figures = (w.rate, w.beta, w.threshold_sd, w.idle_wear)
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in figures):
            out.append(f"wear: rate, beta, threshold_sd and idle_wear must be finite numbers "
                       f"(got {figures})")
        elif not (w.rate > 0 and w.beta > 0 and w.threshold_sd >= 0
                  and 0 <= w.idle_wear <= 1):
            out.append(f"wear: needs rate > 0, beta > 0, threshold_sd >= 0 and 0 <= "
                       f"idle_wear <= 1 (got rate {w.rate:g}, beta {w.beta:g}, threshold_sd "
                       f"{w.threshold_sd:g}, idle_wear {w.idle_wear:g})")
    return out


def with_cell_wear(models: Mapping[str, HealthModel], cfg: Any) -> dict[str, HealthModel]:
    """``models`` with the cell file's wear process (``degradation:``, :class:`GammaWear`)
    given to each model that has none (one ``maintenance fit`` wrote before it fitted the
    process, or for a machine with too few failures to fit it, ADR 81): the ``wear`` estimator's own fallback, a process taken from the Weibull life,
    ignores idle wear and is not calibrated (docs/maintenance.md, ADR 76), while the
    trained channels with the cell file's process were (ADR 82)."""
    out = dict(models)
    for m in cfg.machines:
        model = out.get(m.id)
        if model is not None and model.wear is None and m.degradation is not None:
            out[m.id] = replace(model, wear=GammaWear.of(m.degradation))
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
    return with_cell_wear(load_models(path), cfg)


def models_from_cell(cfg: Any) -> dict[str, HealthModel]:
    """A prior model per wearing machine from its ``degradation:`` block alone — the maker's
    figures a plant has before any history: the sensor channels as configured, and a Weibull
    life with the configured mean whose spread is the wear's and the threshold's together
    (shape ``cv**-1.086``, Justus' approximation)."""
    from agents.maintenance.rul import prior_model

    return {m.id: prior_model(m.degradation) for m in cfg.machines
            if m.degradation is not None}


def attach_for_run(cell: Any, policy: str | None, model: str | None = None) -> Any:
    """A run's maintenance: the policy asked for, else ``negotiated`` when the cell file
    says ``maintenance: {negotiate: true}`` and a machine wears (the agents plan, the
    simulator only does the work), else none (``None``) — for ``autocell run`` and each run
    of ``autocell experiment`` alike."""
    m = cell.cfg.maintenance
    if not policy and m is not None and m.negotiate and any(
            x.degradation for x in cell.cfg.machines):
        policy = "negotiated"
    return attach_to_run(cell, policy, model) if policy else None


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
        cfg = cell.cfg
        problems = model_file_problems(
            Path(model), [m.id for m in cfg.machines if m.degradation is not None],
            [m.id for m in cfg.machines], named=model,
            relative_to="the working directory")
        if problems:
            raise ConfigurationError(f"--maintenance-model {model}: " + "; ".join(problems))
        models.update(with_cell_wear(load_models(Path(model)), cfg))
    try:
        return attach(cell, policy, models)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None


def cmd_fit(args: argparse.Namespace) -> int:
    def events() -> Iterator[dict[str, Any]]:
        for p in args.logs:
            yield from read_events(Path(p))
    skipped: dict[str, str] = {}
    try:
        if args.machine:                # named: each must be fitted
            models = fit_events(events(), args.machine)
        else:                           # every machine with readings that can be
            models, skipped = fit_each(events())
    except (ConfigurationError, OSError) as exc:
        print(f"autocell maintenance fit: {exc}", file=sys.stderr)
        return 2
    for m, why in skipped.items():
        print(f"autocell maintenance fit: skipped {m}: {why}", file=sys.stderr)
    if not models:
        print("autocell maintenance fit: no machine could be fitted"
              + ("" if skipped else " (no readings in the logs)"), file=sys.stderr)
        return 2
    out: dict[str, Any] = {"machines": {m: model.to_json() for m, model in models.items()},
                           "sources": [str(p) for p in args.logs]}
    if skipped:
        out["meta"] = {"skipped": skipped}
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
                         "readings that can be fitted — one that cannot, e.g. never failed, is "
                         "named on stderr and in the file's meta.skipped; exit 2 if none can)")
    fp.set_defaults(func=cmd_fit)
