"""``autocell console`` and ``autocell users``: argument handling around the app.

``autocell console --demo`` serves an in-memory backend seeded with a few
realistic cases (its timers run: shelved cases come back, deadlines apply the
safe default).  ``autocell console CELL`` binds the escalation store of a
cell (``agents.escalation.store``) when this build has one.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from ops.console.backend import EscalationBackend, demo_backend
from ops.console.users import ROLES, UserError, UserStore
from security.errors import ConfigurationError

__all__ = ["DEFAULT_USERS", "add_arguments", "cmd_console", "cmd_users_add", "cmd_users_list",
           "cmd_users_remove"]

DEFAULT_USERS = ".autocell/users.db"


def _users(args: argparse.Namespace) -> UserStore:
    return UserStore(Path(args.users))


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        line = sys.stdin.readline()
        if not line:
            raise UserError("--password-stdin: no password on standard input")
        return line.rstrip("\r\n")
    if not sys.stdin.isatty():
        raise UserError("no terminal to ask for a password: use --password-stdin")
    first = getpass.getpass(f"password for {args.name}: ")
    if getpass.getpass("again: ") != first:
        raise UserError("the two passwords differ")
    return first


def cmd_users_add(args: argparse.Namespace) -> int:
    store = _users(args)
    if args.role not in ROLES:
        raise UserError(f"unknown role {args.role!r}; valid roles: {', '.join(ROLES)}")
    if store.get(args.name) is not None:
        raise UserError(f"user {args.name!r} already exists in {store.path}")
    user = store.add(args.name, args.role, _read_password(args))
    print(f"added {user.role} {user.name!r} to {store.path} (mode 0600)")
    return 0


def cmd_users_list(args: argparse.Namespace) -> int:
    users = _users(args).list()
    if args.json:
        print(json.dumps([{"name": u.name, "role": u.role, "created_at": u.created_at}
                          for u in users]))
        return 0
    print(f"{args.users}: {len(users)} user(s)")
    for u in users:
        print(f"  {u.name:<24} {u.role:<10} since "
              f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(u.created_at))}")
    return 0


def cmd_users_remove(args: argparse.Namespace) -> int:
    _users(args).remove(args.name)
    print(f"removed {args.name!r} from {args.users}")
    return 0


def _real_backend(cell: str, db: str | None) -> tuple[EscalationBackend, str]:
    """The cell's escalation store; a clear error when this build has none."""
    from ops.config import ConfigError, load_cell_or_instance

    if not Path(cell).exists():
        raise ConfigurationError(f"{cell}: no such file")
    try:
        config = load_cell_or_instance(cell)
    except ConfigError as exc:
        raise ConfigurationError(str(exc)) from None
    try:
        import agents.escalation.store  # noqa: F401  (a build may ship without it)
        from ops.console.store_backend import StoreBackend
    except ImportError:
        raise ConfigurationError("this build has no escalation store (agents.escalation); "
                                 "try the console with --demo") from None
    path = Path(db) if db else Path(".autocell") / config.cell / "escalations.db"
    if path.exists() and not path.is_file():
        raise ConfigurationError(f"--db {path}: not a file")
    if path.exists():   # garbage or damaged: exit 2 now, not HTTP 500 on every page later
        from agents.escalation.store import open_readonly

        open_readonly(path).close()
    store: Any = StoreBackend(path)
    return store, config.cell


def cmd_console(args: argparse.Namespace) -> int:
    import uvicorn

    from ops.console.app import ConsoleSettings, create_app

    if args.demo == bool(args.cell):
        raise ConfigurationError("give a CELL file or --demo (not both)")
    if not 0 < args.port < 65536:
        raise ConfigurationError(f"--port {args.port}: not a TCP port")
    for flag in ("idle_timeout", "session_max"):
        if getattr(args, flag) <= 0:
            raise ConfigurationError(f"--{flag.replace('_', '-')} must be positive")
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ConfigurationError("--tls-cert and --tls-key go together")
    users = _users(args)
    if args.demo:
        backend: Any = demo_backend()
        cell, ticker = "demo", backend.tick
    else:
        backend, cell = _real_backend(args.cell, args.db)
        ticker = getattr(backend, "tick", None)
    settings = ConsoleSettings(cell=cell, idle_timeout_s=args.idle_timeout * 60.0,
                               absolute_timeout_s=args.session_max * 3600.0,
                               secure_cookie=bool(args.tls_cert))
    app = create_app(backend, users, settings, ticker=ticker)
    if args.metrics_port is not None:
        serve_escalation_metrics(backend, args.metrics_port)
    if not users.list():
        print(f"no users in {users.path} yet: add one with `autocell users add NAME --role "
              f"supervisor --users {users.path}`", file=sys.stderr)
    scheme = "https" if args.tls_cert else "http"
    print(f"autocell console for {cell} on {scheme}://{args.host}:{args.port}/ "
          f"(users {users.path}); Ctrl-C stops it", file=sys.stderr)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning",
                ssl_certfile=args.tls_cert, ssl_keyfile=args.tls_key,
                timeout_graceful_shutdown=2)
    return 0


