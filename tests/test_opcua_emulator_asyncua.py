"""The asyncua machine emulator (``tests/helpers/opcua_server.py``) keeps the OPC UA contract.

The emulator runs as a real subprocess, as the backend's tests will run it; an asyncua
*client* drives it with security on (Basic256Sha256 SignAndEncrypt, a client certificate
made here with ``cryptography`` and given to the server with ``--trust-client``, a
username and password from ``--users``), through the standard Machinery Jobs nodes found by
namespace URI and browse name.  What each test checks is in its name: a job runs to
``Ended`` with Quality ``ok``; the machine itself refuses a duplicate JobOrderID, also after
``kill -9`` and a restart on the same job log; untrusted certificates, wrong passwords and
``--refuse-start`` are refused with the contract's status codes.

No test sleeps or holds a wall-clock budget: each waits for what it needs (the ready file,
a data-change notification) with ``helpers.waiting``, whose bound is only a hang guard.
The nodeset files come from the npm package ``node-opcua-nodesets`` installed by
``tests/setup.sh``; without them the module is skipped, except in CI (``CI`` set), where a
missing install must fail.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, Node, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from helpers.waiting import PROCESS_BOUND_S, NotYet, until, wait_until

from sim_bridge.opcua.jobs import DATA_TYPES

ISA95_STATE_DATA_TYPE = 3006   # ISA95StateDataType in the ISA-95 job control namespace

REPO = Path(__file__).resolve().parents[1]
NODESETS = Path(os.environ.get(
    "AUTOCELL_OPCUA_NODESETS",
    REPO / "tests" / "opcua" / "node_modules" / "node-opcua-nodesets" / "nodesets"))
NEEDED = ("Opc.Ua.Di.NodeSet2.xml", "Opc.Ua.IA.NodeSet2.xml", "Opc.Ua.Machinery.NodeSet2.xml",
          "opc.ua.isa95-jobcontrol.nodeset2.xml", "Opc.Ua.Machinery.Jobs.Nodeset2.xml")
MISSING = [name for name in NEEDED if not (NODESETS / name).is_file()]

pytestmark = [
    pytest.mark.opcua,
    pytest.mark.skipif(bool(MISSING) and not os.environ.get("CI"),
                       reason=f"node-opcua-nodesets not installed in {NODESETS} "
                              "(run tests/setup.sh); in CI this fails instead"),
]

GATEWAY_URI = "urn:autocell:gateway"
USERS = {"operator": "s3cret"}
SPEED = 50.0          # cell seconds per wall second: a 5 s job ends in 0.1 s of wall time

MACHINERY = "http://opcfoundation.org/UA/Machinery/"
ISA95 = "http://opcfoundation.org/UA/ISA95-JOBCONTROL_V2/"
JOBS = "http://opcfoundation.org/UA/Machinery/Jobs/"
EMU = "urn:autocell:emulator"


# -- certificates and the emulator process --------------------------------------------------

@dataclass(frozen=True)
class ClientCert:
    cert: Path
    key: Path


def make_client_cert(directory: Path, name: str) -> ClientCert:
    """A self-signed application certificate as an OPC UA client presents it: RSA 2048,
    SHA-256, the ApplicationUri in the subjectAltName."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"autocell gateway {name}")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(GATEWAY_URI), x509.DNSName("localhost")]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=True, key_encipherment=True,
                data_encipherment=True, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    paths = ClientCert(directory / f"{name}.der", directory / f"{name}_key.pem")
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    paths.key.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                            serialization.PrivateFormat.TraditionalOpenSSL,
                                            serialization.NoEncryption()))
    return paths


