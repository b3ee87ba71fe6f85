"""VDA 5050 peers not written here: a private Mosquitto and vda-5050-lib's virtual vehicles.

Tests of the ``vda5050`` backend run against Debian's Mosquitto and the npm
package vda-5050-lib (tests/vda5050/vehicles.mjs; the contract is
tests/vda5050/CONTRACT.md), both installed by ``tests/setup.sh``.  This module
starts and stops them as child processes:

* :class:`Broker` — one Mosquitto per test on a free loopback port, from a
  generated config: a plain listener with ``allow_anonymous false`` and a
  password file made by ``mosquitto_passwd``, and optionally a TLS listener
  whose CA and server certificate are generated here with ``cryptography``.
  It restarts on the same ports (a "broker restart mid-run" test), with no
  persistence, so a restart loses every retained message as a real broker
  without a persistence store does.
* :class:`Vehicles` — one ``node vehicles.mjs`` process running one or more
  vehicles; ``kill()`` is ``kill -9`` (the broker then publishes each
  vehicle's last will), ``stop()`` a clean SIGTERM (each says OFFLINE).

Readiness is an event, never a sleep: the broker is ready when an MQTT
CONNECT with the test credentials gets a CONNACK that accepts it; the
vehicles are ready when their ready file names the new process's pid.  The
bounds in :mod:`helpers.waiting` are only hang guards.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from helpers.waiting import PROCESS_BOUND_S, NotYet, wait_until

ROOT = Path(__file__).resolve().parents[2]
VEHICLES_DIR = ROOT / "tests" / "vda5050"
VEHICLES = VEHICLES_DIR / "vehicles.mjs"
#: The official VDA 5050 2.0.0 schemas, as the backend ships them.
SCHEMAS = ROOT / "sim_bridge" / "vda5050" / "schemas"

#: The user and password every test broker accepts (and the vehicles use by default).
USERNAME = "autocell"
PASSWORD = "vda5050-test-password"


def mosquitto_binary() -> str | None:
    """Debian installs the broker in /usr/sbin, which a non-root PATH may lack."""
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    return found


def missing_peers() -> list[str]:
    """What of the peers is not installed (empty when the tests can run)."""
    missing = []
    if mosquitto_binary() is None or shutil.which("mosquitto_passwd") is None:
        missing.append("mosquitto")
    if shutil.which("node") is None:
        missing.append("node")
    if not (VEHICLES_DIR / "node_modules" / "vda-5050-lib").is_dir():
        missing.append("tests/vda5050/node_modules")
    return missing


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _utf8(s: str) -> bytes:
    raw = s.encode()
    return len(raw).to_bytes(2, "big") + raw


def mqtt_connack(port: int, *, username: str | None, password: str | None,
                 tls: ssl.SSLContext | None = None, host: str = "127.0.0.1") -> int:
    """One MQTT 3.1.1 CONNECT; the CONNACK return code (0 accepted, 5 not authorised).

    A dozen bytes by hand rather than a client library, so that a readiness
    probe needs no event loop and no thread.  Raises OSError when nothing
    listens yet.
    """
    flags = 0x02 | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    body = _utf8("MQTT") + bytes([4, flags]) + (10).to_bytes(2, "big") + _utf8("")
    body += (_utf8(username) if username is not None else b"") + \
        (_utf8(password) if password is not None else b"")
    assert len(body) < 128
    with socket.create_connection((host, port), timeout=5) as raw:
        sock = tls.wrap_socket(raw, server_hostname=host) if tls else raw
        sock.sendall(bytes([0x10, len(body)]) + body)
        reply = b""
        while len(reply) < 4:
            chunk = sock.recv(4 - len(reply))
            if not chunk:
                raise ConnectionResetError("the broker closed the connection before CONNACK")
            reply += chunk
        sock.sendall(b"\xe0\x00")   # DISCONNECT
        if reply[0] != 0x20:
            raise ConnectionError(f"not a CONNACK: {reply!r}")
        return reply[3]


class BrokerPki:
    """A throwaway CA and a server certificate for 127.0.0.1/localhost, as PEM files."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.ca_file = directory / "ca.pem"
        self.cert_file = directory / "server.pem"
        self.key_file = directory / "server.key"
        now = datetime.datetime.now(datetime.timezone.utc)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "autocell test broker CA")])
        ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
              .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(hours=1))
              .not_valid_after(now + datetime.timedelta(days=2))
              .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
              .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                           False), critical=True)
              .sign(ca_key, hashes.SHA256()))
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
                .issuer_name(ca_name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(hours=1))
                .not_valid_after(now + datetime.timedelta(days=2))
                .add_extension(x509.SubjectAlternativeName([
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
                    critical=False)
                .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                               critical=False)
                .sign(ca_key, hashes.SHA256()))
        self.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        self.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.key_file.write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        self.key_file.chmod(0o600)

    def client_context(self) -> ssl.SSLContext:
        """What a client that trusts only this CA uses."""
        return ssl.create_default_context(cafile=str(self.ca_file))


