"""The OPC UA machine emulators, started as real processes for the tests.

Two emulators implement one contract (``tests/opcua/CONTRACT.md``) on two
OPC UA stacks not written here: node-opcua (``tests/opcua/machine_emulator.mjs``,
``stack="node"``) and asyncua's server (``python -m tests.helpers.opcua_server``,
``stack="asyncua"``).  Both take the same flags, so one :func:`start_emulator`
starts either, and a test parametrized over ``stack`` runs against both.

A start waits for the emulator's ready file (written once the server listens)
with :func:`tests.helpers.waiting.wait_until`: an event, never a sleep; an
emulator that exits first fails the wait at once with its stderr.

:func:`make_client_certificate` makes the client side of the security set-up:
a self-signed application certificate as autocell's gateway presents it
(RSA 2048, SHA-256, ApplicationUri ``urn:autocell:gateway``), made with
``cryptography``.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.helpers.waiting import PROCESS_BOUND_S, wait_until

REPO = Path(__file__).resolve().parents[2]
NODE_DIR = REPO / "tests" / "opcua"
NODE_EMULATOR = NODE_DIR / "machine_emulator.mjs"
STACKS = ("node", "asyncua")
GATEWAY_URI = "urn:autocell:gateway"


def node_emulator_missing() -> str | None:
    """Why the node-opcua emulator cannot run here, or None when it can."""
    if not (NODE_DIR / "node_modules" / "node-opcua").is_dir():
        return ("the node-opcua emulator's packages are not installed "
                "(tests/setup.sh installs them: npm ci --prefix tests/opcua)")
    return None


@dataclass
class Emulator:
    """A running emulator process and where to find what it writes."""

    stack: str
    argv: list[str]
    proc: subprocess.Popen[bytes]
    directory: Path
    endpoint: str
    port: int
    job_log_path: Path
    pki_dir: Path
    stderr_path: Path
    ready: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def server_cert_path(self) -> Path:
        """The server's application certificate (DER), to pin it on the client side."""
        return self.pki_dir / "server_cert.der"

    def kill(self) -> None:
        """kill -9: no shutdown at all (the job log keeps what was fsynced)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=PROCESS_BOUND_S)

    def stop(self) -> int:
        """SIGTERM, then wait for the clean exit; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=PROCESS_BOUND_S)

    def restart(self) -> Emulator:
        """The same emulator again (same flags, port, PKI and job log), after kill or stop."""
        if self.proc.poll() is None:
            raise RuntimeError(f"the {self.stack} emulator (pid {self.pid}) still runs; "
                               "kill() or stop() it before restart()")
        argv = _replace_flag(self.argv, "--port", str(self.port))
        return _launch(self.stack, argv, self.directory)

    def jobs(self) -> list[dict[str, Any]]:
        """The job log's entries, in order (a line torn by kill -9 is left out)."""
        entries = []
        if self.job_log_path.exists():
            for line in self.job_log_path.read_text().splitlines():
                try:
                    entries.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return entries

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""


def start_emulator(directory: Path, machines: Iterable[str], *, stack: str = "node",
                   port: int = 0, speed: float = 1.0, security: str = "secure",
                   trust_clients: Iterable[Path] = (), users: Mapping[str, str] | None = None,
                   refuse_start: Iterable[str] = (), seed: int = 1) -> Emulator:
    """Start an emulator whose files (job log, PKI, ready file, stderr) live in ``directory``.

    Returns once it listens.  ``users`` is written to a users file for ``--users``.
    """
    if stack not in STACKS:
        raise ValueError(f"stack is one of {STACKS}, not {stack!r}")
    directory.mkdir(parents=True, exist_ok=True)
    argv = ["--port", str(port), "--machines", ",".join(machines), "--speed", str(speed),
            "--job-log", str(directory / "jobs.jsonl"), "--pki", str(directory / "pki"),
            "--security", security, "--ready-file", str(directory / "ready.json"),
            "--seed", str(seed)]
    for cert in trust_clients:
        argv += ["--trust-client", str(cert)]
    if users is not None:
        users_file = directory / "users.json"
        users_file.write_text(json.dumps(dict(users)))
        argv += ["--users", str(users_file)]
    refused = ",".join(refuse_start)
    if refused:
        argv += ["--refuse-start", refused]
    return _launch(stack, argv, directory)


def _launch(stack: str, argv: list[str], directory: Path) -> Emulator:
    ready_file = Path(_flag(argv, "--ready-file"))
    ready_file.unlink(missing_ok=True)
    if stack == "node":
        command = ["node", str(NODE_EMULATOR), *argv]
    else:
        command = [sys.executable, "-m", "tests.helpers.opcua_server", *argv]
    stderr_path = directory / f"{stack}-emulator.stderr"
    with open(stderr_path, "ab") as stderr:
        proc = subprocess.Popen(command, cwd=REPO, stdin=subprocess.DEVNULL,
                                stdout=stderr, stderr=stderr)

    def listening() -> dict[str, Any] | None:
        if proc.poll() is not None:
            raise RuntimeError(f"the {stack} emulator exited with {proc.returncode} before it "
                               f"listened:\n{stderr_path.read_text(errors='replace')[-4000:]}")
        return dict(json.loads(ready_file.read_text())) if ready_file.exists() else None

    try:
        ready = wait_until(f"the {stack} emulator's ready file {ready_file}", listening) or {}
    except BaseException:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        raise
    return Emulator(stack=stack, argv=argv, proc=proc, directory=directory,
                    endpoint=ready["endpoint"], port=int(ready["port"]),
                    job_log_path=Path(_flag(argv, "--job-log")), pki_dir=Path(_flag(argv, "--pki")),
                    stderr_path=stderr_path, ready=ready)


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def _replace_flag(argv: list[str], name: str, value: str) -> list[str]:
    argv = list(argv)
    argv[argv.index(name) + 1] = value
    return argv


@dataclass(frozen=True)
class ClientCertificate:
    """A client application certificate (DER) and its private key (PEM, unencrypted)."""

    cert_path: Path
    key_path: Path
    application_uri: str


def make_client_certificate(directory: Path, *, name: str = "gateway",
                            application_uri: str = GATEWAY_URI) -> ClientCertificate:
    """A self-signed OPC UA application instance certificate for a client.

    RSA 2048 and SHA-256 as Basic256Sha256 requires; the ApplicationUri in the
    subjectAltName (a server checks it against the session's), DNS localhost;
    the key usages an OPC UA application certificate carries.
    """
    directory.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"autocell {name}"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "autocell")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName([
            x509.UniformResourceIdentifier(application_uri), x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=True, key_encipherment=True,
            data_encipherment=True, key_agreement=False, key_cert_sign=True, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH,
                                              ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}_cert.der", directory / f"{name}_key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    return ClientCertificate(cert_path, key_path, application_uri)
