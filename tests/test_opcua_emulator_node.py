"""The node-opcua machine emulator keeps its contract (tests/opcua/CONTRACT.md).

The OPC UA backend's tests trust this emulator to behave like a machine that
speaks OPC 40001-3 Machinery Job Management, so it is checked here on its own,
from a generic client: asyncua, with SignAndEncrypt and a trusted client
certificate, building the ISA95 structures only from the data type
definitions the server publishes (``load_data_type_definitions``).

Real processes, so every wait is on an event (a data change, a ready file),
never on a sleep.  Skipped only where the npm packages are missing outside CI;
in CI (``CI`` set) a missing install fails.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, Node, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from tests.helpers.opcua_emulators import (ClientCertificate, Emulator, make_client_certificate,
                                           node_emulator_missing, start_emulator)
from tests.helpers.waiting import until

from sim_bridge.opcua.jobs import DATA_TYPES

_missing = node_emulator_missing()
if _missing and os.environ.get("CI"):
    raise RuntimeError(f"CI: {_missing}")
pytestmark = [pytest.mark.opcua,
              pytest.mark.skipif(_missing is not None, reason=_missing or ""),
              pytest.mark.timeout(600)]

UA = "http://opcfoundation.org/UA/"
MACHINERY = "http://opcfoundation.org/UA/Machinery/"
ISA95 = "http://opcfoundation.org/UA/ISA95-JOBCONTROL_V2/"
JOBS = "http://opcfoundation.org/UA/Machinery/Jobs/"
EMU = "urn:autocell:emulator"
USERS = {"operator": "s3cret"}
UNABLE_TO_ACCEPT, UNKNOWN_JOB_ORDER = 3, 1


@pytest.fixture(scope="module")
def client_cert(tmp_path_factory: pytest.TempPathFactory) -> ClientCertificate:
    return make_client_certificate(tmp_path_factory.mktemp("client"))


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory,
             client_cert: ClientCertificate) -> Iterator[Emulator]:
    """One secure emulator for the tests that do not kill it: m3 refuses every start."""
    emu = start_emulator(tmp_path_factory.mktemp("emulator"), ["m1", "m2", "m3"], speed=10.0,
                         trust_clients=[client_cert.cert_path], users=USERS, refuse_start=["m3"])
    yield emu
    assert emu.stop() == 0, emu.stderr()


@asynccontextmanager
async def connected(emu: Emulator, cert: ClientCertificate, *, user: str | None = "operator",
                    password: str | None = None) -> AsyncIterator[Client]:
    """A secure session; anonymous when ``user`` is None."""
    client = Client(emu.endpoint)
    client.application_uri = cert.application_uri
    if user is not None:
        client.set_user(user)
        client.set_password(USERS.get(user, "") if password is None else password)
    await client.set_security(SecurityPolicyBasic256Sha256, str(cert.cert_path), str(cert.key_path),
                              server_certificate=str(emu.server_cert_path),
                              mode=ua.MessageSecurityMode.SignAndEncrypt)
    async with client:
        await client.load_data_type_definitions()
        yield client


class MachineNodes:
    """One machine's nodes, found by browse paths whose namespaces come from their URIs."""

    def __init__(self, client: Client, machine: Node, ns: dict[str, int]) -> None:
        self.client, self.machine, self.ns = client, machine, ns

    @classmethod
    async def find(cls, client: Client, machine_id: str) -> MachineNodes:
        ns = {uri: await client.get_namespace_index(uri) for uri in (UA, MACHINERY, ISA95, JOBS, EMU)}
        machine = await client.nodes.objects.get_child([f"{ns[MACHINERY]}:Machines",
                                                        f"{ns[EMU]}:{machine_id}"])
        return cls(client, machine, ns)

    async def child(self, *path: tuple[str, str]) -> Node:
        return await self.machine.get_child([f"{self.ns[uri]}:{name}" for uri, name in path])

    async def control(self) -> Node:
        return await self.child((MACHINERY, "MachineryBuildingBlocks"), (JOBS, "JobManagement"),
                                (JOBS, "JobOrderControl"))

    async def results(self) -> Node:
        return await self.child((MACHINERY, "MachineryBuildingBlocks"), (JOBS, "JobManagement"),
                                (JOBS, "JobOrderResults"))

    async def store_and_start(self, job_id: str, duration_s: float) -> int:
        # the classes of *this* server's data types (another server's, bound to the same
        # names in ``ua`` by an earlier test, may carry other type ids)
        order = ua.get_type(ua.NodeId(DATA_TYPES["ISA95JobOrderDataType"], self.ns[ISA95]))()
        order.JobOrderID = job_id
        parameter = ua.get_type(ua.NodeId(DATA_TYPES["ISA95ParameterDataType"],
                                          self.ns[ISA95]))()
        parameter.ID = "duration_s"
        parameter.Value = ua.Variant(duration_s, ua.VariantType.Double)
        order.JobOrderParameters = [parameter]
        return int(await (await self.control()).call_method(
            f"{self.ns[ISA95]}:StoreAndStart", order, no_comment()))

    async def job_response(self, job_id: str) -> tuple[Any, int]:
        response, status = await (await self.results()).call_method(
            f"{self.ns[ISA95]}:RequestJobResponseByJobOrderID", job_id)
        return response, int(status)

    async def job_order_list_node(self) -> Node:
        return await (await self.control()).get_child(f"{self.ns[ISA95]}:JobOrderList")