class Emulator:
    """``python -m tests.helpers.opcua_server`` as a child process, ready when its ready
    file names its pid."""

    def __init__(self, workdir: Path, *flags: str) -> None:
        self.workdir = workdir
        self.pki = workdir / "pki"
        self.job_log = workdir / "jobs.jsonl"
        self.ready_file = workdir / "ready.json"
        self.flags = ("--pki", str(self.pki), "--job-log", str(self.job_log),
                      "--nodesets", str(NODESETS), "--ready-file", str(self.ready_file),
                      *flags)
        self.proc: subprocess.Popen[bytes] | None = None
        self.endpoint = ""

    def start(self) -> Emulator:
        if MISSING:
            pytest.fail(f"node-opcua-nodesets missing from {NODESETS}: {MISSING} "
                        "(tests/setup.sh installs them)")
        self.ready_file.unlink(missing_ok=True)
        stderr = open(self.workdir / "emulator.err", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.helpers.opcua_server",
                                      *self.flags], cwd=REPO, stderr=stderr)
        stderr.close()
        ready = wait_until(f"the emulator (pid {self.proc.pid}) writes {self.ready_file}",
                           self._ready)
        self.endpoint = ready["endpoint"]
        return self

    def _ready(self) -> dict[str, Any] | NotYet:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"the emulator exited with {self.proc.returncode}: "
                                 f"{(self.workdir / 'emulator.err').read_text()[-3000:]}")
        if not self.ready_file.exists():
            return NotYet("no ready file")
        ready = json.loads(self.ready_file.read_text())
        return ready if ready.get("pid") == self.proc.pid else NotYet(ready)

    def restart_on_the_same_port(self) -> Emulator:
        """Start again with the same flags, job log, PKI and port (as a machine comes back)."""
        port = self.endpoint.rsplit(":", 1)[1]
        flags = list(self.flags)
        flags[flags.index("--port") + 1] = port
        self.flags = tuple(flags)
        return self.start()

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=PROCESS_BOUND_S)

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=PROCESS_BOUND_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
        return self.proc.returncode

    def log_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.job_log.read_text().splitlines()]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ClientCert]:
    directory = tmp_path_factory.mktemp("client-certs")
    return {name: make_client_cert(directory, name) for name in ("trusted", "stranger")}


def secure_flags(workdir: Path, certs: dict[str, ClientCert]) -> tuple[str, ...]:
    users = workdir / "users.json"
    users.write_text(json.dumps(USERS))
    return ("--port", "0", "--security", "secure", "--trust-client", str(certs["trusted"].cert),
            "--users", str(users), "--speed", str(SPEED))


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory,
             certs: dict[str, ClientCert]) -> Iterator[Emulator]:
    workdir = tmp_path_factory.mktemp("emulator")
    emu = Emulator(workdir, *secure_flags(workdir, certs), "--machines", "m1,m2,m3,m4",
                   "--refuse-start", "m3").start()
    try:
        yield emu
    finally:
        assert emu.stop() == 0, (workdir / "emulator.err").read_text()[-3000:]


# -- the client side -------------------------------------------------------------------------

@dataclass
class Session:
    client: Client
    ns: dict[str, int]

    async def machine(self, machine_id: str) -> Node:
        machines = self.client.get_node(ua.NodeId(1001, self.ns[MACHINERY]))
        return await machines.get_child(ua.QualifiedName(machine_id, self.ns[EMU]))

    async def job_management(self, machine_id: str, part: str) -> Node:
        machine = await self.machine(machine_id)
        return await machine.get_child([
            ua.QualifiedName("MachineryBuildingBlocks", self.ns[MACHINERY]),
            ua.QualifiedName("JobManagement", self.ns[JOBS]),
            ua.QualifiedName(part, self.ns[JOBS])])

    def isa95(self, name: str) -> ua.QualifiedName:
        return ua.QualifiedName(name, self.ns[ISA95])

    async def store_and_start(self, machine_id: str, job_id: str, duration_s: float) -> int:
        control = await self.job_management(machine_id, "JobOrderControl")
        # the classes of *this* server's data types (another server's, bound to the same
        # names in ``ua`` by an earlier test, may carry other type ids)
        order_t, param_t = (ua.get_type(ua.NodeId(n, self.ns[ISA95]))
                            for n in (DATA_TYPES["ISA95JobOrderDataType"],
                                      DATA_TYPES["ISA95ParameterDataType"]))
        order = order_t(JobOrderID=job_id, JobOrderParameters=[
            param_t(ID="duration_s", Value=ua.Variant(duration_s, ua.VariantType.Double)),
            param_t(ID="order", Value=ua.Variant("o1", ua.VariantType.String))])
        return int(await control.call_method(
            self.isa95("StoreAndStart"), ua.Variant(order, ua.VariantType.ExtensionObject),
            ua.Variant([], ua.VariantType.LocalizedText)))

    async def call_by_id(self, machine_id: str, method: str, job_id: str) -> int:
        control = await self.job_management(machine_id, "JobOrderControl")
        return int(await control.call_method(self.isa95(method), job_id,
                                             ua.Variant([], ua.VariantType.LocalizedText)))

    async def job_response(self, machine_id: str, job_id: str) -> tuple[Any, int]:
        results = await self.job_management(machine_id, "JobOrderResults")
        response, status = await results.call_method(
            self.isa95("RequestJobResponseByJobOrderID"), job_id)
        return response, int(status)