class Broker:
    """A private Mosquitto on loopback: password file always, TLS listener optionally.

    ``url`` is the plain listener (``mqtt://127.0.0.1:PORT``), ``tls_url`` the
    TLS one (``mqtts://127.0.0.1:PORT``, with :attr:`pki`'s CA).  The ports
    are chosen once, so :meth:`restart` and a restart after :meth:`kill` come
    back where the clients reconnect.
    """

    def __init__(self, workdir: Path, *, tls: bool = False,
                 users: dict[str, str] | None = None) -> None:
        binary = mosquitto_binary()
        if binary is None or shutil.which("mosquitto_passwd") is None:
            raise FileNotFoundError("mosquitto is not installed: run `bash tests/setup.sh`")
        self.binary = binary
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.users = users if users is not None else {USERNAME: PASSWORD}
        self.port = free_port()
        self.pki = BrokerPki(workdir / "pki") if tls else None
        self.tls_port = free_port() if tls else None
        self.log_file = workdir / "mosquitto.log"
        self.config = workdir / "mosquitto.conf"
        self._write_config()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def tls_url(self) -> str:
        if self.tls_port is None:
            raise ValueError("this broker has no TLS listener: Broker(..., tls=True)")
        return f"mqtts://127.0.0.1:{self.tls_port}"

    def _write_config(self) -> None:
        passwd = self.workdir / "passwd"
        passwd.unlink(missing_ok=True)
        for i, (user, password) in enumerate(self.users.items()):
            subprocess.run(["mosquitto_passwd", "-b", *(["-c"] if i == 0 else []), str(passwd),
                            user, password], check=True, capture_output=True)
        passwd.chmod(0o600)
        lines = [
            "# generated by tests/helpers/vda5050_peers.py",
            # As root Mosquitto drops to user "mosquitto", who cannot read a
            # pytest tmp_path; stay the user who owns the files.
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
            "persistence false",
            f"log_dest file {self.log_file}",
            "log_type error", "log_type warning", "log_type notice", "log_type information",
            "connection_messages true",
            "per_listener_settings false",
            "allow_anonymous false",
            f"password_file {passwd}",
            f"listener {self.port} 127.0.0.1",
        ]
        if self.pki is not None:
            lines += [f"listener {self.tls_port} 127.0.0.1",
                      f"cafile {self.pki.ca_file}",
                      f"certfile {self.pki.cert_file}",
                      f"keyfile {self.pki.key_file}",
                      "tls_version tlsv1.2"]
        self.config.write_text("\n".join(lines) + "\n")

    def start(self) -> Broker:
        """Start (or restart) the broker and wait until it accepts the test credentials."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("the broker is already running")
        self.proc = subprocess.Popen([self.binary, "-c", str(self.config)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.starts += 1
        self.wait_ready()
        return self

    def wait_ready(self) -> None:
        user, password = next(iter(self.users.items()))
        proc = self.proc
        assert proc is not None

        def accepts() -> object:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise RuntimeError(f"mosquitto exited with {proc.returncode}: {err}"
                                   f"{self.log()[-2000:]}")
            try:
                code = mqtt_connack(self.port, username=user, password=password)
            except OSError as exc:
                return NotYet(repr(exc))
            if code != 0:
                raise RuntimeError(f"mosquitto refused the test credentials (CONNACK {code})")
            return True

        wait_until(f"mosquitto accepting connections on 127.0.0.1:{self.port}", accepts)

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def stop(self) -> None:
        """A clean shutdown (SIGTERM): clients see their connection closed."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(PROCESS_BOUND_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        """``kill -9``: the broker dies as in a power cut."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> None:
        """Stop and start again on the same ports; retained messages are lost."""
        self.stop()
        self.start()


