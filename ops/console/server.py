"""``autocell console`` and ``autocell users``: argument handling around the app.

``autocell console --demo`` serves an in-memory backend seeded with a few
realistic cases (its timers run: shelved cases come back, deadlines apply the
safe default).  ``autocell console CELL`` binds the escalation store of a
cell (``agents.escalation.store``) when this build has one.

What reaches the server from the network is untrusted (issue 20, class 10):

* ``X-Forwarded-For`` and ``X-Forwarded-Proto`` are believed only from the
  proxies named with ``--trusted-proxy``; none by default.  (uvicorn trusts
  them from 127.0.0.1 unless told otherwise, which let a locked-out client on
  the same machine pick a new address per request and slip past the lockout.)
* A malformed request (a broken chunked body, garbage instead of HTTP) is
  answered 400 by uvicorn and logged as one counted line, not as h11's
  traceback (:class:`ProtocolNoise`).
* ``--tls-cert`` and ``--tls-key`` are read through the one safe reader
  (regular files only, size-capped: a FIFO would hang the TLS setup) and
  loaded once before the server starts, so a bad PEM is exit 2, not a
  traceback from inside uvicorn.
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
from ops.console.users import DEFAULT_USERS, ROLES, USERS_ENV, UserError, UserStore, users_path
from security.errors import ConfigurationError
from security.untrusted import read_regular_file, shown

__all__ = ["DEFAULT_USERS", "ProtocolNoise", "add_arguments", "check_tls", "cmd_console",
           "cmd_users_add", "cmd_users_list", "cmd_users_map_os", "cmd_users_remove",
           "cmd_users_unmap_os", "server_config"]

#: The largest TLS certificate chain or key file read (a chain of a few PEM certificates).
MAX_TLS_FILE_BYTES = 1024 * 1024


class ProtocolNoise(logging.Filter):
    """On uvicorn's error log: a malformed request becomes one counted line.

    h11 refuses the request ("Invalid HTTP request received.", answered 400); if the app had
    already started on it, its own response then fails with ``h11.LocalProtocolError`` and
    uvicorn logs that with a full traceback (or, reading the body, starlette's
    ``ClientDisconnect``).  The first becomes "malformed HTTP request refused (N so far)", the
    second is dropped (the same request, already counted).  Any other error keeps its
    traceback.
    """

    def __init__(self) -> None:
        super().__init__("autocell.console.protocol_noise")
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and _after_a_refused_request(exc):
            return False
        if record.getMessage().startswith("Invalid HTTP request received"):
            self.count += 1
            record.msg, record.args = "malformed HTTP request refused (%d so far)", (self.count,)
            record.exc_info = record.exc_text = None
        return True


def _after_a_refused_request(exc: BaseException) -> bool:
    """What the app meets on a request h11 has refused under it: its response cannot be sent
    (``h11.LocalProtocolError``) or its body ends (starlette's ``ClientDisconnect``)."""
    from starlette.requests import ClientDisconnect

    return isinstance(exc, ClientDisconnect) or type(exc).__module__.split(".")[0] == "h11"


def check_tls(cert: str, key: str) -> None:
    """Read both files through the safe reader and load them: exit 2 if they would not do."""
    import ssl

    read_regular_file(cert, limit=MAX_TLS_FILE_BYTES, what="TLS certificate")
    read_regular_file(key, limit=MAX_TLS_FILE_BYTES, what="TLS private key")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ConfigurationError(f"--tls-cert {shown(cert, 400)} --tls-key {shown(key, 400)}: "
                                 f"not a usable certificate and key ({exc})") from None


def server_config(app: Any, args: argparse.Namespace) -> Any:
    """The uvicorn configuration of ``autocell console``: forwarded headers from the trusted
    proxies only (none unless ``--trusted-proxy``)."""
    import uvicorn

    proxies = list(getattr(args, "trusted_proxy", None) or [])
    return uvicorn.Config(app, host=args.host, port=args.port, log_level="warning",
                          ssl_certfile=args.tls_cert, ssl_keyfile=args.tls_key,
                          timeout_graceful_shutdown=2, proxy_headers=bool(proxies),
                          forwarded_allow_ips=proxies or [])


def _users(args: argparse.Namespace) -> UserStore:
    path = users_path(args.users)
    return UserStore(path, make_parent=str(path) == DEFAULT_USERS)


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
    store.check_place()                       # before the password is asked for
    user = store.add(args.name, args.role, _read_password(args))
    print(f"added {user.role} {user.name!r} to {store.path} (mode 0600)")
    return 0


def cmd_users_list(args: argparse.Namespace) -> int:
    store = _users(args)
    users = store.list()
    if args.json:
        print(json.dumps([{"name": u.name, "role": u.role, "created_at": u.created_at}
                          for u in users]))
        return 0
    print(f"{store.path}: {len(users)} user(s)")
    for u in users:
        print(f"  {u.name:<24} {u.role:<10} since "
              f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(u.created_at))}")
    return 0


