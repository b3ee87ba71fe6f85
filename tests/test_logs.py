"""Structured logs: one JSON object a line, ids on top, levels, and never a secret."""

from __future__ import annotations

import base64
import io
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from agents.protocol.actions import Send
from agents.protocol.messages import Rejection
from ops.bench.healing import loopback_cell
from ops.logs import REDACTED, EventLog, safe, setup_logging
from security.errors import ConfigurationError
from security.keystore import load_private_key

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "cell_configs" / "demo_cell.yaml"


@pytest.fixture
def captured() -> io.StringIO:
    stream = io.StringIO()
    setup_logging("debug", process="test", stream=stream)
    yield stream
    logging.getLogger("autocell").handlers.clear()


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_one_json_object_a_line_with_ids_on_top(captured: io.StringIO) -> None:
    log = logging.getLogger("autocell.host")
    log.warning("rejected message", extra={"ctx": {"agent": "mill1", "conv": "c-1",
                                                   "order": "o-001", "task": "o-001/0",
                                                   "reason": "bad_signature"}})
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        log.exception("agent failed on input", extra={"ctx": {"agent": "o-002"}})
    first, second = lines(captured)
    assert first["level"] == "warning" and first["logger"] == "autocell.host"
    assert first["process"] == "test" and first["msg"] == "rejected message"
    assert (first["agent"], first["conv"], first["order"], first["task"]) == (
        "mill1", "c-1", "o-001", "o-001/0")
    assert first["ctx"] == {"reason": "bad_signature"}
    assert second["level"] == "error" and "ValueError: boom" in second["exc"]
    assert len(captured.getvalue().splitlines()) == 2     # the traceback stays inside the line


def test_secrets_are_redacted_and_bytes_never_printed(captured: io.StringIO) -> None:
    key = bytes(range(32))
    logging.getLogger("autocell.console").info("login", extra={"ctx": {
        "user": "ana", "password": "hunter2", "session_cookie": "c0ffee-cookie",
        "private_key": key, "seed": "s33d", "api_token": "t0k-9f3a",
        "nested": {"signing_key": "k3y", "frame": key}, "reason": "ok"}})
    text = captured.getvalue()
    for secret in ("hunter2", "c0ffee-cookie", "s33d", "t0k-9f3a", "k3y", key.hex(),
                   base64.b64encode(key).decode(), repr(key)):
        assert secret not in text, secret
    (line,) = lines(captured)
    assert line["ctx"]["password"] == REDACTED and line["ctx"]["nested"]["frame"] == "<32 bytes>"
    assert line["ctx"]["user"] == "ana" and line["ctx"]["reason"] == "ok"
    assert safe({"task": "t", "monkey": 1}) == {"task": "t", "monkey": 1}   # no false alarms


def test_event_log_levels_and_sends_at_debug(captured: io.StringIO) -> None:
    ev = EventLog()
    ev.on_record({"t": 1.0, "ev": "fault", "machine": "mill1", "reason": "breakdown"})
    ev.on_record({"t": 2.0, "ev": "order_completed", "order": "o-001", "tardiness_s": 0.0})
    ev.on_record({"t": 3.0, "ev": "awarded", "agent": "mill1", "task": "o-001/0"})
    ev.on_actions("o-001", [Send("mill1", Rejection("o-001/0"), "o-001/0#1")])
    fault, done, awarded, send = lines(captured)
    assert (fault["level"], fault["msg"], fault["agent"]) == ("warning", "fault", "mill1")
    assert (done["level"], done["order"]) == ("info", "o-001")
    assert awarded["level"] == "debug"
    assert (send["msg"], send["agent"], send["conv"], send["task"]) == (
        "send", "o-001", "o-001/0#1", "o-001/0")
    logging.getLogger("autocell").setLevel(logging.INFO)
    ev.on_actions("o-001", [Send("mill1", Rejection("o-001/0"), "c")])
    ev.on_record({"t": 3.0, "ev": "awarded", "agent": "mill1", "task": "o-001/0"})
    assert len(lines(captured)) == 4


def test_bad_log_level_is_a_usage_error() -> None:
    with pytest.raises(ConfigurationError, match="debug, info, warning or error"):
        setup_logging("chatty")
    from ops.cli import build_parser

    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["host", "c.yaml", "--name", "h", "--log-level", "chatty"])
    assert exc.value.code == 2


@pytest.mark.slow
def test_a_cell_at_debug_logs_json_lines_and_no_secret(tmp_path: Path) -> None:
    cell = loopback_cell(DEMO, tmp_path, 4)
    state = tmp_path / "state"
    res = subprocess.run(
        [sys.executable, "-m", "ops.cli", "up", str(cell), "--speed", "50", "--state-dir",
         str(state), "--timeout", "120", "--quiet", "--log-level", "debug"],
        capture_output=True, text=True, timeout=180, cwd=ROOT, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    logs = {p.stem: p.read_bytes() for p in state.glob("*.log")}
    assert set(logs) == {"sim", "orders", "machines", "logistics", "console"}
    parsed = []
    for name, data in logs.items():
        for raw in data.decode().splitlines():
            line = json.loads(raw)      # every line is one JSON object
            assert line["process"] == name and line["level"] in ("debug", "info", "warning",
                                                                 "error")
            parsed.append(line)
    assert any(p.get("conv") and p.get("task") and p.get("agent") for p in parsed)
    assert any(p.get("order") and p["msg"] == "order_completed" for p in parsed)
    everything = b"".join(logs.values()) + res.stdout.encode() + res.stderr.encode()
    keys = sorted((state / "keys").rglob("*.key"))
    assert len(keys) > 10
    for path in keys:
        seed = load_private_key(path).seed
        pem_body = b"".join(path.read_bytes().splitlines()[1:-1])
        for form in (seed, seed.hex().encode(), base64.b64encode(seed), pem_body,
                     repr(seed).encode()):
            assert form not in everything, (path.name, form[:8])
