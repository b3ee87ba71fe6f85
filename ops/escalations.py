"""The CLI twin of the supervisor console, and the audit check.

``autocell escalations list | show ID | ack ID | shelve ID --reason R --for S |
decide ID --option O [--reason R]`` works on the escalation store (SQLite) that
the console agent keeps; a decision taken here is queued in the store's outbox
and sent as a signed ``decision`` by the running console agent (its ``poll``
timer).  ``autocell audit verify`` checks the hash chain of the audit log.

Where the store is: ``--db FILE``; else ``$AUTOCELL_ESCALATIONS_DB``; else the
only ``.autocell/*/escalations.db`` under the current directory (the state
directory ``autocell up`` and ``autocell console`` use).  Bad input — unknown
id, illegal transition, shelving without a reason — is an error and exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from agents.escalation.lifecycle import EscalationError, Record
from agents.escalation.store import EscalationStore, open_readonly, verify_file
from security.errors import ConfigurationError
from security.untrusted import shown

EXIT_USAGE = 2
DB_NAME = "escalations.db"


def default_db(state_dir: Path) -> Path:
    """The store of a cell's state directory (``autocell up --state-dir``)."""
    return state_dir / DB_NAME


def find_db(given: str | None) -> Path:
    if given:
        path = Path(given)
    elif os.environ.get("AUTOCELL_ESCALATIONS_DB"):
        path = Path(os.environ["AUTOCELL_ESCALATIONS_DB"])
    else:
        found = sorted(Path(".autocell").glob(f"*/{DB_NAME}"))
        if len(found) != 1:
            where = ", ".join(map(str, found)) if found else "none under .autocell/"
            raise ConfigurationError(f"which escalation store? found {where}; pass --db FILE")
        path = found[0]
    if not path.is_file():
        raise ConfigurationError(f"{path}: no escalation store there (pass --db FILE; a run "
                                 "writes one with `autocell run CELL --escalations-db FILE`)")
    return path


def _user(args: argparse.Namespace) -> str:
    user = args.user or os.environ.get("AUTOCELL_USER", "")
    if not user.strip():
        raise ConfigurationError("who is acting? pass --user NAME (or set AUTOCELL_USER): "
                                 "every action is recorded with the user's name")
    return user


def _row(r: Record) -> str:
    return (f"{r.id:<24} P{r.priority} {r.state:<18} {r.cause:<20} "
            f"{r.order or r.resource:<10} {r.consequence}")


def _show(r: Record) -> str:
    lines = [(f"escalation {r.id}  (priority {r.priority}, was {r.initial_priority}; "
             f"{r.state})"),
             f"  cause        {r.cause}",
             f"  consequence  {r.consequence}",
             (f"  order        {r.order or '-'}    resource {r.resource or '-'}    "
             f"raised by {r.raised_by} at {r.raised_at:.3f} s"),
             (f"  deadlines    acknowledge by {r.response_deadline_at:.3f} s, "
             f"decide by {r.final_deadline_at:.3f} s (then: {r.safe_default})"),
             "  options"]
    for o in r.options:
        mark = " (safe default)" if o.id == r.safe_default else ""
        lines.append(f"    {o.id:<20} {o.label}{mark}: {o.effect}")
    if r.context:
        lines.append("  context      " + json.dumps(r.context, sort_keys=True))
    if r.state == "shelved":
        lines.append(f"  shelved until {r.shelved_until_at:.3f} s: {r.shelve_reason}")
    if r.acknowledged_by:
        lines.append(f"  acknowledged by {r.acknowledged_by}")
    if not r.open:
        lines.append(f"  resolved at {r.resolved_at:.3f} s: {r.outcome}"
                     + (f", {r.decision} by {r.decided_by}" if r.decision else "")
                     + (f" ({r.decision_reason})" if r.decision_reason else ""))
    return "\n".join(lines)