def cmd_users_remove(args: argparse.Namespace) -> int:
    store = _users(args)
    store.remove(args.name)
    print(f"removed {args.name!r} from {store.path}")
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


def _stories(args: argparse.Namespace, backend: Any) -> Any:
    """The run's stories for the escalation pages (ops/stories.py): the logs of
    ``--decision-logs``, else those beside the store (an ``up`` state directory), read again
    as they grow."""
    from ops.stories import LiveStories, resolve, state_dir_logs

    given = getattr(args, "decision_logs", None)
    if given:
        paths = resolve(given)            # a wrong path: exit 2 now, not a 404 later
        return LiveStories(lambda: paths)
    where = getattr(backend, "path", None)
    if args.demo or not where:
        return LiveStories(list)
    return LiveStories(lambda: state_dir_logs(Path(str(where)).parent))


def _maintenance(args: argparse.Namespace, backend: Any) -> Any:
    """The maintenance view (ops/console/maintenance.py) of a cell with a ``maintenance:``
    section: the event logs beside the store (an ``up`` state directory), read as they
    grow, with the shelf the cell file starts from; None otherwise."""
    from ops.config import load_cell_or_instance
    from ops.console.maintenance import LiveBoard

    where = getattr(backend, "path", None)
    if args.demo or not where:
        return None
    cfg = load_cell_or_instance(args.cell)       # already checked by _real_backend
    if cfg.maintenance is None:
        return None
    state = Path(str(where)).parent
    return LiveBoard(lambda: state, {p: s.stock for p, s in cfg.maintenance.parts.items()},
                     stores=cfg.maintenance.negotiate)       # a stores agent keeps the books


def cmd_users_map_os(args: argparse.Namespace) -> int:
    store = _users(args)
    store.map_os(args.os_name, args.name)
    print(f"OS account {args.os_name!r} acts as {args.name!r} at `autocell escalations` "
          f"({store.path})")
    return 0


def cmd_users_unmap_os(args: argparse.Namespace) -> int:
    store = _users(args)
    store.unmap_os(args.os_name)
    print(f"OS account {args.os_name!r} no longer mapped ({store.path})")
    return 0


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
    if args.tls_cert:
        check_tls(args.tls_cert, args.tls_key)
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
    app = create_app(backend, users, settings, ticker=ticker,
                     stories=_stories(args, backend), maintenance=_maintenance(args, backend))
    if args.metrics_port is not None:
        serve_escalation_metrics(backend, args.metrics_port, supervisors=lambda: sum(
            1 for u in users.list() if u.role in ("supervisor", "admin")))
    if not users.list():
        print(f"no users in {users.path} yet: add one with `autocell users add NAME --role "
              f"supervisor --users {users.path}`", file=sys.stderr)
    scheme = "https" if args.tls_cert else "http"
    print(f"autocell console for {cell} on {scheme}://{args.host}:{args.port}/ "
          f"(users {users.path}); Ctrl-C stops it", file=sys.stderr)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = server_config(app, args)      # configures uvicorn's loggers: the filter after
    logging.getLogger("uvicorn.error").addFilter(ProtocolNoise())
    uvicorn.Server(config).run()
    return 0


def open_escalation_counts(backend: Any) -> dict[tuple[str, str], int]:
    """Escalations not yet resolved, by (priority, state): the console's gauge.

    Rows are read through :func:`ops.console.views.view`, like the pages read them: the
    store backend returns mappings, which ``getattr`` saw as having no state at all (every
    escalation, resolved or not, counted under ``priority="", state=""``)."""
    from ops.console.views import view

    counts: dict[tuple[str, str], int] = {}
    for e in map(view, backend.list()):
        if e.active:
            key = (str(e.priority), e.state)
            counts[key] = counts.get(key, 0) + 1
    return counts


def alarm_kpi_families(backend: Any, supervisors: Any) -> Any:
    """The alarm-system KPIs (:mod:`ops.console.alarm_kpis`) as gauges, computed at scrape
    time: ``supervisors()`` is how many people can act."""
    from prometheus_client.core import GaugeMetricFamily

    from ops.console.alarm_kpis import GUIDELINE, compute

    now = getattr(backend, "now", None) or getattr(backend, "cell_now", None)
    now_at = float(now()) if callable(now) else time.time()
    k = compute(backend.list(), now_at, int(supervisors()))
    yield GaugeMetricFamily("autocell_alarm_rate_per_10min_per_supervisor",
                            "Escalations raised per 10 minutes per supervisor",
                            value=k.rate_per_10min_per_supervisor)
    yield GaugeMetricFamily("autocell_alarm_flood_ratio",
                            "Share of the observed time in flood (more than 10 in 10 min)",
                            value=k.flood_ratio)
    yield GaugeMetricFamily("autocell_alarm_stale", "Escalations open for more than 24 h",
                            value=len(k.stale))
    yield GaugeMetricFamily("autocell_alarm_chattering_sources",
                            "Sources raised 3 or more times within 1 min",
                            value=len(k.chattering))
    share = GaugeMetricFamily("autocell_alarm_priority_share",
                              "Share of escalations by priority band, and the guideline's",
                              labels=["band", "of"])
    for band, target in GUIDELINE.items():
        share.add_metric([band, "observed"], k.share(band))
        share.add_metric([band, "guideline"], target)
    yield share
    yield oldest_unacknowledged_family(backend.list(), now_at)
    refused = getattr(backend, "refused_count", None)
    if callable(refused):
        from prometheus_client.core import CounterMetricFamily

        yield CounterMetricFamily("autocell_escalation_actions_refused",
                                  "Actions refused because the person was not authenticated",
                                  value=int(refused()))


