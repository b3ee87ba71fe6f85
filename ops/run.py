"""``autocell run``: one run of a cell in virtual time, with a progress bar and a KPI table.

Exit codes: 0 — the run ended and every invariant held; 1 — an invariant
failed (the table and the report say which); 2 — bad input (missing file,
invalid YAML, unknown format, bad keys).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from security.errors import ConfigurationError
from security.untrusted import shown


def load_keys(cfg: Any) -> tuple[Any, float]:
    """Keys for the run: the cell's keys directory, or throw-away keys made in memory."""
    keys_dir = cfg.keys_dir_path()
    if keys_dir is None:
        return None, 0.0
    from agents.cell.build import roles_of
    from security.keystore import EphemeralCell, KeyDir

    kd = KeyDir(Path(keys_dir))
    trust = kd.trust_store()
    keys = {}
    for agent, role in roles_of(cfg).items():
        key, cert = kd.identity(agent)
        if cert.role != role:
            raise ConfigurationError(f"certificate of {agent!r} has role {cert.role!r}, "
                                     f"the cell needs {role!r}")
        keys[agent] = key
    if kd.cert_path("console").exists():   # escalations need the console's identity
        key, cert = kd.identity("console")
        if cert.role == "console":
            keys["console"] = key
    return EphemeralCell(trust, keys), time.time()