def no_comment() -> ua.Variant:
    return ua.Variant([], ua.VariantType.LocalizedText)


def states_of(job_order_list: list[Any] | None) -> dict[str, str]:
    return {entry.JobOrder.JobOrderID: entry.State[0].StateText.Text
            for entry in job_order_list or []}


class Watch:
    """The values a subscription delivered, per node, in order."""

    def __init__(self) -> None:
        self.seen: dict[Node, list[Any]] = {}

    def datachange_notification(self, node: Node, value: Any, data: Any) -> None:
        self.seen.setdefault(node, []).append(value)

    def of(self, node: Node) -> list[Any]:
        return self.seen.get(node, [])


async def run_job_to_end(machine: MachineNodes, job_id: str) -> tuple[list[dict[str, str]], list[str]]:
    """StoreAndStart, then wait on a subscription until the job is Ended.

    Returns the JobOrderList states and the MachineryItemState texts seen meanwhile.
    """
    watch = Watch()
    subscription = await machine.client.create_subscription(50, watch)
    job_list = await machine.job_order_list_node()
    item_state = await machine.child((MACHINERY, "MachineryBuildingBlocks"),
                                     (MACHINERY, "MachineryItemState"), (UA, "CurrentState"))
    await subscription.subscribe_data_change([job_list, item_state])
    await until("the first notifications", lambda: watch.of(job_list) and watch.of(item_state))
    assert await machine.store_and_start(job_id, duration_s=2.0) == 0
    await until(f"{job_id} Ended in JobOrderList",
                lambda: states_of(watch.of(job_list)[-1]).get(job_id) == "Ended"
                and watch.of(item_state)[-1].Text == "NotExecuting")
    await subscription.delete()
    return [states_of(v) for v in watch.of(job_list)], [v.Text for v in watch.of(item_state)]


def test_a_job_runs_ends_and_reports_quality_ok(emulator: Emulator,
                                                 client_cert: ClientCertificate) -> None:
    async def scenario() -> None:
        async with connected(emulator, client_cert) as client:
            machine = await MachineNodes.find(client, "m1")
            jobs, item_states = await run_job_to_end(machine, "t1@1")
            assert [states.get("t1@1") for states in jobs][-2:] == ["Running", "Ended"]
            assert item_states == ["NotExecuting", "Executing", "NotExecuting"]
            response, status = await machine.job_response("t1@1")
            assert status == 0
            assert response.JobOrderID == "t1@1"
            assert (response.JobState[0].StateText.Text, response.JobState[0].StateNumber) == ("Ended", 5)
            assert [(p.ID, p.Value.Value) for p in response.JobResponseData] == [("Quality", "ok")]
            _, unknown = await machine.job_response("never@1")
            assert unknown == UNKNOWN_JOB_ORDER

    asyncio.run(scenario())
    assert [(e["machine"], e["event"]) for e in emulator.jobs() if e["job"] == "t1@1"] == [
        ("m1", "started"), ("m1", "ended")]