@asynccontextmanager
async def connect(emu: Emulator, cert: ClientCert, user: str | None = "operator",
                  password: str | None = None) -> AsyncIterator[Session]:
    client = Client(emu.endpoint)
    client.application_uri = GATEWAY_URI
    if user is not None:
        client.set_user(user)
        client.set_password(password if password is not None else USERS[user])
    await client.set_security(SecurityPolicyBasic256Sha256, certificate=str(cert.cert),
                              private_key=str(cert.key),
                              server_certificate=str(emu.pki / "server_cert.der"),
                              mode=ua.MessageSecurityMode.SignAndEncrypt)
    async with client:
        await client.load_data_type_definitions()
        ns = {uri: await client.get_namespace_index(uri) for uri in (MACHINERY, ISA95, JOBS, EMU)}
        yield Session(client, ns)


class Latest:
    """Subscription handler keeping the last value of each node."""

    def __init__(self) -> None:
        self.values: dict[ua.NodeId, Any] = {}

    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        self.values[node.nodeid] = val


class History:
    """Subscription handler keeping every value notified (of one node)."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        self.values.append(val)


def state_of(job_order_list: Any, job_id: str) -> str | None:
    for entry in job_order_list or []:
        if entry.JobOrder.JobOrderID == job_id:
            return str(entry.State[0].StateText.Text)
    return None


async def watch(session: Session, node: Node) -> Latest:
    latest = Latest()
    subscription = await session.client.create_subscription(50, latest)
    await subscription.subscribe_data_change(node)
    return latest


def run(scenario: Any) -> Any:
    return asyncio.run(scenario)


# -- the tests ---------------------------------------------------------------------------------

def test_a_job_runs_to_ended_and_reports_quality_ok(emulator: Emulator,
                                                    certs: dict[str, ClientCert]) -> None:
    async def scenario() -> None:
        async with connect(emulator, certs["trusted"]) as session:
            control = await session.job_management("m1", "JobOrderControl")
            job_list = await control.get_child(session.isa95("JobOrderList"))
            latest = await watch(session, job_list)
            assert await session.store_and_start("m1", "t1@1", duration_s=5.0) == 0

            def ended() -> Any:
                seen = latest.values.get(job_list.nodeid)
                return seen if state_of(seen, "t1@1") == "Ended" else NotYet(seen)

            final = await until("JobOrderList shows t1@1 Ended", ended)
            assert final[0].State[0].StateNumber == 5
            response, status = await session.job_response("m1", "t1@1")
            assert status == 0
            assert response.JobOrderID == "t1@1"
            assert response.JobState[0].StateText.Text == "Ended"
            assert [(p.ID, p.Value.Value) for p in response.JobResponseData] == [("Quality", "ok")]
            item_state = await (await session.machine("m1")).get_child([
                ua.QualifiedName("MachineryBuildingBlocks", session.ns[MACHINERY]),
                ua.QualifiedName("MachineryItemState", session.ns[MACHINERY]), "0:CurrentState"])
            assert (await item_state.read_value()).Text == "NotExecuting"

    run(scenario())
    events = [(line["job"], line["event"]) for line in emulator.log_lines()
              if line["machine"] == "m1"]
    assert events == [("t1@1", "started"), ("t1@1", "ended")]


def test_the_machine_refuses_a_duplicate_job_order_id_and_runs_it_once(
        emulator: Emulator, certs: dict[str, ClientCert]) -> None:
    async def scenario() -> list[int]:
        async with connect(emulator, certs["trusted"]) as session:
            first = await session.store_and_start("m2", "t2@1", duration_s=1e6)
            again = await session.store_and_start("m2", "t2@1", duration_s=1e6)
            busy = await session.store_and_start("m2", "t3@1", duration_s=1.0)
            aborted = await session.call_by_id("m2", "Abort", "t2@1")
            after_abort = await session.store_and_start("m2", "t2@1", duration_s=1.0)
            unknown = await session.call_by_id("m2", "Abort", "never@1")
            cleared = await session.call_by_id("m2", "Clear", "t2@1")
            control = await session.job_management("m2", "JobOrderControl")
            listed = await (await control.get_child(session.isa95("JobOrderList"))).read_value()
            assert state_of(listed, "t2@1") is None
            response, status = await session.job_response("m2", "t2@1")
            assert (status, response.JobState[0].StateText.Text) == (0, "Aborted")
            results = await session.job_management("m2", "JobOrderResults")
            by_state, status = await results.call_method(
                session.isa95("RequestJobResponseByJobOrderState"),
                ua.Variant([ua.get_type(ua.NodeId(ISA95_STATE_DATA_TYPE, session.ns[ISA95]))(
                    StateText=ua.LocalizedText("Aborted"), StateNumber=6)],
                           ua.VariantType.ExtensionObject))
            assert (status, [r.JobOrderID for r in by_state]) == (0, ["t2@1"])
            kept = await (await results.get_child(session.isa95("JobOrderResponseList"))).read_value()
            assert [r.JobOrderID for r in kept] == ["t2@1"]
            _, unknown_status = await session.job_response("m2", "never@1")
            assert unknown_status == 1
            return [first, again, busy, aborted, after_abort, unknown, cleared]

    assert run(scenario()) == [0, 3, 3, 0, 3, 1, 0]
    m2 = [line for line in emulator.log_lines() if line["machine"] == "m2"]
    assert [(line["job"], line["event"]) for line in m2 if line["event"] == "started"] == [
        ("t2@1", "started")]
    assert sum(1 for line in m2 if line["event"] == "refused") == 3
    assert all(line["why"] for line in m2 if line["event"] == "refused")


def test_refuse_start_fails_the_call_with_bad_user_access_denied(
        emulator: Emulator, certs: dict[str, ClientCert]) -> None:
    async def scenario() -> None:
        async with connect(emulator, certs["trusted"]) as session:
            with pytest.raises(ua.UaStatusCodeError) as refused:
                await session.store_and_start("m3", "t4@1", duration_s=1.0)
            assert refused.value.code == ua.StatusCodes.BadUserAccessDenied

    run(scenario())
    assert not [line for line in emulator.log_lines()
                if line["machine"] == "m3" and line["event"] == "started"]


def test_an_untrusted_client_certificate_is_rejected(emulator: Emulator,
                                                     certs: dict[str, ClientCert]) -> None:
    async def scenario() -> None:
        with pytest.raises(ua.UaStatusCodeError) as rejected:
            async with connect(emulator, certs["stranger"]):
                pass
        assert rejected.value.code in (ua.StatusCodes.BadCertificateUntrusted,
                                       ua.StatusCodes.BadSecurityChecksFailed)

    run(scenario())


def test_a_wrong_password_and_anonymous_login_are_rejected(
        emulator: Emulator, certs: dict[str, ClientCert]) -> None:
    async def scenario() -> None:
        with pytest.raises(ua.UaStatusCodeError) as wrong:
            async with connect(emulator, certs["trusted"], password="guess"):
                pass
        assert wrong.value.code == ua.StatusCodes.BadUserAccessDenied
        with pytest.raises(ua.UaStatusCodeError) as anonymous:
            async with connect(emulator, certs["trusted"], user=None):
                pass
        assert anonymous.value.code in (ua.StatusCodes.BadIdentityTokenRejected,
                                        ua.StatusCodes.BadUserAccessDenied)

    run(scenario())


def test_only_basic256sha256_sign_and_encrypt_is_offered(emulator: Emulator) -> None:
    async def scenario() -> list[tuple[str, Any]]:
        client = Client(emulator.endpoint)
        endpoints = await client.connect_and_get_server_endpoints()
        return [(e.SecurityPolicyUri, e.SecurityMode) for e in endpoints]

    assert run(scenario()) == [(SecurityPolicyBasic256Sha256.URI,
                                ua.MessageSecurityMode.SignAndEncrypt)]


def test_insecure_mode_offers_only_security_none_and_anonymous_login(tmp_path: Path) -> None:
    emu = Emulator(tmp_path, "--security", "insecure", "--machines", "solo").start()
    try:
        async def scenario() -> tuple[list[str], str]:
            client = Client(emu.endpoint)
            endpoints = await client.connect_and_get_server_endpoints()
            async with Client(emu.endpoint) as anonymous:
                await anonymous.load_data_type_definitions()
                ns = {uri: await anonymous.get_namespace_index(uri) for uri in (MACHINERY, EMU)}
                session = Session(anonymous, ns)
                state = await (await session.machine("solo")).get_child([
                    ua.QualifiedName("MachineryBuildingBlocks", ns[MACHINERY]),
                    ua.QualifiedName("MachineryItemState", ns[MACHINERY]), "0:CurrentState"])
                return [e.SecurityPolicyUri for e in endpoints], (await state.read_value()).Text

        async def a_user_name() -> None:
            client = Client(emu.endpoint)
            client.set_user("operator")
            client.set_password("s3cret")
            async with client:
                pass

        policies, idle = run(scenario())
        assert policies == ["http://opcfoundation.org/UA/SecurityPolicy#None"]
        assert idle == "NotExecuting"
        with pytest.raises(ua.UaStatusCodeError) as refused:     # no --users: anonymous only
            run(a_user_name())
        assert refused.value.code == ua.StatusCodes.BadUserAccessDenied
    finally:
        assert emu.stop() == 0


def test_readings_walk_within_their_ranges(emulator: Emulator,
                                           certs: dict[str, ClientCert]) -> None:
    async def scenario() -> None:
        async with connect(emulator, certs["trusted"]) as session:
            monitoring = await (await session.machine("m4")).get_child(
                ua.QualifiedName("Monitoring", session.ns[EMU]))
            spindle = await monitoring.get_child(ua.QualifiedName("SpindleLoad", session.ns[EMU]))
            temperature = await monitoring.get_child(
                ua.QualifiedName("Temperature", session.ns[EMU]))
            history = History()
            subscription = await session.client.create_subscription(50, history)
            await subscription.subscribe_data_change(spindle)
            seen = history.values
            await until("SpindleLoad changes twice",
                        lambda: len(set(seen)) >= 3 or NotYet(seen))
            assert all(0.0 <= value <= 100.0 for value in seen)
            assert 20.0 <= await temperature.read_value() <= 80.0
            for node, unit, (low, high) in ((spindle, "%", (0, 100)),
                                            (temperature, "°C", (20, 80))):
                assert (await node.read_type_definition()) == ua.NodeId(ua.ObjectIds.AnalogItemType)
                eu_range = await (await node.get_child("0:EURange")).read_value()
                assert (eu_range.Low, eu_range.High) == (low, high)
                units = await (await node.get_child("0:EngineeringUnits")).read_value()
                assert units.DisplayName.Text == unit

    run(scenario())


@pytest.mark.timeout(600)
def test_after_kill_9_and_a_restart_on_the_same_job_log_the_old_id_is_still_refused(
        tmp_path: Path, certs: dict[str, ClientCert]) -> None:
    emu = Emulator(tmp_path, *secure_flags(tmp_path, certs), "--machines", "m1")
    emu.start()
    try:
        async def start_long_job() -> int:
            async with connect(emu, certs["trusted"]) as session:
                return await session.store_and_start("m1", "t9@1", duration_s=1e6)

        assert run(start_long_job()) == 0
        endpoint = emu.endpoint
        emu.kill9()
        assert emu.restart_on_the_same_port().endpoint == endpoint

        async def again() -> list[int]:
            async with connect(emu, certs["trusted"]) as session:
                return [await session.store_and_start("m1", "t9@1", duration_s=1.0),
                        await session.store_and_start("m1", "t9@2", duration_s=1.0)]

        assert run(again()) == [3, 0]
    finally:
        assert emu.stop() == 0
    started = [line["job"] for line in emu.log_lines() if line["event"] == "started"]
    assert started == ["t9@1", "t9@2"]
    assert [line["why"] for line in emu.log_lines() if line["event"] == "refused"] == [
        "duplicate JobOrderID"]
