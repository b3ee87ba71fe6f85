"""The ``autocell`` command line: one entry point, one sub-command per job.

Errors a person can fix (bad flags, files, roles) print one clear line on
stderr and exit 2; a failed check (invariants, validation) exits 1 or 2 as
each command documents; 0 is success.  Sub-command modules are imported
lazily so ``autocell --help`` stays instant.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import typing
from collections.abc import Callable, Sequence
from pathlib import Path

from ops.flags import cell_time, count, limit, seed, speed, wall_seconds
from ops.paths import output_file
from ops.words import counted
from security.errors import ConfigurationError
from security.untrusted import escape_controls, safe_lines

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
LOG_LEVELS = ("debug", "info", "warning", "error")
MAX_VALID_DAYS = 36_500     # a certificate valid a century is as good as forever


def _keys_dir(args: argparse.Namespace):
    from security.keystore import KeyDir

    return KeyDir(Path(args.dir))


def cmd_keys_init(args: argparse.Namespace) -> int:
    kd = _keys_dir(args)
    path = kd.init(time.time())
    print(f"created cell authority {path} (mode 0600) and {kd.authority_pub_path}")
    print(f"created empty revocation list {kd.crl_path}")
    return EXIT_OK


def cmd_keys_issue(args: argparse.Namespace) -> int:
    if not 0 < args.valid_days <= MAX_VALID_DAYS:  # also NaN
        raise ConfigurationError(f"--valid-days {args.valid_days:g}: give a validity in days "
                                 f"above 0 and at most {MAX_VALID_DAYS}")
    kd = _keys_dir(args)
    key, cert = kd.issue(args.agent, args.role, time.time(), valid_s=args.valid_days * 86400.0)
    c = kd.certificate(args.agent)
    print(f"issued {args.role} certificate #{c.serial} for {args.agent!r}, valid "
          f"{_iso(c.not_before_at)} .. {_iso(c.not_after_at)}")
    print(f"  private key  {key} (mode 0600)")
    print(f"  certificate  {cert}")
    return EXIT_OK


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    kd = _keys_dir(args)
    crl = kd.revoke(args.agent, time.time())
    print(f"revoked {args.agent!r}: {kd.crl_path} is now revision {crl.serial} "
          f"({len(crl.revoked)} revoked); distribute it to every host")
    return EXIT_OK


def cmd_keys_list(args: argparse.Namespace) -> int:
    kd = _keys_dir(args)
    kd.authority()   # exits 2 with a hint when there is none
    crl = kd.revocations()
    certs = kd.certificates()
    if args.json:
        print(json.dumps([{"agent": c.agent, "role": c.role, "serial": c.serial,
                           "not_after_at": c.not_after_at,
                           "revoked": crl.is_revoked(c.agent, c.serial)} for c in certs]))
        return EXIT_OK
    print(f"{kd.root}: {len(certs)} agent certificate(s)")
    for c in certs:
        state = "REVOKED" if crl.is_revoked(c.agent, c.serial) else (
            "expired" if not c.valid_at(time.time()) else "valid")
        print(f"  {c.agent:<24} {c.role:<8} #{c.serial:<4} until {_iso(c.not_after_at)}  {state}")
    return EXIT_OK


def cmd_keys_show(args: argparse.Namespace) -> int:
    from security.crypto import fingerprint

    kd = _keys_dir(args)
    c = kd.certificate(args.agent)
    ok = c.verify(kd.authority())
    revoked = kd.revocations().is_revoked(c.agent, c.serial)
    info = {"agent": c.agent, "role": c.role, "serial": c.serial,
            "public_key_fingerprint": fingerprint(c.public_key),
            "not_before": _iso(c.not_before_at), "not_after": _iso(c.not_after_at),
            "signed_by_authority": ok, "revoked": revoked,
            "certificate": str(kd.cert_path(c.agent)), "private_key": str(kd.key_path(c.agent))}
    if args.json:
        print(json.dumps(info))
    else:
        for k, v in info.items():
            print(f"{k:<24} {v}")
    return EXIT_OK


def cmd_bench_bus(args: argparse.Namespace) -> int:
    from ops.bench.bus import run

    if args.seconds <= 0:
        raise ConfigurationError("--seconds must be positive")
    if not args.json:
        print(f"measuring the bus for about {2 * args.seconds + 2:.0f} s ...", file=sys.stderr)
    r = run(seconds=args.seconds, metrics=args.metrics, pin=args.pin,
            record=getattr(args, "decision_log", False))
    if args.json:
        print(json.dumps(r))
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"autocell bench bus — {r['library']}, {r['envelope_bytes']}-byte envelopes")
    t.add_column("figure")
    t.add_column("value", justify="right")
    for label, key, unit in [("sign bound (1/t_sign)", "sign_bound_per_s", "/s"),
                             ("verify bound (1/t_verify)", "verify_bound_per_s", "/s"),
                             ("signed throughput, process→process tcp", "signed_msgs_per_s", "/s"),
                             ("ratio throughput / verify bound", "ratio", ""),
                             ("round trip p50", "rtt_p50_us", " µs"),
                             ("round trip p99", "rtt_p99_us", " µs")]:
        t.add_row(label, f"{r[key]:,}{unit}")
    t.add_row("messages sent / received / rejected",
              f"{r['messages_sent']:,} / {r['messages_received']:,} / {r['messages_rejected']}")
    b = r["receive_path_us"]
    t.add_row("receive path, in process: verify / authenticate / decode / open",
              f"{b['verify_us']} / {b['authenticate_us']} / {b['decode_us']} / {b['open_us']} µs")
    t.add_row("ratio bound of open alone (verify / open)", f"{b['open_only_ratio']}")
    w = r["wire_decode_us"]["proposal"]
    t.add_row("wire decode: msgspec / reference validators",
              f"{w['msgspec_us']} / {w['reference_us']} µs")
    if "metrics" in r:
        m = r["metrics"]
        t.add_row("throughput, metrics off", f"{m['signed_msgs_per_s_without']:,}/s")
        t.add_row(f"throughput, metrics on (scraped every {m['scrape_interval_s']:g} s)",
                  f"{m['signed_msgs_per_s_with']:,}/s")
        t.add_row("cost of metrics (target ≤ 5 %)", f"{m['cost_pct']} %")
    if "decision_log" in r:
        d = r["decision_log"]
        t.add_row("throughput, decision log on", f"{d['signed_msgs_per_s_with']:,}/s")
        t.add_row("cost of the decision log (target ≤ 5 %)",
                  f"{d['cost_pct']} % — {'met' if d['within_5_pct'] else 'MISSED'}")
    Console().print(t)
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from ops.run import execute

    return execute(args)        # a missing file: the loader's message, as validate's


def cmd_experiment(args: argparse.Namespace) -> int:
    from ops.experiment.command import execute

    return execute(args)


def cmd_up(args: argparse.Namespace) -> int:
    from ops.up import check_up_policy

    check_up_policy(args)             # before anything is prepared or started
    if getattr(args, "ray", False):   # the same cell as Ray actors
        from ops.ray_up import execute_up_ray

        return execute_up_ray(args)
    from ops.up import execute_up

    return execute_up(args)


def cmd_host(args: argparse.Namespace) -> int:
    from ops.up import run_process

    return run_process(args, "host")


def cmd_plant(args: argparse.Namespace) -> int:
    """``autocell plant`` and its old name ``autocell sim``: the plant gateway process."""
    from ops.up import run_process

    return run_process(args, "plant")


def cmd_console_agent(args: argparse.Namespace) -> int:
    from ops.up import run_process

    return run_process(args, "console-agent")


def cmd_chaos(args: argparse.Namespace) -> int:
    from ops.run import execute_chaos

    if args.orders is not None and args.orders < 1:
        raise ConfigurationError("--orders must be at least 1")
    return execute_chaos(args)


def cmd_bench_fjsp(args: argparse.Namespace) -> int:
    from ops.bench.fjsp import RULE_NAMES, run

    directory = Path(args.dir)
    if not directory.is_dir():
        raise ConfigurationError(f"{directory}: not a directory (expected one holding bks.csv)")
    from rich.console import Console
    from rich.table import Table

    err = Console(stderr=True)
    methods = ("agents",) + RULE_NAMES

    def progress(e: dict) -> None:
        if not args.json:
            err.print(f"  {e['instance']}: " + ", ".join(
                f"{m} {e[m]['makespan']:g}" for m in methods) + f" (BKS {e['bks']})")

    r = run(directory, on_instance=progress)
    if args.json:
        print(json.dumps(r))
    else:
        t = Table(title="autocell bench fjsp — makespan (gap % to best known)")
        t.add_column("instance")
        t.add_column("BKS", justify="right")
        for m in methods:
            t.add_column(m, justify="right")
        for e in r["instances"]:
            t.add_row(e["instance"], str(e["bks"]), *(
                f"{e[m]['makespan']:g} ({e[m]['gap_pct']:.1f}%)" + ("" if e[m]["valid"] else " INVALID")
                for m in methods))
        t.add_row("mean gap", "", *(f"{r['mean_gap_pct'][m]:.2f}%" for m in methods))
        Console().print(t)
        worse, beyond = r["worse_than_best_rule"], r["worse_than_best_rule_beyond_latency"]
        print(f"agents worse than the best rule on {len(worse)} of {len(r['instances'])}"
              + (f" ({', '.join(worse)})" if worse else "")
              + f"; by more than their own start-up latency on {len(beyond)}"
              + (f" ({', '.join(beyond)})" if beyond else ""))
    return EXIT_OK if r["all_valid"] else EXIT_FAILED


def cmd_bench_healing(args: argparse.Namespace) -> int:
    from ops.bench.healing import run

    r = run(seeds=args.seeds, kills=args.kills, speed=args.speed,
            processes=not args.no_processes,
            progress=lambda s: print(f"  {s}", file=sys.stderr) if not args.json else None)
    if args.json:
        print(json.dumps(r))
        return EXIT_OK
    v = r["virtual"]
    print(f"virtual time, {len(v['runs'])} runs of the shipped fault scenarios on the demo cell:")
    print(f"  detection  p95 {v['detection_latency_s']['p95']:.3f} s, max "
          f"{v['detection_latency_s']['max']:.3f} s = "
          f"{v['detection_latency_heartbeats']['max']:.2f} heartbeats of "
          f"{v['heartbeat_interval_s']:g} s (bound: {v['detection_bound_s']:g} s = 3 missed "
          f"heartbeats + delivery tolerance) over {v['detections']} detections")
    print(f"  re-route   p95 {v['recovery_latency_s']['p95']:.3f} s, max "
          f"{v['recovery_latency_s']['max']:.3f} s = "
          f"{v['recovery_latency_reply_deadlines']['max']:.2f} reply deadlines of "
          f"{v['reply_deadline_s']:g} s over {v['recoveries']} re-routes")
    lost = sum(x["orders_lost"] for x in v["runs"])
    broken = sum(not x["invariants_hold"] for x in v["runs"])
    print(f"  orders lost {lost}, runs with a broken invariant {broken}")
    if "processes" in r:
        p = r["processes"]
        print(f"real processes (autocell up at {p['speed']:g}×, {p['kills']} × kill -9):")
        print(f"  restart    p95 {p['restart_s']['p95']:.3f} s, max {p['restart_s']['max']:.3f} s "
              f"over {p['restarts']} restarts; orders {p['orders_completed']}/"
              f"{p['orders_total']}, invariants {'hold' if p['invariants_hold'] else 'BROKEN'}")
    print("targets: " + ", ".join(f"{k} {'met' if ok else 'MISSED'}"
                                  for k, ok in r["targets"].items()))
    return EXIT_OK


def _int_list(text: str, flag: str, least: int) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigurationError(f"{flag} takes comma-separated integers, got {text!r}") from None
    if not values or min(values) < least:
        raise ConfigurationError(f"{flag}: every value must be at least {least}, got {text!r}")
    return values


def cmd_bench_scale(args: argparse.Namespace) -> int:
    from ops.bench.scale import run

    agents = _int_list(args.agents, "--agents", 2)
    bidders = _int_list(args.bidders, "--bidders", 1)
    if args.tasks < 1:
        raise ConfigurationError("--tasks must be at least 1")
    r = run(agents=agents, bidders=bidders, tasks=args.tasks,
            progress=lambda s: print(s, file=sys.stderr) if not args.json else None)
    if args.json:
        print(json.dumps(r))
        return EXIT_OK
    print("one host, one loop, one inbound socket shared by all its agents; signing on")
    for s in r["sizes"]:
        g = s["growth"]
        print(f"{s['agents']} agents ({s['orders']} orders, {s['machines']} machines): ready in "
              f"{s['ready_s']:.3f} s (socket bound at {s['bind_s']:.3f} s; keys made in memory "
              f"in {s['keys_s']:.3f} s before that)")
        print("  bidders  messages/task  CPU/task (8 open)  wall/task (8 open)  CPU µs/message"
              "  latency p50 (1 open)")
        for p in s["per_task"]:
            print(f"  {p['bidders']:>7}  {p['messages_per_task']:>13g}  "
                  f"{p['cpu_us_per_task'] / 1000:>14.2f} ms  "
                  f"{p['wall_us_per_task'] / 1000:>15.2f} ms  {p['cpu_us_per_message']:>14.1f}  "
                  f"{p['latency_p50_us'] / 1000:>17.2f} ms")
        if g["linear"] is not None:
            print(f"  growth (CPU): {g['slope_us_per_bidder']:.1f} µs per bidder + "
                  f"{g['intercept_us']:.0f} µs, R² {g['r2']:.3f}, cost per message at the "
                  f"largest B / smallest B {g['per_message_ratio_max_min_b']:.2f} → "
                  f"{'linear' if g['linear'] else 'NOT linear'} (square term of a quadratic fit "
                  f"{g['quadratic_share_at_max']:.0%} at the largest B); messages = "
                  f"{g['messages_slope_per_bidder']:g}·B + {g['messages_intercept']:g}")
            w = s["growth_wall"]
            print(f"  growth (wall): {w['slope_us_per_bidder']:.1f} µs per bidder, R² "
                  f"{w['r2']:.3f}, quadratic share {w['quadratic_share_at_max']:.1%}")
    t = r["targets"]
    print(f"load average {r['load_average_1m']:g} on {r['cpus']} CPUs; the line is fitted to CPU "
          "time, which other processes on the machine do not inflate as they do wall time")
    print(f"targets: {t['largest_agents']} agents ready ≤ 5 s "
          f"{'met' if t['ready_within_5_s_at_largest'] else 'MISSED'}, per-task cost linear in "
          f"bidders {'met' if t['per_task_cost_linear_in_bidders'] else 'MISSED'}")
    return EXIT_OK


def cmd_bench_negotiation(args: argparse.Namespace) -> int:
    from ops.bench.negotiation import BLOCK_ROUNDS, DECISION_LOG_ROUNDS, run

    if args.bidders < 1 or args.rounds < 1:
        raise ConfigurationError("--bidders and --rounds must be at least 1")
    record_rounds = DECISION_LOG_ROUNDS
    if args.decision_log_rounds is not None:
        if not getattr(args, "decision_log", False):
            raise ConfigurationError("--decision-log-rounds is the length of the "
                                     "--decision-log run: give --decision-log too")
        if args.decision_log_rounds < 2 * BLOCK_ROUNDS:
            raise ConfigurationError(f"--decision-log-rounds must be at least "
                                     f"{2 * BLOCK_ROUNDS} (one block of {BLOCK_ROUNDS} "
                                     "rounds without the log, one with it)")
        record_rounds = args.decision_log_rounds
    layouts: list[int] | None = None
    if args.processes is not None:
        try:
            layouts = [int(p) for p in args.processes.split(",")]
        except ValueError:
            raise ConfigurationError(f"--processes {args.processes!r}: expected a number or a "
                                     "comma-separated list of numbers, e.g. 1,2,4,20") from None
        if not all(1 <= p <= args.bidders for p in layouts):
            raise ConfigurationError("--processes must be between 1 and --bidders")
    r = run(bidders=args.bidders, rounds=args.rounds, processes=layouts, cfp=args.cfp,
            record=getattr(args, "decision_log", False), award=args.award,
            record_rounds=record_rounds)
    if args.json:
        print(json.dumps(r))
        return EXIT_OK
    t = r["targets"]
    print(f"call for proposals to {r['bidders']} bidders over tcp loopback, signing and "
          f"verification on, cfp as {r['cfp']} ({r['cfp_envelopes_per_round']:g} envelope(s) "
          f"per round), {r['rounds']} rounds per layout on {r['cpus']} CPUs:")
    print("  bidder processes   round p50     p99     max   cfps sent p50   caller CPU/round"
          "   load")
    for x in r["layouts"]:
        ok = "" if x["round_p99_us"] <= 5000.0 else "   p99 > 5 ms"
        print(f"  {x['processes']:>16}  {x['round_p50_us'] / 1000:7.2f} ms {x['round_p99_us'] / 1000:6.2f}"
              f" {x['round_max_us'] / 1000:7.2f}   {x['send_all_cfps_p50_us'] / 1000:10.2f} ms"
              f"   {x['caller_cpu_us_per_round'] / 1000:11.2f} ms   {x['load_average_1m']:4.2f}{ok}")
    print(f"  caller: {r['caller_signs_per_round']} seal(s) + {r['bidders']} verifies = "
          f"{r['caller_crypto_us'] / 1000:.2f} ms of crypto per round (sign {r['sign_us']:.0f} "
          f"µs, verify {r['verify_us']:.0f} µs); headline ({r['processes']} processes) round "
          f"p50 = {r['round_p50_over_caller_crypto']:.2f}× the caller's crypto")
    print(f"  load average while measuring: {r['load_average_1m']:g} on {r['cpus']} CPUs "
          "(the figures are only as quiet as the machine)")
    print(f"  proposals received {sum(x['proposals_received'] for x in r['layouts']):,}, rejected "
          f"{sum(sum(x['rejected'].values()) for x in r['layouts'])} (caller) / "
          f"{sum(sum(x['peer_rejected'].values()) for x in r['layouts'])} (bidders)")
    if "decision_log" in r:
        d = r["decision_log"]

        def pct(figure: dict[str, typing.Any]) -> str:   # None: nothing measured without
            if figure["cost_pct"] is None:
                return "n/a"
            ci = figure.get("ci95_pct")
            return f"{figure['cost_pct']:+.1f} %" + (
                f" [95 % {ci[0]:+.1f}..{ci[1]:+.1f}]" if ci else "")

        print(f"  decision log on ({d['recording']}), against off in alternate blocks of "
              f"{d['block_rounds']} rounds over {d['rounds']} rounds "
              f"({r['processes']} processes): caller CPU/round "
              f"{pct(d['caller_cpu_us_per_round'])}, round p50 {pct(d['round_p50_us'])}, "
              f"p99 {pct(d['round_p99_us'])} (target ≤ 5 %); the caller's reads per round "
              f"{d['wakes_per_round']['without']} → {d['wakes_per_round']['with']}")
        b, c = d["bidders_cpu_us_per_round"], d["cell_cpu_us_per_round"]
        print(f"  CPU per round, every process: {c['without'] / 1000:.2f} → "
              f"{c['with'] / 1000:.2f} ms ({pct(c)}; the bidder processes "
              f"{b['without'] / 1000:.2f} → {b['with'] / 1000:.2f} ms, {pct(b)}) on "
              f"{r['cpus']} CPUs")
        if d["caller_us_per_entry"] is not None:
            print(f"  the recorder per entry: the caller {d['caller_us_per_entry']:.1f} µs "
                  f"({d['caller_entries_per_round']:g} entries a round; "
                  f"{d['caller_us_per_entry_over_verify']:.3f} of a verify)"
                  + ("" if d["bidders_us_per_entry"] is None else
                     f", the bidder processes {d['bidders_us_per_entry']:.1f} µs "
                     f"({d['bidders_entries_per_round']:g} a round)"))
    print(f"target: round p99 ≤ 5 ms with {r['processes']} bidder processes "
          f"{'met' if t['round_p99_within_5_ms'] else 'MISSED'}; in every layout "
          f"{'met' if t['round_p99_within_5_ms_every_layout'] else 'MISSED'}")
    if "decision_log_within_5_pct" in t:
        print("target: the decision log costs the caller's CPU, the round p50 and p99 ≤ 5 % "
              f"each: {'met' if t['decision_log_within_5_pct'] else 'MISSED'} in this run")
    return EXIT_OK


def cmd_bench_sim(args: argparse.Namespace) -> int:
    from ops.bench.sim import DEMO, run

    r = run(Path(args.cell) if args.cell else DEMO, seeds=args.seeds)
    if args.json:
        print(json.dumps(r))
    else:
        print(f"{r['cell']}: {r['sim_s']:.0f} simulated s in {r['wall_s']:.2f} wall s over "
              f"{r['runs']} seeds = {r['sim_speedup']:,.0f}× real time, signing on "
              f"({r['messages']:,} signed messages, {r['signed_msgs_per_wall_s']:,.0f}/s)")
    return EXIT_OK


def cmd_bench_plant(args: argparse.Namespace) -> int:
    from ops.bench import fleet, plant

    progress = (lambda _s: None) if args.json else (lambda s: print(s, file=sys.stderr))
    try:
        if args.backend == "vda5050":
            r = fleet.run(args.robots, args.rounds, progress)
        else:
            r = plant.run(args.machines, args.rounds, args.endpoint, progress, stack=args.stack,
                          profile=args.profile, sessions=args.sessions, servers=args.servers,
                          load=args.load, gap_ms=args.gap_ms, seed=args.seed)
    except (FileNotFoundError, RuntimeError, TimeoutError, ValueError) as exc:
        print(f"autocell: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(r))
    elif args.backend == "vda5050":
        print(fleet.summary(r))
    else:
        print(f"opcua plant round trip ({r['security']}, {r['server']}, {r['load']} load"
              + (f" (mean gap {r['gap_ms']:g} ms)" if r["gap_ms"] is not None else "")
              + f", {r['machines']} "
              f"machine(s) on one gateway, {r['sessions']} session(s) per endpoint, "
              f"{r['jobs']} jobs): p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms "
              f"(target ≤ {r['target_p99_ms']:.0f} ms), {r['events_per_s']:,.0f} events/s, "
              f"gateway CPU {r['cpu_ms_per_event']:.2f} ms per event")
        plant.print_phases(r)
    return EXIT_OK


def cmd_ops_prometheus_config(args: argparse.Namespace) -> int:
    from ops.config import ConfigError, load_cell
    from ops.prometheus.config import scrape_config

    try:
        cfg = load_cell(args.cell)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    text = scrape_config(cfg, scrape_interval=args.scrape_interval, source=args.cell,
                         console=None if args.console == "none" else args.console,
                         rules=args.rules or ())
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK
def cmd_bench_sweep(args: argparse.Namespace) -> int:
    from ops.bench.sweep import run

    if args.runs < 2:
        raise ConfigurationError("--runs must be at least 2")
    if not args.json:
        print(f"running {args.runs} demo-cell runs with 1, then 2 workers on a local Ray ...",
              file=sys.stderr)
    r = run(runs=args.runs)
    if args.json:
        print(json.dumps(r))
        return EXIT_OK
    print(f"{r['runs']} runs of {r['cell']}: 1 worker {r['wall_1_worker_s']:.2f} s "
          f"({r['per_run_1_worker_s']:.2f} s a run), 2 workers {r['wall_2_workers_s']:.2f} s "
          f"-> speed-up {r['speedup']:.2f}x (target >= {r['target_speedup']:g}x: "
          f"{'met' if r['target_met'] else 'MISSED'})")
    print(f"  Ray start {r['ray_start_s']:.2f} s and warm-up {r['warm_up_s']:.2f} s not counted; "
          f"hashes equal in both passes: {r['hashes_equal']}; failed runs {r['failed_runs']}; "
          f"{r['cpu_count']} CPUs, load average {r['load_average_1min']}")
    return EXIT_OK if r["failed_runs"] == 0 and r["hashes_equal"] else EXIT_FAILED


def cmd_validate(args: argparse.Namespace) -> int:
    from ops.config import validate_command

    code, text = validate_command(args.cell)
    if code == 0 and args.faults:
        from ops.config import ConfigError, load_cell_or_instance
        from ops.config.fault_files import load_faults

        try:
            f = load_faults(args.faults, load_cell_or_instance(args.cell))
        except ConfigError as exc:
            code, text = 2, str(exc)
        else:
            text += (f"\n{args.faults}: OK — scenario {f.name!r}: "
                     f"{counted(len(f.breakdowns), 'breakdown')}, "
                     f"{counted(len(f.crashes), 'crash', 'crashes')}, "
                     f"{counted(len(f.hosts), 'host fault')}, "
                     f"{counted(len(f.partitions), 'partition')}, "
                     f"{counted(len(f.clock_skew), 'clock skew')}")
    print(text, file=sys.stdout if code == 0 else sys.stderr)
    return code


def cmd_schema(args: argparse.Namespace) -> int:
    from ops.config.schema import schema_text

    text = schema_text()
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors escaped: ``unrecognized arguments`` and friends echo
    the command line as typed, control characters and all (sub-parsers inherit it)."""

    def error(self, message: str) -> typing.NoReturn:
        super().error(safe_lines(escape_controls(message)))  # one line, whatever was typed


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="autocell",
        description="Run a manufacturing cell as autonomous agents over signed ZeroMQ messages.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    keys = sub.add_parser("keys", help="cell authority, agent certificates, revocation")
    ksub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")

    def with_dir(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("--dir", default="./keys", help="keys directory (default: ./keys)")
        return sp

    with_dir(ksub.add_parser("init", help="create the cell authority")).set_defaults(
        func=cmd_keys_init)
    from security.certs import ROLES

    sp = with_dir(ksub.add_parser("issue", help="issue an agent key and certificate"))
    sp.add_argument("agent", help="agent id, e.g. mill-1")
    sp.add_argument("--role", required=True, help=f"one of: {', '.join(ROLES)}")
    sp.add_argument("--valid-days", type=float, default=365.0, help="validity (default 365)")
    sp.set_defaults(func=cmd_keys_issue)
    sp = with_dir(ksub.add_parser("revoke", help="revoke an agent's certificate"))
    sp.add_argument("agent")
    sp.set_defaults(func=cmd_keys_revoke)
    sp = with_dir(ksub.add_parser("list", help="list issued certificates"))
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_keys_list)
    sp = with_dir(ksub.add_parser("show", help="show one certificate"))
    sp.add_argument("agent")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_keys_show)

    bench = sub.add_parser("bench", help="benchmarks (print figures, never assert)")
    bsub = bench.add_subparsers(dest="bench_command", required=True, metavar="BENCHMARK")
    sp = bsub.add_parser("bus", help="signed throughput vs the Ed25519 verify bound; round trip")
    sp.add_argument("--json", action="store_true", help="print one JSON object")
    sp.add_argument("--pin", action="store_true",
                    help="pin the sender and the receiver process to two different CPUs "
                         "(steadier figures on a shared machine)")
    sp.add_argument("--seconds", type=float, default=3.0, help="sending time (default 3)")
    sp.add_argument("--metrics", action="store_true",
                    help="also measure with the receiver's metrics on and scraped: the cost %%")
    sp.add_argument("--decision-log", action="store_true",
                    help="also measure with the receiver recording a decision log: the cost %%")
    sp.set_defaults(func=cmd_bench_bus)
    sp = bsub.add_parser("fjsp", help="agents vs SPT/MWKR/FIFO on FJSP/JSSP instances (DIR/bks.csv)")
    sp.add_argument("dir", help="directory holding bks.csv and the instance files")
    sp.add_argument("--json", action="store_true", help="print one JSON object")
    sp.set_defaults(func=cmd_bench_fjsp)
    from ops.bench import energy as energy_bench; energy_bench.add_parsers(bsub)  # noqa: E702
    sp = bsub.add_parser("healing", help="fault detection and re-route latency (virtual time); "
                                         "real-process restart time")
    sp.add_argument("--seeds", type=int, default=3, help="seeds per fault scenario (default 3)")
    sp.add_argument("--kills", type=int, default=6, help="host kills in the process part")
    sp.add_argument("--speed", type=float, default=50.0, help="speed of the process part")
    sp.add_argument("--no-processes", action="store_true", help="virtual time only")
    sp.add_argument("--json", action="store_true", help="print one JSON object")
    sp.set_defaults(func=cmd_bench_healing)
    sp = bsub.add_parser("scale", help="10/100/1000 agents in one host: start-up time; "
                                       "messages and wall time per task against bidders")
    sp.add_argument("--agents", default="10,100,1000", help="host sizes (default 10,100,1000)")
    sp.add_argument("--bidders", default="1,2,5,10,20,50,100,200",
                    help="bidders per call for proposals (default 1,2,5,10,20,50,100,200)")
    sp.add_argument("--tasks", type=int, default=50, help="tasks per point (default 50)")
    sp.add_argument("--json", action="store_true", help="print one JSON object")
    sp.set_defaults(func=cmd_bench_scale)
    sp = bsub.add_parser("negotiation", help="multi-process call for proposals over tcp "
                                             "loopback, signing on: round p50/p99")
    sp.add_argument("--bidders", type=int, default=20, help="bidders (default 20)")
    sp.add_argument("--rounds", type=int, default=500, help="measured rounds (default 500)")
    sp.add_argument("--processes", default=None,
                    help="bidder processes, or a comma-separated list of layouts measured in "
                         "turn (default: 2,1,4,BIDDERS; the first is the headline)")
    sp.add_argument("--cfp", choices=["multicast", "unicast"], default="multicast",
                    help="one multicast envelope per call (default, the product path) or one "
                         "envelope per bidder")
    sp.add_argument("--decision-log", nargs="?", const="all", default=False,
                    choices=["all", "caller", "bidders"],
                    help="also measure the headline layout with every process recording a "
                         "decision log: the cost %%; 'caller' or 'bidders' records in those "
                         "processes only (where the cost comes from)")
    sp.add_argument("--decision-log-rounds", type=count, default=None, metavar="N",
                    help="rounds of the --decision-log run, alternating in blocks with and "
                         "without the log (default 4000: enough to tell a few per cent "
                         "from the noise)")
    sp.add_argument("--award", action="store_true",
                    help="end every round with the order's award to the earliest finish, "
                         "as a host's order does (after the round is timed)")
    sp.add_argument("--json", action="store_true", help="print one JSON object")
    sp.set_defaults(func=cmd_bench_negotiation)
    sp = bsub.add_parser("sweep", help="speed-up of 2 workers over 1 on the same sweep (Ray)")
    sp.add_argument("--runs", type=int, default=12, help="demo-cell runs per pass (default 12)")
    sp.add_argument("--json", action="store_true", help="print one JSON object")
    sp.set_defaults(func=cmd_bench_sweep)
    from ops.bench import maintenance as bench_maintenance
    bench_maintenance.add_bench_parser(bsub)
    sp = bsub.add_parser("plant", help="round trip of a plant command through real equipment "
                                       "(OPC UA with SignAndEncrypt, or VDA 5050 over MQTT; "
                                       "loopback)")
    sp.add_argument("--backend", choices=["opcua", "vda5050"], default="opcua",
                    help="the plant backend to measure (default opcua)")
    sp.add_argument("--machines", type=int, default=1, help="opcua: machines on one gateway "
                                                            "(default 1)")
    sp.add_argument("--robots", type=int, default=2, help="vda5050: vehicles on one broker "
                                                          "(default 2)")
    sp.add_argument("--rounds", type=int, default=50,
                    help="rounds, each commanding every machine or robot once (default 50)")
    sp.add_argument("--endpoint", metavar="URL",
                    help="an existing Machinery Jobs server whose machines are m01..mNN "
                         "(default: start the node-opcua emulator of tests/opcua)")
    sp.add_argument("--stack", choices=["node", "asyncua"], default="node",
                    help="the emulator to start without --endpoint (default node: node-opcua)")
    sp.add_argument("--profile", choices=["machinery-jobs", "packml"], default="machinery-jobs",
                    help="opcua: the machines' profile (packml: the emulator's PackML units)")
    sp.add_argument("--load", choices=["burst", "steady"], default="burst",
                    help="opcua: burst (every machine commanded in the same instant, the "
                         "default) or steady (each machine's next job after its previous one "
                         "ended plus a seeded exponential gap)")
    sp.add_argument("--gap-ms", type=float, default=500.0, metavar="MS",
                    help="opcua, --load steady: the mean gap between a job's end and the "
                         "machine's next command (default 500)")
    sp.add_argument("--seed", type=int, default=1,
                    help="opcua, --load steady: the seed of the gaps (default 1)")
    sp.add_argument("--sessions", type=int, default=1, choices=range(1, 65), metavar="N",
                    help="opcua: sessions per endpoint, machines dealt among them (default 1)")
    sp.add_argument("--servers", type=int, default=1, choices=range(1, 65), metavar="K",
                    help="opcua: emulator processes sharing the machines (default 1)")
    sp.add_argument("--json", action="store_true", help="print one JSON object")
    sp.set_defaults(func=cmd_bench_plant)
    sp = bsub.add_parser("sim", help="simulated seconds per wall second on the demo cell")
    sp.add_argument("--cell", help="another cell file (default: the demo cell)")
    sp.add_argument("--seeds", type=int, default=3, help="runs to average (default 3)")
    sp.add_argument("--json", action="store_true", help="print one JSON object")
    sp.set_defaults(func=cmd_bench_sim)

    sp = sub.add_parser("run", help="run a cell (or an .fjs/.jsp instance) in virtual time",
                        epilog="exit codes: 0 the run ended and every invariant holds; 1 an "
                               "invariant is violated; 2 bad input (the cell, a flag, a fault "
                               "scenario, a strategy that broke its contract); 130 Ctrl-C")
    sp.add_argument("cell", help="cell YAML, or an .fjs/.jsp benchmark instance")
    sp.add_argument("--seed", type=seed, default=None, help="run seed (default: the cell's sim.seed)")
    sp.add_argument("--until", type=cell_time, default=None, help="stop at this simulated time (s)")
    sp.add_argument("--report", metavar="FILE.json", type=output_file,
                    help="write the run report as JSON")
    sp.add_argument("--events", metavar="FILE.jsonl", type=output_file,
                    help="write the event log, one JSON a line")
    sp.add_argument("--gantt", metavar="FILE", type=output_file,
                    help="draw the schedule (machines and robots over time, faults, "
                         "escalations) as a .svg or .html Gantt chart")
    sp.add_argument("--quiet", action="store_true", help="no progress bar, no table")
    sp.add_argument("--faults", metavar="FILE",
                    help="play a fault scenario (cell_configs/faults/*.yaml) in virtual time")
    sp.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                    help="serve Prometheus /metrics on 127.0.0.1:PORT while the run lasts")
    sp.add_argument("--escalations-db", metavar="FILE", type=output_file,
                    help="keep the run's escalations and audit log in this SQLite file")
    sp.add_argument("--speed", type=float, default=None, metavar="K",
                    help="pace the run: K simulated seconds per wall second, so a person can "
                         "decide escalations in the console (default: as fast as possible)")
    sp.add_argument("--decision-log", metavar="FILE.jsonl", type=output_file,
                    help="record every decision in a signed decision log (docs/flight-recorder.md)")
    sp.add_argument("--maintenance-policy", metavar="POLICY", default=None,
                    choices=("run_to_failure", "preventive", "condition_based", "predictive",
                             "negotiated"),
                    help="maintain the wearing machines by this policy (docs/maintenance.md)")
    sp.add_argument("--maintenance-model", metavar="MODEL", default=None,
                    help="health models from `autocell maintenance fit` (default: the cell "
                         "file's figures)")
    sp.set_defaults(func=cmd_run)

    sp = sub.add_parser("experiment", help="a sweep of virtual-time runs on Ray: configs x "
                                           "strategies x faults x seeds; tables and plots")
    sp.add_argument("sweep", help="sweep file (cell_configs/experiments/*.yaml)")
    sp.add_argument("--address", default=None, metavar="auto|HOST:PORT",
                    help="join an existing Ray cluster (default: start a lean local Ray)")
    sp.add_argument("--workers", type=int, default=None,
                    help="runs in parallel (default: the CPU count)")
    sp.add_argument("--resume", action="store_true", help="skip the runs already completed in --out "
                    "(runs whose strategy code or inputs changed run again, with a note)")
    sp.add_argument("--out", metavar="DIR", help="results directory "
                                                 "(default experiments/<sweep name>/)")
    sp.add_argument("--show", metavar="RUN_ID",
                    help="print the `autocell run` command that reproduces one run")
    sp.add_argument("--dry-run", action="store_true", help="check the sweep, list its runs")
    sp.add_argument("--quiet", action="store_true", help="no progress bar, no table")
    sp.set_defaults(func=cmd_experiment)

    def process_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("cell", help="cell YAML with a hosts section")
        sp.add_argument("--speed", type=speed, default=1.0,
                        help="cell seconds per wall second (default 1)")
        sp.add_argument("--faults", metavar="FILE", help="fault scenario to play")
        sp.add_argument("--state-dir", metavar="DIR",
                        help="keys, journals, logs, status (default .autocell/CELL)")
        sp.add_argument("--log-level", default="info", choices=LOG_LEVELS,
                        help="JSON log lines at this level and above, on stderr (default info)")

    sp = sub.add_parser("up", help="run the cell as processes: the simulator and every host, "
                                   "supervised",
                        epilog="exit codes: 0 every order completed (or --until reached) and "
                               "every invariant holds; 1 an invariant is violated, or --timeout "
                               "struck; 2 bad input; 3 restart intensity exceeded (or stop_cell "
                               "decided); 130 Ctrl-C; 143 SIGTERM. Every host writes a decision "
                               "log into the state directory (decisions-NAME-BOOT.jsonl)")
    process_args(sp)
    sp.add_argument("--until", type=cell_time, default=None, help="stop at this cell time (s)")
    sp.add_argument("--timeout", type=wall_seconds, default=None, metavar="S",
                    help="give up after this many wall-clock seconds (exit 1)")
    sp.add_argument("--max-restarts", type=limit, default=5,
                    help="restarts allowed within the window before giving up (default 5)")
    sp.add_argument("--restart-window", type=wall_seconds, default=60.0,
                    help="restart intensity window, wall seconds (default 60)")
    sp.add_argument("--quiet", action="store_true", help="no progress lines")
    sp.add_argument("--ray", action="store_true",
                    help="run the simulator and hosts as Ray actors, restarted on failure")
    sp.add_argument("--address", metavar="auto|HOST:PORT",
                    help="with --ray: join this Ray cluster (default: start a lean local Ray)")
    sp.add_argument("--ray-local-node", action="store_true",
                    help="with --ray: pin every actor to this node (no shared storage needed)")
    sp.add_argument("--escalations-db", metavar="FILE", type=output_file,
                    help="the console agent's escalation store (default STATE_DIR/"
                         "escalations.db; an earlier run's is moved aside)")
    sp.add_argument("--maintenance-policy", metavar="POLICY", default=None,
                    choices=("run_to_failure", "preventive", "condition_based", "predictive",
                             "negotiated"),
                    help="only `negotiated`, on a cell file that says `maintenance: "
                         "{negotiate: true}` (then the default anyway); the simulator's own "
                         "policies are `autocell run` options (docs/maintenance.md)")
    sp.set_defaults(func=cmd_up)
    for kind, text in (("host", "run the agents of one host on the ZeroMQ bus"),
                       ("plant", "run the plant gateway: each resource's backend (the "
                                 "simulator by default) behind the remote plant protocol; "
                                 "`sim` is its old name")):
        sp = sub.add_parser(kind, help=text, aliases=["sim"] if kind == "plant" else [])
        process_args(sp)
        if kind == "host":
            sp.add_argument("--name", required=True, help="host name from the cell's hosts")
        sp.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                        help="serve Prometheus /metrics on this port (default: the process's "
                             "metrics_port in the cell file; none: off)")
        sp.add_argument("--start-at", type=float, default=None,
                        help="wall time (Unix s) of cell time 0; `up` gives all the same")
        sp.add_argument("--start-at-file", default=None, metavar="FILE",
                        help="wait for FILE ({\"start_at\": ...}), which `up` writes once "
                             "every process is ready")
        sp.set_defaults(func=cmd_host if kind == "host" else cmd_plant)
    sp = sub.add_parser("console-agent", help="run the console agent: the escalation store "
                                              "on the ZeroMQ bus (`up` starts it)")
    process_args(sp)
    sp.add_argument("--db", metavar="FILE", type=output_file,
                    help="escalation store (default STATE_DIR/escalations.db)")
    sp.add_argument("--route", action="append", metavar="AGENT=ENDPOINT",
                    help="where to reach an agent that is not in the cell file (`up` gives "
                         "the supervisor's); repeatable")
    sp.add_argument("--start-at", type=float, default=None,
                    help="wall time (Unix s) of cell time 0; `up` gives all the same")
    sp.add_argument("--start-at-file", default=None, metavar="FILE",
                    help="wait for FILE ({\"start_at\": ...}), which `up` writes once every "
                         "process is ready")
    sp.set_defaults(func=cmd_console_agent)

    sp = sub.add_parser("chaos", help="random faults of every kind, per seed, in virtual time")
    sp.add_argument("cell", help="cell YAML")
    g = sp.add_mutually_exclusive_group()
    g.add_argument("--seed", type=seed, default=None, help="play the scenario of this seed")
    g.add_argument("--seeds", type=count, default=20, help="play seeds 0..N-1 (default 20)")
    sp.add_argument("--orders", type=int, default=None, help="keep only the first N orders")
    sp.add_argument("--write", metavar="FILE.yaml", type=output_file,
                    help="with --seed: save the scenario")
    sp.add_argument("--report", metavar="FILE.json", type=output_file,
                    help="with --seed: write the run report")
    sp.add_argument("--quiet", action="store_true", help="no progress bar, no table")
    sp.set_defaults(func=cmd_chaos)

    ops_p = sub.add_parser("ops", help="deployment files: Prometheus scrape configuration")
    osub = ops_p.add_subparsers(dest="ops_command", required=True, metavar="ACTION")
    sp = osub.add_parser("prometheus-config",
                         help="write a Prometheus scrape configuration for the cell's processes")
    sp.add_argument("cell", help="cell YAML whose hosts and sim have metrics_port")
    sp.add_argument("--out", metavar="FILE", type=output_file,
                    help="write to this file instead of stdout")
    sp.add_argument("--scrape-interval", default="15s",
                    help="Prometheus duration between scrapes (default 15s)")
    sp.add_argument("--console", default="127.0.0.1:8601", metavar="HOST:PORT",
                    help="the web console's /metrics (`autocell console --metrics-port`); "
                         "default 127.0.0.1:8601, `none` to leave it out")
    sp.add_argument("--rules", metavar="FILE", action="append",
                    help="alert rules file to load (`autocell ops prometheus-rules`); "
                         "repeatable")
    sp.set_defaults(func=cmd_ops_prometheus_config)
    from ops.prometheus import cli as prometheus_cli
    prometheus_cli.add_parsers(osub)              # ops prometheus-rules

    sp = sub.add_parser("validate", help="check a cell file; list every error as FILE:LINE",
                        epilog="exit codes: 0 valid; 2 every problem listed as "
                               "FILE:LINE: path: message")
    sp.add_argument("cell", help="cell YAML, or an .fjs/.jsp benchmark instance")
    sp.add_argument("--faults", metavar="FILE", help="also check a fault scenario against the cell")
    sp.set_defaults(func=cmd_validate)
    sp = sub.add_parser("schema", help="print the JSON Schema of cell files")
    sp.add_argument("--out", type=output_file, metavar="FILE",
                    help="write the schema to FILE instead of stdout")
    sp.set_defaults(func=cmd_schema)

    from ops.console.server import add_arguments as console_arguments

    console_arguments(sub)
    from ops import equipment, escalations, explain, gantt, maintenance, replay
    escalations.add_parsers(sub)
    replay.add_parsers(sub)
    explain.add_parsers(sub)
    equipment.add_parsers(sub)
    gantt.add_parsers(sub)
    maintenance.add_parsers(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except ConfigurationError as exc:
        print(f"autocell: error: {safe_lines(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        from ops.supervisor import EXIT_TERMINATED, Terminated
        if isinstance(exc, Terminated):        # SIGTERM to `up` before its stop began
            print("autocell: terminated", file=sys.stderr)
            return EXIT_TERMINATED
        print("autocell: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`autocell explain … | head`): what it read was all it
        # wanted; stop quietly, as a Unix tool does, and keep Python's exit-time flush of
        # stdout from raising again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:     # last: the clauses above come first
        from ops.config import ConfigError   # a cell file read deep inside a command: the
        if not isinstance(exc, ConfigError):  # log's cell in `replay`, a sweep's cells …
            raise
        print(f"autocell: error: {safe_lines(str(exc))}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
