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

**Who acts is authenticated** (issue 18): ``ack``, ``shelve`` and ``decide`` are
taken by a console user of the users database (``--users FILE``, else
``$AUTOCELL_USERS_DB``, else ``.autocell/users.db``, the one ``autocell
console`` uses) with the role supervisor or admin, proven in one of two ways:

* the password, read from the first line of standard input
  (``--password-stdin``) or asked for on the terminal;
* the operating-system account running the command, when an admin has mapped
  it to that console user (``autocell users map-os OSNAME USER``); ``--user``
  may then be left out.

Anything else is refused before the store is changed: exit 2, a message
saying how to authenticate, and the attempt kept in the store's ``refused``
table (wall time, the name claimed, what was tried, why) and counted.  The
audit log names verified users only.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agents.escalation.lifecycle import EscalationError, Record
from agents.escalation.store import EscalationStore, open_readonly, verify_file
from ops.console.users import DEFAULT_USERS, USERS_ENV, User, UserStore, role_allows, users_path
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


class Refused(ConfigurationError):
    """The person acting could not be authenticated as a supervisor (exit 2)."""


def authenticate(args: argparse.Namespace, *, os_account: Callable[[], str] = getpass.getuser,
                 ask: Callable[[str], str] = getpass.getpass) -> str:
    """The verified console user acting, or :class:`Refused` saying why and how to fix it."""
    users = UserStore(users_path(args.users))
    claimed = (args.user or os.environ.get("AUTOCELL_USER", "")).strip()
    if not users.path.is_file():
        raise Refused(f"no users database at {users.path}: actions are taken by console users "
                      "(add one with `autocell users add NAME --role supervisor`, or pass "
                      "--users FILE)")
    me = os_account()
    mapped = None if args.password_stdin else users.for_os(me)
    if mapped is not None and claimed in ("", mapped.name):
        user: User | None = mapped
    elif args.password_stdin or (claimed and sys.stdin.isatty()):
        if not claimed:
            raise Refused("--password-stdin: whose password? pass --user NAME")
        password = (sys.stdin.readline().rstrip("\r\n") if args.password_stdin
                    else ask(f"password for {claimed}: "))
        user = users.verify(claimed, password)
        if user is None:
            raise Refused(f"wrong user name or password for {claimed!r} (users {users.path})")
    elif mapped is not None:
        raise Refused(f"--user {claimed}: OS account {me!r} is mapped to {mapped.name!r}, "
                      f"not to {claimed!r}; give {claimed!r}'s password (--password-stdin)")
    else:
        who = f"--user {claimed}: " if claimed else ""
        raise Refused(f"{who}not authenticated: give the password (--password-stdin, or run "
                      f"on a terminal to be asked), or have an admin map OS account {me!r} "
                      f"to a console user (`autocell users map-os {me} NAME`)")
    assert user is not None
    if not role_allows(user.role, "supervisor"):
        raise Refused(f"{user.name!r} is a {user.role}: acknowledging, shelving and deciding "
                      "need a supervisor or admin")
    return user.name


def _row(r: Record) -> str:
    return (f"{r.id:<24} P{r.priority} {r.state:<18} {r.cause:<20} "
            f"{r.order or r.resource:<10} {r.consequence}")


def cell_clock(store: EscalationStore) -> Callable[[float], str]:
    """How this command prints a cell time: the wall-clock date and time it maps to by the
    running cell's last heartbeat, with the cell seconds, as the console's pages show it
    (issue 18: a supervisor reads times of day, not cell seconds); only the cell seconds
    when no cell ever reported in (an unpaced virtual-time run writes no heartbeat)."""
    beat = store.liveness()
    if "cell_at" not in beat or "wall_at" not in beat:
        return lambda t: f"{t:.3f} s cell time"
    speed = beat.get("speed") or 1.0

    def at(t: float) -> str:
        wall = beat["wall_at"] + (t - beat["cell_at"]) / speed
        return (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(wall))
                + f" ({t:.3f} s cell time)")
    return at


def _when(entry: Any) -> str:
    """An audit entry's time: wall clock when recorded, with the cell seconds."""
    wall = entry.details.get("wall_at") if isinstance(entry.details, dict) else None
    cell = f"{entry.at:.3f} s cell time"
    if isinstance(wall, (int, float)):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(wall)) + f" ({cell})"
    return cell