def test_a_duplicate_job_order_id_is_refused_and_runs_once(emulator: Emulator,
                                                           client_cert: ClientCertificate) -> None:
    async def scenario() -> None:
        async with connected(emulator, client_cert) as client:
            machine = await MachineNodes.find(client, "m2")
            await run_job_to_end(machine, "t2@1")
            assert await machine.store_and_start("t2@1", duration_s=2.0) == UNABLE_TO_ACCEPT
            other = await MachineNodes.find(client, "m1")   # the server refuses it on any machine
            assert await other.store_and_start("t2@1", duration_s=2.0) == UNABLE_TO_ACCEPT

    asyncio.run(scenario())
    events = [e["event"] for e in emulator.jobs() if e["job"] == "t2@1"]
    assert events.count("started") == 1
    assert events.count("refused") == 2


def test_a_busy_machine_refuses_then_abort_and_clear(emulator: Emulator,
                                                    client_cert: ClientCertificate) -> None:
    async def scenario() -> None:
        async with connected(emulator, client_cert) as client:
            machine = await MachineNodes.find(client, "m2")
            control, isa = await machine.control(), machine.ns[ISA95]
            job_list = await machine.job_order_list_node()
            assert await machine.store_and_start("t6@1", duration_s=3600.0) == 0
            assert await machine.store_and_start("t7@1", duration_s=1.0) == UNABLE_TO_ACCEPT
            assert await control.call_method(f"{isa}:Abort", "nope@1", no_comment()) == UNKNOWN_JOB_ORDER
            assert await control.call_method(f"{isa}:Abort", "t6@1", no_comment()) == 0
            assert states_of(await job_list.read_value()).get("t6@1") == "Aborted"
            assert await control.call_method(f"{isa}:Clear", "t6@1", no_comment()) == 0
            assert "t6@1" not in states_of(await job_list.read_value())
            response, status = await machine.job_response("t6@1")   # cleared, still retrievable
            assert (status, response.JobState[0].StateNumber) == (0, 6)

    asyncio.run(scenario())
    events = [(e["job"], e["event"]) for e in emulator.jobs() if e["job"] in ("t6@1", "t7@1")]
    assert events == [("t6@1", "started"), ("t7@1", "refused"), ("t6@1", "aborted"),
                      ("t6@1", "cleared")]


def test_identification_and_readings(emulator: Emulator, client_cert: ClientCertificate) -> None:
    async def scenario() -> None:
        async with connected(emulator, client_cert) as client:
            machine = await MachineNodes.find(client, "m1")
            identification = await machine.child((MACHINERY, "Identification"))
            di = await client.get_namespace_index("http://opcfoundation.org/UA/DI/")
            values = {name: await (await identification.get_child(f"{di}:{name}")).read_value()
                      for name in ("Manufacturer", "SerialNumber", "ProductInstanceUri")}
            assert values["Manufacturer"].Text == "autocell emulator"
            assert (values["SerialNumber"], values["ProductInstanceUri"]) == ("m1", "urn:autocell:emulator:m1")
            mode = await machine.child((MACHINERY, "MachineryBuildingBlocks"),
                                       (MACHINERY, "MachineryOperationMode"), (UA, "CurrentState"))
            assert (await mode.read_value()).Text == "Processing"

            load = await machine.child((EMU, "Monitoring"), (EMU, "SpindleLoad"))
            temperature = await machine.child((EMU, "Monitoring"), (EMU, "Temperature"))
            watch = Watch()
            subscription = await client.create_subscription(50, watch)
            await subscription.subscribe_data_change([load, temperature])
            await until("three readings of each", lambda: len(watch.of(load)) >= 3
                        and len(watch.of(temperature)) >= 3)
            await subscription.delete()
            assert all(0 <= v <= 100 for v in watch.of(load))
            assert all(20 <= v <= 80 for v in watch.of(temperature))
            assert len(set(watch.of(load))) > 1

    asyncio.run(scenario())


def test_the_server_certificate_names_the_application_localhost_and_loopback(
        emulator: Emulator) -> None:
    cert = x509.load_der_x509_certificate(emulator.server_cert_path.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.UniformResourceIdentifier) == [
        f"urn:autocell:emulator:{emulator.port}"]
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert cert.public_key().key_size == 2048   # type: ignore[union-attr]
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)


def test_a_start_on_a_refusing_machine_is_bad_user_access_denied(
        emulator: Emulator, client_cert: ClientCertificate) -> None:
    async def scenario() -> None:
        async with connected(emulator, client_cert) as client:
            machine = await MachineNodes.find(client, "m3")
            with pytest.raises(ua.UaStatusCodeError) as refused:
                await machine.store_and_start("t3@1", duration_s=1.0)
            assert refused.value.code == ua.StatusCodes.BadUserAccessDenied

    asyncio.run(scenario())
    assert not [e for e in emulator.jobs() if e["job"] == "t3@1" and e["event"] == "started"]