def note_large_instance(cfg: Any, path: str) -> None:
    """Say before a large benchmark instance runs what bounds its wall time: every message is
    signed and verified (~0.3 ms the pair), a rehearsal pass costs ~5 per operation, and
    each operation's lease is renewed by heartbeats until it ends — at most ~500 times, the
    interval scaled to the instance (sim_bridge/instances.py, ADR 56)."""
    from sim_bridge.instances import (
        REHEARSAL_FULL_OPS,
        RENEWALS_PER_HORIZON,
        SUPPORTED_EXTENSIONS,
    )

    ops = sum(len(cfg.product(o.product).routing) for o in cfg.orders)
    if Path(path).suffix.lower() not in SUPPORTED_EXTENSIONS or ops <= REHEARSAL_FULL_OPS:
        return
    passes = cfg.negotiation.rehearsal_passes
    beat_s = cfg.negotiation.heartbeat_interval_s
    messages = ops * (5 * passes + 10 + RENEWALS_PER_HORIZON // 2)
    jobs = len(cfg.orders)
    print(f"autocell: {shown(path)}: {ops} operations of {jobs} jobs; the agents rehearse "
          f"{passes} passes (250 up to {REHEARSAL_FULL_OPS} operations) and renew each lease "
          f"every {beat_s:.3g} time units (every 1 up to {REHEARSAL_FULL_OPS} operations): "
          f"about {messages:,} signed messages, at least "
          f"{max(1, round(messages * 0.3e-3 / 60))} min of wall time", file=sys.stderr)


def execute(args: Any) -> int:
    from ops.config import ConfigError, load_cell_or_instance
    from sim_bridge.report import build_report
    from sim_bridge.virtual import VirtualCell

    console = Console(stderr=True)
    try:
        cfg = load_cell_or_instance(args.cell)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    if getattr(args, "gantt", None):
        from ops.gantt import check_format
        check_format(args.gantt)        # before the run, not after it
    if args.until is not None and args.until <= 0:
        raise ConfigurationError("--until must be a positive number of simulated seconds")
    speed = getattr(args, "speed", None)
    if speed is not None and not speed > 0:      # also NaN
        raise ConfigurationError(f"--speed {speed:g}: must be a positive number of simulated "
                                 "seconds per wall second")
    faults = None
    if getattr(args, "faults", None):
        from ops.config.fault_files import load_faults
        try:
            faults = load_faults(args.faults, cfg)
        except ConfigError as exc:
            print(str(exc), file=sys.stderr)
            return 2
    if not args.quiet:
        note_large_instance(cfg, args.cell)
    keys, base_at = load_keys(cfg)
    db = getattr(args, "escalations_db", None)
    if db and Path(db).exists():
        raise ConfigurationError(f"{db}: already exists; the escalations of a run go into a "
                                 "new file")
    cell = VirtualCell(cfg, seed=args.seed, keys=keys, clock_base_at=base_at, faults=faults,
                       escalations_db=db or ":memory:")
    from ops.maintenance import attach_for_run
    attach_for_run(cell, getattr(args, "maintenance_policy", None),
                   getattr(args, "maintenance_model", None))
    from agents.negotiation.fingerprint import run_fingerprints
    strategies = run_fingerprints(cfg, *cell._strategies)
    log_path = getattr(args, "decision_log", None)
    log_file, recorder = None, None
    if log_path:
        from ops.replay import record_virtual
        log_file = open(log_path, "wb")   # noqa: SIM115 - closed below
        recorder = record_virtual(cell, log_file, strategy_code=strategies)
    server = None
    if getattr(args, "metrics_port", None) is not None:
        server = virtual_metrics(cell).serve(args.metrics_port)
    try:
        _run_cell(cell, args, console)
    finally:
        if server is not None:      # the endpoint lives as long as the run
            server.shutdown()
            server.server_close()
        if recorder is not None and log_file is not None:
            recorder.close()
            log_file.close()
    report = build_report(cell)
    report["strategies"] = strategies          # which code made it, read before it ran
    benchmark = best_known(args.cell, report["makespan"])
    if benchmark is not None and report["ended_by"] == "completed":   # a cut run's makespan
        report["benchmark"] = benchmark                               # is no schedule's
    if recorder is not None:
        report["decision_log"] = {"path": str(log_path), "host": recorder.host,
                                  "key": recorder.key.public_key.hex(), "lines": recorder.n,
                                  "head": recorder.prev}
    if args.events:
        Path(args.events).write_text("".join(line + "\n" for line in cell.events))
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
    if getattr(args, "gantt", None):
        from ops.gantt import write as write_gantt
        from sim_bridge.invariants import parse
        write_gantt(args.gantt, parse(cell.events), cfg,
                    f"{cfg.cell} · seed {cell.seed} · autocell run",
                    [log_path] if log_path else [])
    if not args.quiet:
        print_summary(report, Console())
    failed = [name for name, ok in report["invariants"].items() if not ok]
    if failed:
        for name in failed:
            for v in report["invariant_violations"].get(name, []):
                print(f"invariant {name} violated: {v}", file=sys.stderr)
        print(f"autocell: {len(failed)} invariant(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def best_known(path: str | Path, makespan: float) -> dict[str, Any] | None:
    """An FJSP/JSSP instance's published bounds from the ``bks.csv`` beside it, and this
    run's makespan against them (``gap_pct``: over the best known upper bound); None for a
    cell file, or an instance with no row there.  A bad ``bks.csv`` is only a note."""
    from sim_bridge.instances import SUPPORTED_EXTENSIONS, InstanceError, load_bks

    path = Path(path)
    bks = path.parent / "bks.csv"
    if path.suffix not in SUPPORTED_EXTENSIONS or not bks.is_file():
        return None
    try:
        rows = {r.instance: r for r in load_bks(bks)}
    except (InstanceError, OSError, ValueError) as exc:
        print(f"note: {bks} not read ({exc}); no best-known makespan to compare with",
              file=sys.stderr)
        return None
    row = rows.get(path.stem)
    if row is None or row.extension != path.suffix:
        return None
    return {"instance": row.instance, "bks_csv": str(bks), "lower_bound": row.lower_bound,
            "best_known_upper": row.best_known_upper, "source": row.source,
            "gap_pct": round(100.0 * (makespan - row.best_known_upper)
                             / row.best_known_upper, 2)}


class _RunBusStats:
    """The virtual driver's message counters in the shape of the bus's."""

    def __init__(self, cell: Any) -> None:
        self.cell = cell

    def __getattr__(self, name: str) -> Any:
        s = self.cell.stats
        return {"sent": s.sent_by_type, "received": s.received_by_type, "rejected": s.rejected,
                "dropped": s.messages_lost + s.dropped_partition + s.dropped_agent_down,
                "handler_errors": 0}[name]


def virtual_metrics(cell: Any) -> Any:
    """Metrics of a virtual-time run (ops/metrics.py): the whole cell in one registry;
    times are simulated seconds.  Switching them on leaves the event log unchanged."""
    from agents.cell.specs import KpiSpec
    from ops.metrics import ProcessMetrics

    metrics = ProcessMetrics(lambda: cell.env.now)
    metrics.add_bus(lambda: _RunBusStats(cell))
    metrics.add_agents(lambda: cell.agents)
    metrics.add_plant(cell.plant, KpiSpec.from_config(cell.cfg), lambda: cell.env.now)
    cell.observer = metrics
    return metrics


def _run_cell(cell: Any, args: Any, console: Console) -> None:
    speed = getattr(args, "speed", None)
    if args.quiet:
        cell.run(until=args.until, speed=speed)
        return
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("orders · sim time {task.fields[sim]}"), TimeElapsedColumn(),
                  console=console, transient=False) as bar:
        task = bar.add_task(f"{cell.cfg.cell} seed {cell.seed}", total=len(cell.orders),
                            sim="0 s")

        def progress(now: float, done: int, total: int) -> None:
            bar.update(task, completed=done, sim=_fmt_s(now))

        cell.run(until=args.until, progress=progress, speed=speed)


def _fmt_s(s: float) -> str:
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


def _vs_best_known(makespan: float, b: dict[str, Any]) -> str:
    bounds = (f"{b['best_known_upper']}" if b["lower_bound"] == b["best_known_upper"]
              else f"{b['best_known_upper']} (lower bound {b['lower_bound']})")
    return f"{makespan:.1f} vs {bounds}: {b['gap_pct']:+.1f} %"


def print_summary(r: dict[str, Any], console: Console) -> None:
    t = Table(title=f"cell {r['cell']} · seed {r['seed']} · {r['ended_by']}")
    t.add_column("KPI")
    t.add_column("value", justify="right")
    rows = [
        ("orders completed / total", f"{r['orders_completed']} / {r['orders_total']}"),
        ("orders lost", str(r["orders_lost"])),
        ("orders escalated (non-routine)", str(r["orders_escalated"])),
        ("orders cancelled (by a supervisor)", str(r.get("orders_cancelled", 0))),
        ("escalations raised (groups), auto-handled",
         f"{r['escalations_raised']} ({r['escalation_groups']}), "
         f"{r['auto_handled_ratio']:.0%} of disruptions"),
        ("makespan", _fmt_s(r["makespan"])),
        *([("makespan against the best known", _vs_best_known(r["makespan"], r["benchmark"]))]
          if "benchmark" in r else []),
        ("mean flow time", _fmt_s(r["mean_flow_time"])),
        ("tardiness total (tardy orders)", f"{_fmt_s(r['tardiness_total'])} ({r['tardy_orders']})"),
        ("operations (scrapped)", f"{r['operations']} ({r['scrapped']})"),
        ("faults / re-routes / lease expiries",
         f"{r['faults']} / {r['reroutes']} / {r['lease_expiries']}"),
        *([("planned maintenance stops", str(r["planned_maintenances"]))]
          if r["planned_maintenances"] else []),
        ("restarts / detection max / re-route max",
         f"{r['restarts']} / {_fmt_s(r['detection_latency']['max'])} / "
         f"{_fmt_s(r['recovery_latency']['max'])}"),
        ("messages sent / rejected", f"{r['messages_sent']:,} / {r['messages_rejected']}"),
        ("simulated / wall", f"{_fmt_s(r['sim_time_s'])} / {r['wall_s']:.2f} s "
                             f"({r['sim_speedup']}×)"),
    ]
    for k, v in rows:
        t.add_row(k, v)
    for m, u in r["utilisation"].items():
        t.add_row(f"utilisation {m}", f"{u:.0%}")
    for name, ok in r["invariants"].items():
        t.add_row(f"invariant {name}", "[green]holds[/]" if ok else "[red]VIOLATED[/]")
    t.add_row("event log sha256", r["event_log_sha256"][:16] + "…")
    console.print(t)
    if "kpis" in r:
        console.print(kpi_table(r["kpis"]))
        if "energy_cost" in r["kpis"]["cell"]:
            console.print(energy_table(r["kpis"], r.get("energy", {}).get("currency", "")))


def energy_table(k: dict[str, Any], currency: str = "") -> Table:
    """Energy by machine and state, its cost and CO₂, and the peak against the cap
    (a cell with an ``energy:`` section; docs/kpis.md, "Energy")."""
    from rich import box

    c = k["cell"]
    cap = c["peak_cap_kw"]
    over = (f" · cap {cap:g} kW, {c['cap_violations']} window(s) over" if cap is not None
            else "")
    t = Table(title=f"energy, kWh by state · peak {c['peak_kw']:.2f} kW over "
                    f"{_fmt_s(c['peak_window_s'])}"
                    f"{over}",
              box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, padding=(0, 1))
    states = list(c["energy_by_state_kwh"])
    short = {"standby": "stby"}
    for name in ("", *(short.get(s, s) for s in states), "kWh", currency or "cost", "CO₂ kg"):
        t.add_column(name, justify="left" if not name else "right", no_wrap=True)
    for name, row in [("cell", c), *k["machines"].items()]:
        co2 = row.get("co2_kg")
        t.add_row(f"[bold]{name}[/]" if name == "cell" else name,
                  *(f"{row['energy_by_state_kwh'][s]:.2f}" for s in states),
                  f"{row['energy_kwh']:.2f}", f"{row['energy_cost']:.2f}",
                  "–" if co2 is None or c.get("co2_kg") is None else f"{co2:.2f}")
    return t


def kpi_table(k: dict[str, Any]) -> Table:
    """The plant KPIs (docs/kpis.md): one row for the cell, one per machine."""
    c = k["cell"]
    from rich import box

    cancelled = c.get("orders_cancelled", 0)
    t = Table(title=f"plant KPIs over {_fmt_s(k['window_s'])} · cell tardiness "
                    f"{_fmt_s(c['tardiness_s'])} ({c['tardy_orders']} tardy orders)"
                    + (f" · {cancelled} order(s) cancelled" if cancelled else ""),
              box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, padding=(0, 1))
    # a run with maintenance: downtime split planned / unplanned (MTBF and MTTR are
    # counted on unplanned failures only, sim_bridge/kpis.py)
    split = "down_planned_s" in c
    for name in ("", "OEE", "avail", "perf", "qual", "FPY", "MTBF", "MTTR",
                 *(("down plan", "down unpl") if split else ()), "unit/h", "kWh/u"):
        t.add_column(name, justify="left" if not name else "right", no_wrap=True)

    def pct(x: float | None) -> str:
        return "–" if x is None else f"{x:.0%}"

    def dur(x: float | None) -> str:
        return "–" if x is None else _fmt_s(x)

    def num(x: float | None, fmt: str) -> str:
        return "–" if x is None else format(x, fmt)

    for name, row in [("cell", c), *k["machines"].items()]:
        t.add_row(f"[bold]{name}[/]" if name == "cell" else name, pct(row["oee"]),
                  pct(row["availability"]), pct(row["performance"]), pct(row["quality"]),
                  pct(row["first_pass_yield"]), dur(row["mtbf_s"]), dur(row["mttr_s"]),
                  *((dur(row.get("down_planned_s")), dur(row.get("down_unplanned_s")))
                    if split else ()),
                  num(row["throughput_units_per_h"], ".1f"),
                  num(row["energy_per_unit_kwh"], ".3f"))
    return t


def trimmed(cfg: Any, orders: int | None) -> Any:
    """The cell with only its first ``orders`` orders (smaller runs for many seeds).

    Re-validated with every cross-check (:func:`ops.config.cell_from_dict`), so it lives
    with the command line, not with the chaos draws in :mod:`sim_bridge.chaos`."""
    from ops.config import cell_from_dict

    if orders is None or orders >= len(cfg.orders):
        return cfg
    data = cfg.model_dump(mode="json", exclude_none=True)
    data["orders"] = data["orders"][:orders]
    kept = {o["id"] for o in data["orders"]} | {m.id for m in cfg.machines} | \
        {r.id for r in cfg.robots}
    for h in data.get("hosts", []):
        h["agents"] = [a for a in h.get("agents", []) if a in kept]
    data.pop("security", None)
    return cell_from_dict(data, source=f"{cfg.source} (first {orders} orders)")


def chaos_one(cfg: Any, seed: int) -> tuple[dict[str, Any], Any]:
    """One chaos run: the seed's random scenario on the cell, in virtual time."""
    from sim_bridge.chaos import random_scenario
    from sim_bridge.report import build_report
    from sim_bridge.virtual import VirtualCell

    scenario = random_scenario(cfg, seed)
    cell = VirtualCell(cfg, seed=seed, faults=scenario)
    cell.run()
    return build_report(cell), scenario


def chaos_failures(report: dict[str, Any]) -> list[str]:
    """What makes a chaos run fail: a broken invariant, or an order not completed."""
    out = [f"invariant {name}: {'; '.join(report['invariant_violations'].get(name, [])[:3])}"
           for name, ok in report["invariants"].items() if not ok]
    if report["orders_completed"] != report["orders_total"]:
        out.append(f"{report['orders_total'] - report['orders_completed']} order(s) not "
                   f"completed (ended by {report['ended_by']})")
    return out


def execute_chaos(args: Any) -> int:
    """``autocell chaos CELL --seed N | --seeds COUNT``."""
    import yaml

    from ops.config import ConfigError, load_cell_or_instance
    from sim_bridge.chaos import replay_command

    try:
        cfg = trimmed(load_cell_or_instance(args.cell), args.orders)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    seeds = [args.seed] if args.seed is not None else list(range(args.seeds))
    failed = 0
    console = Console(stderr=True)
    with Progress(TextColumn("[bold]chaos"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("seeds · {task.fields[failed]} failed"), TimeElapsedColumn(),
                  console=console, disable=len(seeds) == 1 or args.quiet) as bar:
        task = bar.add_task("chaos", total=len(seeds), failed=0)
        for seed in seeds:
            report, scenario = chaos_one(cfg, seed)
            if args.write and len(seeds) == 1:
                Path(args.write).write_text(
                    f"# autocell chaos scenario, seed {seed}\n"
                    + yaml.safe_dump(scenario.model_dump(mode="json"), sort_keys=False))
            problems = chaos_failures(report)
            if problems:
                failed += 1
                console.print(f"[red]seed {seed} FAILED[/]: " + " | ".join(problems))
                console.print(f"  replay: {replay_command(args.cell, seed, args.orders)}")
            elif len(seeds) == 1 and not args.quiet:
                print_summary(report, Console())
            bar.update(task, advance=1, failed=failed)
            if args.report and len(seeds) == 1:
                Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
    if len(seeds) > 1:
        print(f"chaos: {len(seeds) - failed}/{len(seeds)} seeds passed")
    return 1 if failed else 0