UNACKNOWLEDGED = ("unacknowledged", "rtn_unacknowledged")


def oldest_unacknowledged_family(items: Any, now: float) -> Any:
    """Per priority, the age (cell seconds) of the oldest escalation nobody has acknowledged:
    what the "open P1 older than its response deadline" alert compares with the deadline
    (ops/prometheus/rules.py). A count of open escalations alone cannot say how long one
    has waited. Priorities with nothing unacknowledged are absent."""
    from prometheus_client.core import GaugeMetricFamily

    from ops.console.views import view

    oldest: dict[str, float] = {}
    for e in map(view, items):
        if e.active and e.state in UNACKNOWLEDGED:
            key = str(e.priority)
            oldest[key] = max(oldest.get(key, 0.0), max(0.0, now - e.created_at))
    fam = GaugeMetricFamily("autocell_escalation_oldest_unacknowledged_seconds",
                            "Age in cell seconds of the oldest unacknowledged escalation",
                            labels=["priority"])
    for prio in sorted(oldest):
        fam.add_metric([prio], oldest[prio])
    return fam


def serve_escalation_metrics(backend: Any, port: int, every_s: float = 2.0,
                             supervisors: Any = lambda: 1) -> Any:
    """``/metrics`` of the console on ``port``: open escalations by priority and state,
    refreshed every ``every_s`` from the store by a daemon thread, and the alarm-system
    KPIs computed at each scrape."""
    import threading
    import time

    from ops.metrics import ProcessMetrics

    metrics = ProcessMetrics(time.time)
    metrics.set_open_escalations(open_escalation_counts(backend))

    class _Kpis:
        def collect(self) -> Any:
            try:
                yield from alarm_kpi_families(backend, supervisors)
            except Exception:   # a store briefly locked or damaged: no KPIs in this scrape
                logging.getLogger("autocell.console").debug("alarm KPIs failed",
                                                             exc_info=True)

    metrics.registry.register(_Kpis())
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
    sp.add_argument("--users", metavar="FILE",
                    help=f"users database (default ${USERS_ENV}, else {DEFAULT_USERS})")
    sp.add_argument("--demo", action="store_true",
                    help="serve a few made-up escalations, no cell needed")
    sp.add_argument("--idle-timeout", type=float, default=15.0, metavar="MIN",
                    help="sign out after this many idle minutes (default 15)")
    sp.add_argument("--session-max", type=float, default=8.0, metavar="H",
                    help="sign out this many hours after login at the latest (default 8)")
    sp.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS with this certificate")
    sp.add_argument("--tls-key", metavar="PEM", help="... and this private key")
    sp.add_argument("--trusted-proxy", action="append", metavar="ADDR",
                    help="believe X-Forwarded-For/-Proto from this reverse proxy (an address "
                         "or network); repeatable; default: from nobody")
    sp.add_argument("--decision-logs", nargs="+", metavar="DIR_OR_FILE",
                    help="decision logs that tell each escalation's story (a directory: the "
                         "logs of an `up` state dir); default: the logs beside the store")
    sp.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                    help="serve Prometheus /metrics (open escalations by priority and state) "
                         "on 127.0.0.1:PORT")
    sp.set_defaults(func=cmd_console)

    users = sub.add_parser("users", help="console users: add, list, remove, map-os, unmap-os")
    usub = users.add_subparsers(dest="users_command", required=True, metavar="ACTION")

    def with_file(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--users", metavar="FILE",
                       help=f"users database (default ${USERS_ENV}, else {DEFAULT_USERS})")
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
    p = with_file(usub.add_parser("map-os", help="let an OS account act as a console user at "
                                                 "`autocell escalations` without a password"))
    p.add_argument("os_name", metavar="OSNAME")
    p.add_argument("name", metavar="USER")
    p.set_defaults(func=cmd_users_map_os)
    p = with_file(usub.add_parser("unmap-os", help="remove an OS account's mapping"))
    p.add_argument("os_name", metavar="OSNAME")
    p.set_defaults(func=cmd_users_unmap_os)
