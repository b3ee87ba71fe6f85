"""`autocell console`: bad input exits 2 with one line; --demo serves a real HTTP port."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import httpx
import pytest

from ops.cli import main
from ops.console.users import UserStore

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("argv,message", [
    (["console"], "give a CELL file or --demo"),
    (["console", "x.yaml", "--demo"], "give a CELL file or --demo"),
    (["console", "--demo", "--port", "70000"], "--port 70000: not a TCP port"),
    (["console", "--demo", "--idle-timeout", "0"], "--idle-timeout must be positive"),
    (["console", "--demo", "--tls-cert", "c.pem"], "--tls-cert and --tls-key go together"),
    (["console", "nowhere.yaml"], "nowhere.yaml: no such file"),
])
def test_bad_console_input_exits_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_console_on_a_cell_without_the_escalation_store_exits_2(capsys, tmp_path, monkeypatch):
    # the CLI's parser and the cell loader import these; only the console's binding of the
    # store is under test here (in a random order they may not have been imported yet)
    import agents.escalation.console  # noqa: F401
    import ops.escalations  # noqa: F401
    monkeypatch.setitem(sys.modules, "agents.escalation.store", None)   # a build without it
    assert main(["console", str(ROOT / "cell_configs" / "demo_cell.yaml"),
                 "--users", str(tmp_path / "u.db")]) == 2
    assert "no escalation store (agents.escalation); try the console with --demo" in \
        capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_console_demo_serves_pages_and_logs_no_secrets(tmp_path):
    users = tmp_path / "u.db"
    UserStore(users).add("ann", "supervisor", "ann-password")
    port, metrics_port = _free_port(), _free_port()
    exe = Path(sys.executable).with_name("autocell")
    proc = subprocess.Popen([str(exe), "console", "--demo", "--port", str(port),
                             "--metrics-port", str(metrics_port),
                             "--users", str(users)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                page = urllib.request.urlopen(f"{base}/login", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None and time.monotonic() < deadline, "console did not start"
                time.sleep(0.2)
        page.close()
        with httpx.Client(base_url=base, follow_redirects=False, timeout=10) as client:
            token = re.search(r'name="csrf" value="([^"]+)"',
                              client.get("/login").text).group(1)
            for password, status in (("wrong-password", 401), ("ann-password", 303)):
                r = client.post("/login", data={"username": "ann", "password": password,
                                                "csrf": token, "next": "/"})
                assert r.status_code == status
            assert r.headers["location"] == "/"
            cookie = client.cookies.get("autocell_session")
            assert client.get("/").status_code == 200
        # the console's metrics: open escalations by priority and state, lint-clean
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                      timeout=5).read()
        series = re.findall(rb'^autocell_escalations_open\{priority="(\d)",state="(\w+)"\} '
                            rb'([0-9.]+)$', text, flags=re.MULTILINE)
        assert series and sum(float(v) for _, _, v in series) >= 1, text[:2000]
        promtool = shutil.which("promtool")
        assert promtool, "promtool is missing: .ci/run installs Debian's prometheus"
        lint = subprocess.run([promtool, "check", "metrics"], input=text,
                              capture_output=True, check=False)
        assert lint.returncode == 0, lint.stdout + lint.stderr
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert f"autocell console for demo on http://127.0.0.1:{port}/" in out
    assert "login failed: user=ann" in out and "login: user=ann role=supervisor" in out
    for secret in ("ann-password", "wrong-password", token, cookie, cookie.split(".")[0]):
        assert secret not in out
    assert "Traceback" not in out