def cmd_escalations(args: argparse.Namespace) -> int:
    path = find_db(args.db)
    open_readonly(path).close()  # an escalation store, or exit 2 before anything is written
    store = EscalationStore(path)
    try:
        return _run(args, store)
    except EscalationError as exc:
        print(f"autocell: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        store.close()


def _run(args: argparse.Namespace, store: EscalationStore) -> int:
    what = args.what
    if what == "list":
        recs = store.list(open_only=not args.all)
        damaged = list(store.damaged)
        if args.json:
            print(json.dumps({"flood": store.flood(), "groups": store.groups(),
                              "escalations": [r.to_json() for r in recs],
                              "damaged": damaged}, indent=2))
            return 0
        if store.flood():
            print("FLOOD: more escalations than the flood rule allows; related ones are "
                  "grouped")
        for r in recs:
            print(_row(r))
        for escalation_id in damaged:   # the others are listed all the same (issue 20)
            print(f"{shown(escalation_id, 24):<24} DAMAGED: the record does not decode; "
                  f"restore {store.path} from a backup")
        if not recs and not damaged:
            print("no open escalations" if not args.all else "no escalations")
        return 0
    if what == "show":
        r = store.get(args.id)
        print(json.dumps(r.to_json(), indent=2) if args.json else _show(r))
        return 0
    user = _user(args)
    if what == "ack":
        r = store.acknowledge(args.id, user)
    elif what == "shelve":
        r = store.shelve(args.id, user, args.reason or "", args.duration_s)
    else:
        r = store.decide(args.id, user, args.option, args.reason or "")
    print(f"{r.id}: {r.state}" + (f" ({r.decision} by {r.decided_by})" if r.decision else ""))
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    given = getattr(args, "file", None)
    if given:
        from ops.replay import is_decision_log, verify_decision_log
        if is_decision_log(given):      # a flight recorder's log (docs/flight-recorder.md)
            return verify_decision_log(given, args.json)
        args.db = given
    rep = verify_file(find_db(args.db))  # read-only: verifying never writes
    summary: dict[str, Any] = {"ok": rep.ok, "entries": rep.entries, "head": rep.head}
    if not rep.ok:
        summary.update(first_bad_entry=rep.bad_seq, problem=rep.problem)
    if args.json:
        print(json.dumps(summary, indent=2))
    elif rep.ok:
        print(f"audit chain OK: {rep.entries} entries, head {rep.head[:16]}…")
    else:
        at = f" at entry {rep.bad_seq}" if rep.bad_seq is not None else ""
        print(f"audit chain BROKEN{at}: {rep.problem} "
              f"({rep.entries} entries verified before it)")
    return 0 if rep.ok else 1


def add_parsers(sub: Any) -> None:
    """``escalations`` and ``audit`` subcommands (called by :mod:`ops.cli`)."""
    def common(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("--db", metavar="FILE", help="the escalation store (SQLite)")
        sp.add_argument("--json", action="store_true", help="JSON output")
        return sp

    esc = sub.add_parser("escalations", help="the CLI twin of the console: list, show, "
                                             "acknowledge, shelve, decide")
    esub = esc.add_subparsers(dest="what", required=True, metavar="ACTION")
    sp = common(esub.add_parser("list", help="escalations by priority, then state"))
    sp.add_argument("--all", action="store_true", help="resolved ones too")
    sp = common(esub.add_parser("show", help="one escalation: context and options"))
    sp.add_argument("id")
    for name, text in (("ack", "acknowledge"), ("shelve", "shelve for a time, with a reason"),
                       ("decide", "choose an option; the agents act on it")):
        sp = common(esub.add_parser(name, help=text))
        sp.add_argument("id")
        sp.add_argument("--user", help="who acts (default $AUTOCELL_USER)")
        if name == "shelve":
            sp.add_argument("--reason", help="why (required)")
            sp.add_argument("--for", dest="duration_s", type=float, required=True,
                            metavar="S", help="seconds, at most the policy's max_shelve_s")
        if name == "decide":
            sp.add_argument("--option", required=True, help="an option id from `show`")
            sp.add_argument("--reason", help="why, for the audit log")
    esc.set_defaults(func=cmd_escalations)

    audit = sub.add_parser("audit", help="the escalation audit log")
    asub = audit.add_subparsers(dest="what", required=True, metavar="ACTION")
    sp = common(asub.add_parser("verify", help="check the hash chain: exit 0 intact, 1 naming "
                                               "the first bad entry"))
    sp.add_argument("file", nargs="?", help="an escalation store or a decision log")
    sp.set_defaults(func=cmd_audit_verify)
