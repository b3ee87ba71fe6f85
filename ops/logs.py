"""Structured logs: one JSON object per line on stderr, never a secret.

Every process of a cell (``autocell host``, ``autocell sim``, ``autocell up``)
calls :func:`setup_logging` once.  A line carries ``ts`` (Unix seconds),
``level``, ``logger``, ``process``, ``msg`` and, lifted to the top level
when known, the ids ``agent``, ``conv``, ``order`` and ``task``; other
context sits under ``ctx``.  Code logs context the way the bus already
does: ``log.warning("rejected message", extra={"ctx": {...}})``.

:class:`EventLog` is an observer (:mod:`agents.runtime.observe`) that turns
the process's event log into log lines: faults, re-routes, lease expiries
and other trouble at ``warning``, life-cycle events at ``info``, every other
event and every message sent (with its conversation id) at ``debug``.

Secrets: :class:`JsonFormatter` drops the value of every context key that
names a secret (key, seed, password, secret, token, cookie, session,
signature) and never prints bytes, only their length; a test runs a whole
cell at ``debug`` and looks for every private key, seed, password and
cookie it knows in the output.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Mapping, Sequence
from typing import IO, Any

from agents.protocol.actions import Action, Send

IDS = ("agent", "conv", "order", "task")
REDACTED = "[redacted]"
_SECRET_KEY = re.compile(r"(?i)(^|_)(key|keys|seed|password|passwd|secret|token|cookie|session|"
                         r"signature|sig|private)(_|$)")
_STD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "ctx"}

WARNING_EVENTS = frozenset({
    "fault", "lease_expired", "reroute", "non_routine", "no_proposals", "scrap", "agent_crash",
    "stale_epoch", "plant_refused", "plant_refused_task", "command_forbidden", "rejected",
    "wait_for_repair", "wait_for_stale_winner", "handed_back", "late_done"})
INFO_EVENTS = frozenset({
    "host_start", "host_stop", "sim_start", "sim_stop", "agent_restart", "order_released",
    "order_completed", "repaired", "fault_injected", "partition_healed", "clock_skew"})


def safe(value: Any, depth: int = 0) -> Any:
    """A JSON-safe copy with secret-named keys redacted and bytes reduced to their length."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    if isinstance(value, Mapping):
        if depth > 4:
            return "<…>"
        return {str(k): REDACTED if _SECRET_KEY.search(str(k)) else safe(v, depth + 1)
                for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [safe(v, depth + 1) for v in list(value)[:50]]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


class JsonFormatter(logging.Formatter):
    def __init__(self, process: str = "") -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        ctx: dict[str, Any] = dict(getattr(record, "ctx", None) or {})
        # private attributes are other libraries' (Ray's record factory adds
        # ``_ray_timestamp_ns`` once it is imported): not context
        ctx.update({k: v for k, v in vars(record).items()
                    if k not in _STD and not k.startswith("_")})
        ctx = safe(ctx)
        line: dict[str, Any] = {"ts": round(record.created, 6), "level": record.levelname.lower(),
                                "logger": record.name, "process": self.process,
                                "msg": record.getMessage()}
        for k in IDS:
            if k in ctx:
                line[k] = ctx.pop(k)
        if ctx:
            line["ctx"] = ctx
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, separators=(",", ":"), default=str)


def level_of(name: str) -> int:
    level = logging.getLevelName(name.upper())
    if not isinstance(level, int):
        from security.errors import ConfigurationError

        raise ConfigurationError(f"--log-level {name!r}: use debug, info, warning or error")
    return level


def setup_logging(level: str = "info", *, process: str = "",
                  stream: IO[str] | None = None) -> logging.Handler:
    """Route every ``autocell.*`` logger to one JSON-lines handler at ``level``."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter(process))
    root = logging.getLogger("autocell")
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level_of(level))
    root.propagate = False
    return handler


class EventLog:
    """Observer: event-log lines and sent messages as log lines (see the module docstring)."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.log = logger or logging.getLogger("autocell.events")

    def on_actions(self, agent: str, actions: Sequence[Action]) -> None:
        if not self.log.isEnabledFor(logging.DEBUG):
            return
        for act in actions:
            if isinstance(act, Send):
                self.log.debug("send", extra={"ctx": {
                    "agent": agent, "to": act.to, "type": act.body.TYPE, "conv": act.conv,
                    "task": getattr(act.body, "task", None) or None}})

    def on_record(self, line: Mapping[str, Any]) -> None:
        ev = str(line.get("ev", ""))
        level = (logging.WARNING if ev in WARNING_EVENTS else
                 logging.INFO if ev in INFO_EVENTS else logging.DEBUG)
        if self.log.isEnabledFor(level):
            ctx = {k: v for k, v in line.items() if k != "ev"}
            if "agent" not in ctx:
                for k in ("machine", "robot", "winner"):
                    if k in ctx:
                        ctx["agent"] = ctx[k]
                        break
            self.log.log(level, ev, extra={"ctx": ctx})


class Fanout:
    """Several observers behind the drivers' one hook."""

    def __init__(self, *observers: Any) -> None:
        self.observers = [o for o in observers if o is not None]

    def on_actions(self, agent: str, actions: Sequence[Action]) -> None:
        for o in self.observers:
            o.on_actions(agent, actions)

    def on_record(self, line: Mapping[str, Any]) -> None:
        for o in self.observers:
            o.on_record(line)