class Vehicles:
    """One ``node tests/vda5050/vehicles.mjs`` process: one or more virtual vehicles.

    ``extra`` carries any further flags of vehicles.mjs (``--fatal-after-orders
    2``, ``--invalid-state``, ``--start agv1=0,0,0``, ...).  The broker's
    credentials are passed unless ``username`` is None.  Each process keeps
    its vehicles' last reported poses in its own pose file, so a vehicle
    killed and started again comes back where it was, not at ``--start``
    (``keep_pose=False``: always at ``--start``).
    """

    def __init__(self, workdir: Path, broker_url: str, serials: list[str], *,
                 map_id: str = "local", speed: float = 1.0, ca: Path | None = None,
                 username: str | None = USERNAME, password: str | None = PASSWORD,
                 interface_name: str = "uagv", manufacturer: str = "autocell",
                 extra: list[str] | None = None, name: str = "vehicles",
                 keep_pose: bool = True) -> None:
        node = shutil.which("node")
        if node is None or not (VEHICLES_DIR / "node_modules" / "vda-5050-lib").is_dir():
            raise FileNotFoundError("node or tests/vda5050/node_modules is missing: "
                                    "run `bash tests/setup.sh`")
        workdir.mkdir(parents=True, exist_ok=True)
        self.serials = serials
        self.ready_file = workdir / f"{name}.ready.json"
        self.log_file = workdir / f"{name}.log"
        self.pose_file = workdir / f"{name}.poses.json"
        self.argv = [node, str(VEHICLES), "--broker", broker_url, "--serials", ",".join(serials),
                     "--map-id", map_id, "--speed", f"{speed:g}",
                     "--interface-name", interface_name, "--manufacturer", manufacturer,
                     "--ready-file", str(self.ready_file),
                     *(["--pose-file", str(self.pose_file)] if keep_pose else []), *(extra or [])]
        if ca is not None:
            self.argv += ["--ca", str(ca)]
        if username is not None:
            self.argv += ["--username", username]
        if password is not None:
            self.argv += ["--password", password]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, *, wait: bool = True) -> Vehicles:
        """(Re)start the process; with ``wait``, until every vehicle is ready."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("the vehicles process is already running")
        self.ready_file.unlink(missing_ok=True)
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                         cwd=VEHICLES_DIR)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self) -> dict[str, object]:
        proc = self.proc
        assert proc is not None

        def ready() -> object:
            if proc.poll() is not None:
                raise RuntimeError(f"vehicles.mjs exited with {proc.returncode}: "
                                   f"{self.log()[-2000:]}")
            if not self.ready_file.exists():
                return NotYet("no ready file")
            info = json.loads(self.ready_file.read_text())
            return info if info.get("pid") == proc.pid else NotYet(info)

        info: dict[str, object] = wait_until(f"vehicles {self.serials} ready", ready)
        return info

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def exited(self) -> int | None:
        """The exit code once the process has ended, else None."""
        return None if self.proc is None else self.proc.poll()

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        """``kill -9``: no OFFLINE; the broker publishes each vehicle's last will."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> int | None:
        """SIGTERM: each vehicle publishes OFFLINE and disconnects; the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(PROCESS_BOUND_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode
