"""Decision logs of any format: read, verify, and the host's own log.

agents/runtime/recorder.py holds the recorder and formats ``/1`` and ``/2``
(JSON lines); agents/runtime/segment_log.py builds format ``/3`` (binary
segments, ADR 67) on it.  Everything that reads or checks a log whatever its
format (``explain``, ``replay``, ``audit verify``, the recorded plant) comes
here, where the header picks the format, so neither format module needs the
other's reader and the imports run one way: this module → segment_log →
recorder.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agents.runtime.recorder import (
    DecisionLog,
    LogReport,
    _is_segmented,
    describe_run,
    read_text_lines,
    verify_text_log,
)
from agents.runtime.segment_log import SegmentLog, attach, read_entries, verify_segments
from security.crypto import SigningKey

__all__ = ["console_decision_log", "host_decision_log", "read_lines", "verify_log"]


def read_lines(path: str | Path) -> Iterator[dict[str, Any]]:
    """The log's entries as dicts, whatever its format (no checking: :func:`verify_log`).
    A cut last entry is left out; an ``envelope`` input comes out decoded, as the
    ``message`` input it stands for, so readers see one form."""
    if _is_segmented(path):
        yield from read_entries(path)
    else:
        yield from read_text_lines(path)


def verify_log(path: str | Path, trusted_key: bytes | None = None) -> LogReport:
    """Check a decision log of any format and name the first bad entry (docs/PROTOCOL.md
    §16).  ``trusted_key``: the recording host's public key as known from elsewhere."""
    if _is_segmented(path):
        return verify_segments(path, trusted_key)
    return verify_text_log(path, trusted_key)


def host_decision_log(host: Any, keys: Any) -> DecisionLog:
    """The decision log of a host process (agents/runtime/host.py) in its state directory:
    ``decisions-NAME-BOOT.jsonl``, sealed with the host's key (``host-NAME`` in the keys
    directory ``keys``, when it has one; else a key made for this boot, named in the header),
    stamped with wall-clock time, switched on in its runner and handed its bus's envelopes."""
    from agents.escalation.policy import OFF
    from agents.negotiation.fingerprint import run_fingerprints

    return _process_log(host, keys, host.identity,
                        describe_run(host.cfg, host.seed, driver="host",
                                     escalation=host.escalation is not OFF,
                                     models=host.models, host=host.name, boot=host.boot,
                                     agents=sorted(host.runner.agents),
                                     clock=_clock_of(host),
                                     strategy_code=run_fingerprints(host.cfg)))


def console_decision_log(service: Any, keys: Any, cfg: Any) -> DecisionLog:
    """The decision log of the console-agent process (agents/runtime/console_service.py),
    as a host's: ``decisions-console-BOOT.jsonl``, sealed with the ``console`` key (the one
    that signs its decisions).  ``cfg``: the cell as the hosts run it (paced to the run's
    speed), so the header is theirs and ``explain`` merges the logs.  ``replay --check``
    does not re-run the console agent (its state is the escalation store); the log
    verifies and explains like any other."""
    from agents.escalation.console import CONSOLE_ID

    return _process_log(service, keys, CONSOLE_ID,
                        describe_run(cfg, cfg.sim.seed, driver="host",
                                     escalation=True, host=service.name, boot=service.boot,
                                     agents=sorted(service.runner.agents),
                                     clock=_clock_of(service)))


def _clock_of(proc: Any) -> dict[str, float]:
    """The run's cell clock, which every process of one ``up`` run shares (its start and
    speed): what tells the logs of one run from another's of the same cell and seed, so
    that ``explain`` merges only one run's (ADR 104)."""
    return {"start_at": float(proc.clock.start_at), "speed": float(proc.clock.speed)}


def _process_log(proc: Any, keys: Any, identity: str, run: dict[str, Any]) -> DecisionLog:
    """Open ``decisions-NAME-BOOT.jsonl`` for a process with ``state_dir``, ``name``,
    ``boot``, ``runner``, ``bus`` and ``clock`` (its cell clock, whose wall time stamps the
    entries), sealed with ``identity``'s key from ``keys``."""
    from security.errors import ConfigurationError

    try:
        key: SigningKey = keys.identity(identity)[0]
    except (ConfigurationError, OSError, ValueError):
        key = SigningKey.generate()
    path = Path(proc.state_dir) / f"decisions-{proc.name}-{proc.boot}.jsonl"
    log = SegmentLog(path.open("wb"), key, host=proc.name, run=run, wall_clock=proc.clock.wall)
    proc.runner.recorder = log
    attach(proc.bus, log)      # inputs as the signed bytes they came in; sealed when idle
    return log