def open_escalation_counts(backend: Any) -> dict[tuple[str, str], int]:
    """Escalations not yet resolved, by (priority, state): the console's gauge."""
    counts: dict[tuple[str, str], int] = {}
    for e in backend.list():
        state = str(getattr(e, "state", ""))
        if state != "resolved":
            key = (str(getattr(e, "priority", "")), state)
            counts[key] = counts.get(key, 0) + 1
    return counts


def serve_escalation_metrics(backend: Any, port: int, every_s: float = 2.0) -> Any:
    """``/metrics`` of the console on ``port``: open escalations by priority and state,
    refreshed every ``every_s`` from the store by a daemon thread."""
    import threading
    import time

    from ops.metrics import ProcessMetrics

    metrics = ProcessMetrics(time.time)
    metrics.set_open_escalations(open_escalation_counts(backend))
    server = metrics.serve(port)

    def refresh() -> None:
        while True:
            time.sleep(every_s)
            try:
                metrics.set_open_escalations(open_escalation_counts(backend))
            except Exception:   # a store briefly locked by a writer: try again next time
                logging.getLogger("autocell.console").debug("metrics refresh failed",
                                                             exc_info=True)

    threading.Thread(target=refresh, daemon=True, name="console-metrics").start()
    return server


def add_arguments(sub: Any) -> None:
    """The ``console`` and ``users`` sub-commands (called by :mod:`ops.cli`)."""
    sp = sub.add_parser("console", help="the supervisors' web console for escalations")
    sp.add_argument("cell", nargs="?", help="cell YAML (or use --demo)")
    sp.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sp.add_argument("--port", type=int, default=8600, help="TCP port (default 8600)")
    sp.add_argument("--db", metavar="FILE", help="escalation store (default .autocell/CELL/"
                                                 "escalations.db)")
    sp.add_argument("--users", metavar="FILE", default=DEFAULT_USERS,
                    help=f"users database (default {DEFAULT_USERS})")
    sp.add_argument("--demo", action="store_true",
                    help="serve a few made-up escalations, no cell needed")
    sp.add_argument("--idle-timeout", type=float, default=15.0, metavar="MIN",
                    help="sign out after this many idle minutes (default 15)")
    sp.add_argument("--session-max", type=float, default=8.0, metavar="H",
                    help="sign out this many hours after login at the latest (default 8)")
    sp.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS with this certificate")
    sp.add_argument("--tls-key", metavar="PEM", help="... and this private key")
    sp.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                    help="serve Prometheus /metrics (open escalations by priority and state) "
                         "on 127.0.0.1:PORT")
    sp.set_defaults(func=cmd_console)

    users = sub.add_parser("users", help="console users: add, list, remove")
    usub = users.add_subparsers(dest="users_command", required=True, metavar="ACTION")

    def with_file(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--users", metavar="FILE", default=DEFAULT_USERS,
                       help=f"users database (default {DEFAULT_USERS})")
        return p

    p = with_file(usub.add_parser("add", help="add a user (asks for the password)"))
    p.add_argument("name")
    p.add_argument("--role", required=True, help=f"one of: {', '.join(ROLES)}")
    p.add_argument("--password-stdin", action="store_true",
                   help="read the password from the first line of standard input")
    p.set_defaults(func=cmd_users_add)
    p = with_file(usub.add_parser("list", help="list users and roles"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_users_list)
    p = with_file(usub.add_parser("remove", help="remove a user"))
    p.add_argument("name")
    p.set_defaults(func=cmd_users_remove)