def _show(r: Record, audit: list[Any], at: Callable[[float], str]) -> str:
    lines = [(f"escalation {r.id}  (priority {r.priority}, was {r.initial_priority}; "
             f"{r.state})"),
             f"  cause        {r.cause}",
             f"  consequence  {r.consequence}",
             (f"  order        {r.order or '-'}    resource {r.resource or '-'}    "
             f"raised by {r.raised_by} at {at(r.raised_at)}"),
             (f"  deadlines    acknowledge by {at(r.response_deadline_at)}, "
             f"decide by {at(r.final_deadline_at)} (then: {r.safe_default})"),
             "  options"]
    for o in r.options:
        mark = " (safe default)" if o.id == r.safe_default else ""
        lines.append(f"    {o.id:<20} {o.label}{mark}: {o.effect}")
    if r.context:
        lines.append("  context      " + json.dumps(r.context, sort_keys=True))
    if r.state == "shelved":
        lines.append(f"  shelved until {at(r.shelved_until_at)}: {r.shelve_reason}")
    acks = [a for a in audit if a.action == "acknowledge"]
    for a in acks:   # from the audit log: a decision without an acknowledgement is just that
        lines.append(f"  acknowledged by {a.actor} at {_when(a)}")
    if not acks and r.decision and r.outcome == "decision":
        lines.append("  not acknowledged before the decision")
    if not r.open:
        lines.append(f"  resolved at {at(r.resolved_at)}: {r.outcome}"
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
        audit = [a for a in store.audit() if a.escalation == r.id]
        print(json.dumps(r.to_json(), indent=2) if args.json
              else _show(r, audit, cell_clock(store)))
        return 0
    try:
        user = authenticate(args)
    except Refused as exc:
        claimed = (args.user or os.environ.get("AUTOCELL_USER", "") or
                   f"(os:{getpass.getuser()})")
        n = store.refuse(claimed, what, args.id, str(exc), time.time())
        print(f"autocell: error: refused: {exc} (refused attempts on this store: {n})",
              file=sys.stderr)
        return EXIT_USAGE
    wall = time.time()
    if (what == "shelve" and 0 < args.duration_s <= store.refresh().max_shelve_s
            and not _shelve_confirmed(args, store.get(args.id), store.cell_now(),
                                      cell_clock(store))):
        return EXIT_USAGE
    if what == "ack":
        r = store.acknowledge(args.id, user, wall_at=wall)
    elif what == "shelve":
        r = store.shelve(args.id, user, args.reason or "", args.duration_s, wall_at=wall)
    else:
        r = store.decide(args.id, user, args.option, args.reason or "", wall_at=wall)
    print(f"{r.id}: {r.state}" + (f" ({r.decision} by {r.decided_by})" if r.decision else ""))
    return 0


def _shelve_confirmed(args: argparse.Namespace, rec: Record, now: float,
                      at: Callable[[float], str]) -> bool:
    """Shelving past the safe-default deadline: the safe default applies while shelved.
    Say so and ask (a terminal), or want ``--yes``."""
    if args.yes or not rec.final_deadline_at or now + args.duration_s < rec.final_deadline_at:
        return True
    warning = (f"the safe default {rec.safe_default!r} of {rec.id} applies at "
               f"{at(rec.final_deadline_at)}, while it would still be shelved "
               f"(until {at(now + args.duration_s)})")
    if sys.stdin.isatty():
        return input(f"warning: {warning}. Shelve anyway? [y/N] ").strip().lower() in ("y",
                                                                                        "yes")
    print(f"autocell: error: {warning}; pass --yes to shelve anyway", file=sys.stderr)
    return False


def cmd_audit_verify(args: argparse.Namespace) -> int:
    given = getattr(args, "file", None)
    if given:
        from agents.runtime.recorder import header_problem
        from ops.replay import verify_decision_log

        path = _regular_file(given)
        certs = _certs_dir(getattr(args, "certs", None))
        if _is_decision_log(path):      # a flight recorder's log (docs/flight-recorder.md)
            if header_problem(path) is not None:    # no header, no key to tie: entry 0 is bad
                return verify_decision_log(path, args.json)
            return verify_decision_log(path, args.json, certs, getattr(args, "key", None))
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


def _regular_file(given: str) -> Path:
    """``audit verify FILE``'s file, checked before it is opened: a named pipe would block
    the open, and a missing file or a directory is neither a log nor a store."""
    from ops.paths import input_kind

    path = Path(given)
    kind = input_kind(path)
    if kind == "missing":
        raise ConfigurationError(f"{given}: no such file")
    if kind == "dir":
        raise ConfigurationError(_directory_hint(path))
    return path


def _directory_hint(path: Path) -> str:
    """A directory given for a file: name what in it can be verified (an ``up`` state
    directory holds the escalation store and the processes' decision logs)."""
    logs = sorted(p.name for p in path.glob("decisions-*.jsonl"))
    found = ([DB_NAME] if (path / DB_NAME).is_file() else []) + logs[:3]
    more = ", …" if len(logs) > 3 else ""
    inside = f" (it holds {', '.join(found)}{more})" if found else ""
    return (f"{path}: is a directory{inside}; give one file in it: a decision log or the "
            "escalation store")


def _certs_dir(certs: str | None) -> str | None:
    """``--certs DIR`` must be a keys directory that exists (else every log would seem to
    lack its host's certificate)."""
    if certs is not None and not Path(certs).is_dir():
        what = "not a directory" if Path(certs).exists() else "no such directory"
        raise ConfigurationError(f"--certs {certs}: {what} (give the keys directory of the "
                                 "cell, e.g. STATE_DIR/keys)")
    return certs


def _is_decision_log(path: Path) -> bool:
    """True for a decision log, even one whose header is damaged or gone; False for an
    escalation store, known by SQLite's magic bytes alone (a damaged log must not be taken
    for a damaged store).  Anything else is refused, in one line."""
    from agents.runtime.recorder import SQLITE_MAGIC, looks_like_decision_log

    try:
        if looks_like_decision_log(path):
            return True
        with path.open("rb") as f:
            magic = f.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot be read ({exc.strerror})") from None
    if magic != SQLITE_MAGIC:
        raise ConfigurationError(_unrelated(path))
    return False


def _unrelated(path: Path) -> str:
    """The one-line refusal of a file that is neither a decision log nor a store."""
    if path.stat().st_size == 0:
        return f"{path}: the file is empty (neither a decision log nor an escalation store)"
    return (f"{path}: neither a decision log (no header or entries of one) nor an escalation "
            "store (no SQLite header); if it was one, its start is damaged: restore it from "
            "a backup")


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
        sp.add_argument("--user", help="the console user acting (default $AUTOCELL_USER, else "
                                       "the console user this OS account is mapped to)")
        sp.add_argument("--password-stdin", action="store_true",
                        help="read --user's password from the first line of standard input "
                             "(else asked on a terminal, or the OS account's mapping)")
        sp.add_argument("--users", metavar="FILE", help="console users database (default "
                        f"${USERS_ENV}, else {DEFAULT_USERS})")
        if name == "shelve":
            sp.add_argument("--reason", help="why (required)")
            sp.add_argument("--for", dest="duration_s", type=float, required=True,
                            metavar="S", help="seconds, at most the policy's max_shelve_s")
            sp.add_argument("--yes", action="store_true",
                            help="shelve even past the safe-default deadline (else asked on "
                                 "a terminal, refused otherwise)")
        if name == "decide":
            sp.add_argument("--option", required=True, help="an option id from `show`")
            sp.add_argument("--reason", help="why, for the audit log")
    esc.set_defaults(func=cmd_escalations)

    audit = sub.add_parser("audit", help="verify the escalation audit log or a decision "
                                         "log (hash chain, seals, signatures)")
    asub = audit.add_subparsers(dest="what", required=True, metavar="ACTION")
    sp = common(asub.add_parser("verify", help="check the hash chain: exit 0 intact, 1 naming "
                                               "the first bad entry",
                                epilog="exit codes: 0 intact; 1 an entry edited, removed or "
                                       "reordered, a bad seal or signature, or a log cut "
                                       "short (the first bad entry named); 2 not a store or "
                                       "a log, or bad input"))
    sp.add_argument("file", nargs="?", help="an escalation store or a decision log")
    sp.add_argument("--certs", metavar="DIR", help="a decision log: check that its seals "
                    "are by the host-NAME certificate's key of this keys directory, and every "
                    "input's sender signature against the cell's certificates")
    sp.add_argument("--key", metavar="HEX|FILE", help="a decision log: check that its seals "
                    "are by this public key (the recording host's; 64 hex digits or a PEM "
                    "file); without --key or --certs the header's own key is trusted")
    sp.set_defaults(func=cmd_audit_verify)