def test_only_basic256sha256_sign_and_encrypt_is_offered(emulator: Emulator,
                                                         client_cert: ClientCertificate) -> None:
    async def scenario() -> set[tuple[str, ua.MessageSecurityMode]]:
        async with connected(emulator, client_cert) as client:
            return {(e.SecurityPolicyUri, e.SecurityMode) for e in await client.get_endpoints()}

    assert asyncio.run(scenario()) == {(SecurityPolicyBasic256Sha256.URI,
                                        ua.MessageSecurityMode.SignAndEncrypt)}


def test_insecure_mode_offers_only_security_policy_none(tmp_path: Path) -> None:
    emu = start_emulator(tmp_path / "emulator", ["m1"], security="insecure")
    try:
        async def scenario() -> set[tuple[str, ua.MessageSecurityMode]]:
            async with Client(emu.endpoint) as client:
                await client.load_data_type_definitions()
                machine = await MachineNodes.find(client, "m1")
                assert await machine.store_and_start("t8@1", duration_s=0.0) == 0
                return {(e.SecurityPolicyUri, e.SecurityMode) for e in await client.get_endpoints()}

        assert asyncio.run(scenario()) == {("http://opcfoundation.org/UA/SecurityPolicy#None",
                                            ua.MessageSecurityMode.None_)}
    finally:
        assert emu.stop() == 0, emu.stderr()


def test_an_untrusted_client_certificate_is_rejected(emulator: Emulator, tmp_path: Path) -> None:
    """node-opcua answers the OpenSecureChannel with BadSecurityChecksFailed (its log says
    BadCertificateUntrusted) and files the certificate under pki/rejected; asyncua 2.1
    cannot parse that answer and fails the connect with a bare AssertionError, so the
    proof that the *certificate* was refused is the rejected folder."""
    stranger = make_client_certificate(tmp_path, name="stranger")
    thumbprint = x509.load_der_x509_certificate(stranger.cert_path.read_bytes()).fingerprint(
        hashes.SHA1()).hex()   # noqa: S303 - OPC UA names certificates by their SHA-1 thumbprint

    async def scenario() -> None:
        async with connected(emulator, stranger):
            pass

    with pytest.raises(Exception):   # noqa: B017 - asyncua's error here is an AssertionError
        asyncio.run(scenario())
    rejected = [p.name for p in (emulator.pki_dir / "rejected").rglob("*") if p.is_file()]
    assert any(thumbprint in name for name in rejected), rejected


def test_a_wrong_password_is_rejected(emulator: Emulator, client_cert: ClientCertificate) -> None:
    async def scenario() -> None:
        async with connected(emulator, client_cert, password="wrong"):
            pass

    with pytest.raises(ua.UaStatusCodeError) as refused:
        asyncio.run(scenario())
    assert refused.value.code in (ua.StatusCodes.BadUserAccessDenied,
                                  ua.StatusCodes.BadIdentityTokenRejected,
                                  ua.StatusCodes.BadIdentityTokenInvalid)


def test_after_kill_9_the_restarted_server_still_refuses_the_old_job(
        tmp_path: Path, client_cert: ClientCertificate) -> None:
    emu = start_emulator(tmp_path / "emulator", ["m1"], speed=10.0,
                         trust_clients=[client_cert.cert_path])
    try:
        async def first_life() -> None:
            async with connected(emu, client_cert, user=None) as client:
                await run_job_to_end(await MachineNodes.find(client, "m1"), "t4@1")

        asyncio.run(first_life())
        identity = emu.server_cert_path.read_bytes()
        emu.kill()
        emu = emu.restart()
        assert emu.server_cert_path.read_bytes() == identity

        async def second_life() -> None:
            async with connected(emu, client_cert, user=None) as client:
                machine = await MachineNodes.find(client, "m1")
                assert await machine.store_and_start("t4@1", duration_s=1.0) == UNABLE_TO_ACCEPT
                assert await machine.store_and_start("t5@1", duration_s=1.0) == 0

        asyncio.run(second_life())
    finally:
        emu.kill()
    events = [(e["job"], e["event"]) for e in emu.jobs()]
    assert events.count(("t4@1", "started")) == 1
    assert ("t4@1", "refused") in events
    assert ("t5@1", "started") in events
