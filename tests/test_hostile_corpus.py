"""Issue 20's corpus of hostile and damaged input, one case per input, by defect class.

Every case must get a typed answer — exit 2 with one clear message (exit 1 where
``audit verify`` finds tampering) — never a traceback, never a hang, never an
invalid input accepted, and whatever else the case checks: no directory created,
the file under ``audit verify`` unchanged, control characters escaped.  The cases
are in ``tests/helpers/hostile.py``; run that file to count them in a subprocess
per case against any checkout (the before/after figures of the issue).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers.hostile import CASES, MINIMAL, Case, verdict

from ops.cli import main


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", CASES, ids=[f"{c.cls}-{c.name}" for c in CASES])
def test_hostile_input_gets_a_typed_answer(case: Case, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    argv = case.build(tmp_path)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code if isinstance(exc.code, int) else 2
    captured = capsys.readouterr()
    text = captured.out + captured.err
    problem = case.check(tmp_path, code, text) if case.check is not None else None
    assert verdict(case, tmp_path, code, text) == "ok", (code, problem, text[-1500:])


def test_up_stops_and_says_why_when_a_process_refuses_to_start(tmp_path: Path) -> None:
    """Class 5: a host that exits 2 (its journal damaged, say) would do the same on every
    restart; `up` does not crash-loop it into "restart intensity exceeded" with nothing said,
    but stops at once with the host's own message and exit 2."""
    import subprocess
    import sys

    from ops.config import load_cell
    from ops.supervisor import EXIT_USAGE, Supervisor

    said: list[str] = []
    sup = Supervisor(load_cell(MINIMAL), str(MINIMAL), state_dir=tmp_path, speed=1.0,
                     faults_path=None, faults=None, max_restarts=5, restart_window_s=60.0,
                     until_s=None, timeout_s=None, log=said.append)
    message = (f"{tmp_path}/journal-main.sqlite: the journal cannot be read (file is not a "
               "database); it is damaged or not a journal: move it aside")
    (tmp_path / "main.log").write_text(f'{{"level":"info"}}\nautocell: error: {message}\n')
    child = sup.children["main"]
    child.proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(2)"])
    child.proc.wait()
    sup.children = {"main": child}       # only the refusing host is looked at
    assert sup._check_children() is True
    assert sup.refused == message
    assert child.respawns == 0
    assert any("main cannot start" in line and "journal-main.sqlite" in line for line in said)
    assert EXIT_USAGE == 2


# -- class 10: the console behind a proxy, and HTTP noise -----------------------------------------

def _console_args(*extra: str) -> Any:
    from ops.cli import build_parser

    return build_parser().parse_args(["console", "--demo", "--port", "8600", *extra])


def _client_seen(args: Any, forwarded_for: str) -> Any:
    """The client address the console's app sees for a request from 127.0.0.1 that carries
    ``X-Forwarded-For``, through the uvicorn configuration ``autocell console`` uses."""
    import asyncio

    from ops.console.server import server_config

    seen: list[Any] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope["client"])

    config = server_config(app, args)
    config.load()
    scope = {"type": "http", "client": ("127.0.0.1", 5555), "scheme": "http",
             "headers": [(b"x-forwarded-for", forwarded_for.encode())]}
    asyncio.run(config.loaded_app(scope, None, None))
    return seen[0][0]


def test_forwarded_headers_count_only_from_configured_proxies() -> None:
    """A locked-out client on 127.0.0.1 got a fresh address per request with X-Forwarded-For
    (uvicorn believes it from loopback by default); the console believes it from nobody
    unless --trusted-proxy names the proxy."""
    assert _client_seen(_console_args(), "203.0.113.7") == "127.0.0.1"
    assert _client_seen(_console_args("--trusted-proxy", "10.0.0.1"), "203.0.113.7") \
        == "127.0.0.1"
    assert _client_seen(_console_args("--trusted-proxy", "127.0.0.1"), "203.0.113.7") \
        == "203.0.113.7"


@pytest.mark.timeout(120)
def test_malformed_http_is_one_counted_line_not_a_traceback(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """A broken chunked body, a body shorter than announced, bytes that are not HTTP: 400,
    one line each in the log, no h11 traceback; the server keeps serving."""
    import asyncio
    import logging
    import socket
    import threading

    import uvicorn
    from helpers import waiting

    from ops.console.app import ConsoleSettings, create_app
    from ops.console.backend import demo_backend
    from ops.console.server import ProtocolNoise, server_config
    from ops.console.users import UserStore

    app = create_app(demo_backend(), UserStore(tmp_path / "users.db"), ConsoleSettings())
    args = _console_args("--port", "0")
    server = uvicorn.Server(server_config(app, args))
    noise = ProtocolNoise()
    logging.getLogger("uvicorn.error").addFilter(noise)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    try:
        waiting.wait_until("the console serving", lambda: server.started)
        port = server.servers[0].sockets[0].getsockname()[1]
        bad = [b"POST /login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: "
               b"application/x-www-form-urlencoded\r\n\r\nZZZ\r\nabc\r\n0\r\n\r\n",
               b"POST /login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nabcdefghij\r\n0\r\n\r\n",
               b"\x16\x03\x01not http\r\n\r\n"]
        for raw in bad * 2:
            with socket.create_connection(("127.0.0.1", port),
                                          timeout=waiting.EVENT_BOUND_S) as sock:
                sock.sendall(raw)
                assert sock.recv(64).startswith(b"HTTP/1.1 400")
        with socket.create_connection(("127.0.0.1", port), timeout=waiting.EVENT_BOUND_S) as s:
            s.sendall(b"GET /login HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert s.recv(64).startswith(b"HTTP/1.1 200")
        waiting.wait_until("every bad request counted", lambda: noise.count == len(bad) * 2)
    finally:
        server.should_exit = True
        thread.join(waiting.EVENT_BOUND_S)
        logging.getLogger("uvicorn.error").removeFilter(noise)
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception in ASGI" not in err, err[-2000:]
    assert err.count("malformed HTTP request refused") == len(bad) * 2, err[-2000:]
