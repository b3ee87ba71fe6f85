"""The asyncua machine emulator: machines as OPC UA servers on asyncua's own server stack.

autocell's OPC UA backend is tested against machine emulators built on OPC UA stacks not
written here.  This is the second one (the first runs on node-opcua, ``tests/opcua/``); both
implement one contract, ``tests/opcua/CONTRACT.md``, and take the same flags::

    python -m tests.helpers.opcua_server --port 0 --machines m1,m2 --speed 10 \\
        --job-log jobs.jsonl --pki pki/ --trust-client gateway.der --ready-file ready.json

What it serves: the standard nodesets shipped by the npm package ``node-opcua-nodesets``
(DI, IA, Machinery, ISA-95 job control, Machinery Jobs), imported with asyncua's XML importer,
and per machine a ``Machinery:Machines`` entry with identification, MachineryItemState,
MachineryOperationMode and a Machinery Jobs ``JobManagement`` whose methods run jobs
(``tests/helpers/opcua_machine.py``; the rules live in ``tests/helpers/opcua_jobs.py``).
``--legacy L1,L2`` adds machines without any companion specification, under
``Objects/EMU:Legacy`` (``tests/helpers/opcua_legacy.py``), for the ``nodes`` profile;
``--packml P1,P2`` PackML units (OPC 30050) under ``Objects`` from the PackML nodeset
(``tests/helpers/opcua_packml.py``), for the ``packml`` profile.

Two workarounds make asyncua (2.1) import these files, both in :func:`import_nodesets`:

* DI 1.05 lists nine ``DesignToolOnly="true"`` objects without any parent; asyncua refuses
  them (BadParentNodeIdInvalid).  They exist for design tools only (OPC 10000-6 F.3), so
  they are dropped from the XML before import.
* Machinery Jobs' ``OutputInfoType`` is an OptionSet subtyped from Byte; asyncua's importer
  recognises OptionSets only below the OptionSet *structure*, so it registers no Python type
  for it and fails on ``OutputInformationDataType`` (FreeOpcUa/opcua-asyncio#1869, open).
  Registering ``OutputInfoType`` as a Byte alias before the import lets it through.

Machinery 1.04 requires the IA nodeset, so it is imported too (before Machinery).

Security: ``--security secure`` (the default) offers only Basic256Sha256 SignAndEncrypt,
and asyncua's CertificateValidator with a TrustStore holding exactly the ``--trust-client``
certificates rejects any other client certificate at CreateSession
(BadCertificateUntrusted).  ``--users`` replaces anonymous login with those users; without
it only anonymous logs in.  X509 user tokens are not offered.

The ready file is written (tmp + rename) once the server listens; SIGTERM or SIGINT stop it.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import os
import re
import shutil
import signal
import socket
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from asyncua import Server, ua
from asyncua.common.utils import ServiceError
from asyncua.crypto.cert_gen import dump_private_key_as_pem, generate_private_key
from asyncua.crypto.cert_gen import generate_self_signed_app_certificate
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.crypto.truststore import TrustStore
from asyncua.server.user_managers import UserManager
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.helpers.opcua_jobs import JobLog, MachineJobs, accepted_ids
from tests.helpers.opcua_legacy import LegacyMachine, build_legacy, ended_counts
from tests.helpers.opcua_machine import (
    EMU_URI, JOBS_URI, MACHINES_FOLDER, READING_PERIOD_S, EmulatedMachine,
    Namespaces)
from tests.helpers.opcua_packml import NODESET_FILE as PACKML_NODESET
from tests.helpers.opcua_packml import PackMLUnit, build_units

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Where tests/setup.sh installs node-opcua-nodesets; AUTOCELL_OPCUA_NODESETS or --nodesets
#: point elsewhere (a developer's unpacked ``npm pack node-opcua-nodesets``).
DEFAULT_NODESETS = Path(os.environ.get(
    "AUTOCELL_OPCUA_NODESETS",
    REPO_ROOT / "tests" / "opcua" / "node_modules" / "node-opcua-nodesets" / "nodesets"))

#: In dependency order (Machinery requires DI and IA; Machinery Jobs requires ISA-95).
NODESET_FILES = ("Opc.Ua.Di.NodeSet2.xml", "Opc.Ua.IA.NodeSet2.xml",
                 "Opc.Ua.Machinery.NodeSet2.xml", "opc.ua.isa95-jobcontrol.nodeset2.xml",
                 "Opc.Ua.Machinery.Jobs.Nodeset2.xml")

OUTPUT_INFO_TYPE = 3009               # Machinery Jobs: OutputInfoType (OptionSet on Byte)
_DESIGN_TOOL_ONLY = re.compile(r'<UAObject [^>]*DesignToolOnly="true"[^>]*>.*?</UAObject>\s*',
                               re.S)

log = logging.getLogger("opcua_emulator")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.helpers.opcua_server",
                                description="asyncua machine emulator (tests/opcua/CONTRACT.md)")
    p.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: a free one)")
    p.add_argument("--machines", default="", help="machine ids, comma separated")
    p.add_argument("--legacy", default="", help="legacy machine ids (Objects/Legacy), "
                                                "comma separated")
    p.add_argument("--packml", default="", help="PackML unit ids (Objects/P), comma separated")
    p.add_argument("--speed", type=float, default=1.0, help="cell seconds per wall second")
    p.add_argument("--job-log", type=Path, help="JSON lines, fsynced per line")
    p.add_argument("--pki", type=Path, help="server certificate and key (created if absent)")
    p.add_argument("--trust-client", type=Path, action="append", default=[],
                   help="a trusted client certificate, DER or PEM (repeatable)")
    p.add_argument("--security", choices=("secure", "insecure"), default="secure")
    p.add_argument("--users", type=Path, help='JSON {"username": "password"}; no anonymous')
    p.add_argument("--refuse-start", default="", help="machines whose StoreAndStart fails")
    p.add_argument("--ready-file", type=Path, help="written once listening (tmp + rename)")
    p.add_argument("--seed", type=int, default=1, help="seed of the simulated readings")
    p.add_argument("--nodesets", type=Path, default=DEFAULT_NODESETS,
                   help="directory of the node-opcua-nodesets XML files")
    p.add_argument("--verbose", action="store_true", help="asyncua's own log at INFO")
    args = p.parse_args(argv)
    args.machines = [m for m in args.machines.split(",") if m]
    args.legacy = [m for m in args.legacy.split(",") if m]
    args.packml = [m for m in args.packml.split(",") if m]
    args.refuse_start = {m for m in args.refuse_start.split(",") if m}
    if not args.machines and not args.legacy and not args.packml:
        p.error("--machines, --legacy or --packml needs at least one machine id")
    if args.speed <= 0:
        p.error("--speed must be > 0")
    if args.security == "secure" and args.pki is None:
        p.error("--security secure needs --pki DIR for the server certificate")
    missing = [f for f in (*NODESET_FILES, PACKML_NODESET) if not (args.nodesets / f).is_file()]
    if missing:
        p.error(f"nodeset files {missing} not in {args.nodesets}: run tests/setup.sh "
                f"(npm ci in tests/opcua) or pass --nodesets DIR")
    return args


async def import_nodesets(server: Server, directory: Path, packml: bool = False) -> None:
    """Import the companion specifications, with the two workarounds of the module doc
    (and PackML, OPC 30050, when the server has PackML units)."""
    jobs = await server.register_namespace(JOBS_URI)
    ua.register_basetype("OutputInfoType", ua.NodeId(OUTPUT_INFO_TYPE, jobs), ua.Byte)
    for name in (*NODESET_FILES, *([PACKML_NODESET] if packml else [])):
        text = (directory / name).read_text(encoding="utf-8")
        await server.import_xml(xmlstring=_DESIGN_TOOL_ONLY.sub("", text))
    await server.load_data_type_definitions()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_identity(pki: Path, port: int) -> tuple[Path, Path, str]:
    """The server's certificate and key in ``pki`` (made once, then reused, so a restarted
    server keeps its identity) and the ApplicationUri its certificate names."""
    pki.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = pki / "server_cert.der", pki / "server_key.pem"
    if not (cert_path.exists() and key_path.exists()):
        key = generate_private_key()           # RSA 2048
        uri = f"urn:autocell:emulator:{port}"
        cert = generate_self_signed_app_certificate(
            key, "autocell emulator", {"organizationName": "autocell"},
            [x509.UniformResourceIdentifier(uri), x509.DNSName("localhost"),
             x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))],
            extended=[ExtendedKeyUsageOID.SERVER_AUTH], days=3650)   # signed with SHA-256
        key_path.write_bytes(dump_private_key_as_pem(key))
        os.chmod(key_path, 0o600)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    cert = x509.load_der_x509_certificate(cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return cert_path, key_path, san.get_values_for_type(x509.UniformResourceIdentifier)[0]


async def _trust_nobody(cert: x509.Certificate, app: ua.ApplicationDescription) -> None:
    raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)


async def trust_validator(pki: Path, clients: list[Path]) -> Any:
    """asyncua's validator over a TrustStore of exactly ``clients`` (copied, as DER, into a
    directory emptied first, since a TrustStore reads directories).  With no client to
    trust every certificate is untrusted (asyncua's validator would pass them all without
    a store, and cannot build an empty one)."""
    if not clients:
        return _trust_nobody
    trusted = pki / "trusted-clients"
    shutil.rmtree(trusted, ignore_errors=True)
    trusted.mkdir(parents=True)
    for i, path in enumerate(clients):
        data = path.read_bytes()
        cert = (x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data
                else x509.load_der_x509_certificate(data))
        (trusted / f"client{i}.der").write_bytes(cert.public_bytes(serialization.Encoding.DER))
    store = TrustStore([trusted], [])
    await store.load()
    options = (CertificateValidatorOptions.TIME_RANGE | CertificateValidatorOptions.URI
               | CertificateValidatorOptions.TRUSTED | CertificateValidatorOptions.PEER_CLIENT)
    return CertificateValidator(options, store)


class Users(UserManager):
    """asyncua user manager: anonymous only unless a users file is given, else only its
    users (without one every user name is refused, as the node-opcua emulator does)."""

    def __init__(self, passwords: dict[str, str] | None) -> None:
        self._passwords = passwords

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:
        if self._passwords is None:
            return User(role=UserRole.User) if username is None else None
        if username is not None and self._passwords.get(username) == password:
            return User(role=UserRole.User, name=username)
        return None


def write_ready(path: Path, port: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"port": port, "pid": os.getpid(),
                               "endpoint": f"opc.tcp://127.0.0.1:{port}"}))
    os.replace(tmp, path)


async def build_server(args: argparse.Namespace, port: int
                       ) -> tuple[Server, list[EmulatedMachine | PackMLUnit],
                                  list[LegacyMachine], JobLog]:
    passwords = json.loads(args.users.read_text()) if args.users else None
    began = time.monotonic()
    server = Server(user_manager=Users(passwords))
    await server.init()
    initialised = time.monotonic()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}")
    server.set_server_name("autocell machine emulator (asyncua)")
    tokens: list[type] = [ua.UserNameIdentityToken]
    if passwords is None:
        tokens.insert(0, ua.AnonymousIdentityToken)
    server.set_identity_tokens(tokens)
    if args.security == "secure":
        cert, key, uri = server_identity(args.pki, port)
        await server.set_application_uri(uri)
        await server.load_certificate(str(cert))
        await server.load_private_key(str(key))
        server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
        server.set_certificate_validator(await trust_validator(args.pki, args.trust_client))
    else:
        await server.set_application_uri(f"urn:autocell:emulator:{port}")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        if args.pki is not None:       # the identity exists either way, for a later restart
            server_identity(args.pki, port)

    await server.register_namespace(EMU_URI)
    await import_nodesets(server, args.nodesets, packml=bool(args.packml))
    ns = await Namespaces.of(server)
    imported = time.monotonic()
    machines_folder = server.get_node(ua.NodeId(MACHINES_FOLDER, ns.machinery))

    seen = accepted_ids(args.job_log)          # what an earlier life started, before appending
    job_log = JobLog(args.job_log, lambda: datetime.now(timezone.utc).isoformat())
    machines: list[EmulatedMachine | PackMLUnit] = []
    for machine_id in args.machines:
        machine = EmulatedMachine(server, ns, machine_id, MachineJobs(machine_id, seen, job_log),
                                  speed=args.speed, refuse_start=machine_id in args.refuse_start,
                                  seed=args.seed)
        await machine.build(machines_folder)
        machines.append(machine)
    legacy = await build_legacy(server, ns.emu, args.legacy, job_log, args.job_log,
                                speed=args.speed, refuse_start=args.refuse_start)
    machines += await build_units(server, ns.emu, args.packml, job_log, seen,
                                  ended_counts(args.job_log), speed=args.speed,
                                  refuse_start=args.refuse_start, seed=args.seed)
    log.info("start-up: standard address space %.2f s, nodesets %.2f s, %d machine(s) %.2f s",
             initialised - began, imported - initialised, len(machines),
             time.monotonic() - imported)
    return server, machines, legacy, job_log


async def run(args: argparse.Namespace) -> None:
    stop = asyncio.Event()        # set by SIGTERM/SIGINT, even during the seconds of start-up
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    port = args.port or free_port()
    server, machines, legacy, job_log = await build_server(args, port)
    if stop.is_set():
        job_log.close()
        return
    await server.start()
    if args.ready_file is not None:
        write_ready(args.ready_file, port)
    log.info("listening on opc.tcp://127.0.0.1:%d with %d machine(s), %.2f s of CPU since "
             "the process began", port, len(machines), time.process_time())
    try:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), READING_PERIOD_S)
            except asyncio.TimeoutError:
                for machine in machines:
                    await machine.step_readings()
    finally:
        for machine in machines:
            machine.stop()
        for old in legacy:
            old.stop()
        await server.stop()
        job_log.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # asyncua reports every quirk of the standard nodesets at WARNING; they are known
    # (see the module doc), so it speaks only on errors unless asked.
    logging.getLogger("asyncua").setLevel(logging.INFO if args.verbose else logging.ERROR)
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
