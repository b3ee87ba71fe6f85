"""Commissioning: what a server offers (``equipment browse``), whether a cell's machines
are reachable as configured (``equipment check``), and trusting a server (``equipment trust``).

These open the same secured sessions as the gateway (:mod:`.session`) and
find nodes with the same profile code (:mod:`.profiles`), so a machine that passes
``check`` is one the gateway can drive.  They return plain data; the CLI
(``ops/equipment.py``) prints it.

``browse`` recognises machines by their companion-spec types: the Machinery
``Machines`` folder (``machinery-jobs`` when JobManagement resolves) and
``PackMLBaseObjectType`` instances below ``Objects`` (``packml``).  A server
with neither gets *suggestions* for the ``nodes`` profile: objects below
``Objects`` with a start method (or a start bit and a job-id string) and a
counter, their nodes matched by name (:data:`NODE_HINTS`) — a first draft
for the engineer to confirm against the machine's documentation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from asyncua import Client, Node, ua

from agents.cell.equipment import OpcUaEquipment

from . import jobs
from .packml import is_packml_type
from .profiles import make_profile
from .pki import Credentials, OpcUaPki, thumbprint
from .session import LinkError, SessionParams, open_session, server_certificate

__all__ = ["BrowsedMachine", "CheckLine", "browse", "check_machine", "fetch_certificate"]


@dataclass(frozen=True)
class BrowsedMachine:
    """A machine found on a server: its browse name, type, profiles and reading candidates."""

    name: str
    type_name: str
    profiles: tuple[str, ...]
    readings: dict[str, str] = field(default_factory=dict)   # suggested name -> browse path
    path: str = ""                      # browse path below Objects (packml, nodes); "" = name
    nodes: dict[str, str] = field(default_factory=dict)      # a suggested `nodes:` mapping


@dataclass(frozen=True)
class CheckLine:
    machine: str
    endpoint: str
    security: str
    ok: bool
    problems: tuple[str, ...] = ()


def snake(name: str) -> str:
    """``SpindleLoad`` -> ``spindle_load`` (a reading name for the cell file)."""
    text = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()
    text = re.sub(r"[^a-z0-9_]", "_", text).strip("_")
    return text if text and text[0].isalpha() else f"r_{text}"


async def _type_name(node: Node) -> str:
    try:
        type_id = await node.read_type_definition()
        if type_id is None:
            return "?"
        type_node = Node(node.session, type_id)
        return str((await type_node.read_browse_name()).Name)
    except (ua.UaError, AttributeError):
        return "?"


#: Standard parts of a machine that are not readings.
NOT_READINGS = frozenset({"MachineryBuildingBlocks", "Identification", "BaseStateMachine",
                          "Admin", "Status"})


async def _numeric_variables(node: Node, prefix: str, depth: int) -> dict[str, str]:
    """Numeric variables below ``node`` (objects only, ``depth`` levels): reading candidates."""
    out: dict[str, str] = {}
    if depth < 0:
        return out
    for child in await node.get_children(refs=ua.ObjectIds.HierarchicalReferences):
        name = (await child.read_browse_name()).Name
        cls = await child.read_node_class()
        path = f"{prefix}/{name}" if prefix else name
        if cls == ua.NodeClass.Variable:
            try:
                value = await child.read_value()
            except ua.UaError:
                continue
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[snake(name)] = path
        elif cls == ua.NodeClass.Object and name not in NOT_READINGS:
            out.update(await _numeric_variables(child, path, depth - 1))
    return out


async def browse(params: SessionParams) -> list[BrowsedMachine]:
    """Every machine of the server: Machinery machines, PackML units, else ``nodes``
    suggestions (see the module doc)."""
    client = await open_session(params)
    try:
        table: list[str] = await client.get_namespace_array()
        found = await _machinery(client, table) if jobs.NS_MACHINERY in table else []
        objects = await _objects(client, table, 3)
        found += [await _packml_unit(path, node) for path, node, type_id in objects
                  if is_packml_type(type_id, table)]
        if not found:
            found = [m for path, node, _t in objects if (m := await _legacy(path, node))]
        if not found:
            raise LinkError(params.endpoint, "no Machinery machine, no PackML unit and no object "
                                             "with a start method and a counter: map the "
                                             "machine's nodes by hand with the `nodes` profile "
                                             "(docs/equipment.md)")
        return sorted(found, key=lambda m: m.name)
    finally:
        await _close(client)


async def _machinery(client: Client, table: list[str]) -> list[BrowsedMachine]:
    """Every machine in the server's Machinery ``Machines`` folder."""
    try:
        ns: jobs.Namespaces | None = await jobs.Namespaces.of(client)
    except jobs.MissingNode:
        ns = None
    folder_ns = table.index(jobs.NS_MACHINERY)
    folder = client.get_node(ua.NodeId(ua.Int32(jobs.MACHINES_FOLDER), ua.Int16(folder_ns)))
    found = []
    for child in await folder.get_children(refs=ua.ObjectIds.HierarchicalReferences,
                                           nodeclassmask=ua.NodeClass.Object):
        name = str((await child.read_browse_name()).Name)
        profiles: list[str] = []
        if ns is not None:
            try:
                await jobs.resolve(client, ns, name, {})
                profiles.append("machinery-jobs")
            except jobs.MissingNode:
                pass
        found.append(BrowsedMachine(name, await _type_name(child), tuple(profiles),
                                    await _numeric_variables(child, "", 1)))
    return found


async def _objects(client: Client, table: list[str],
                   depth: int) -> list[tuple[str, Node, ua.NodeId]]:
    """``(browse path, node, type)`` of the objects below ``Objects`` (not the Server
    object nor the Machinery folders), ``depth`` levels; a PackML unit is not entered."""
    out: list[tuple[str, Node, ua.NodeId]] = []

    async def walk(node: Node, prefix: str, level: int) -> None:
        for child in await node.get_children(refs=ua.ObjectIds.HierarchicalReferences,
                                             nodeclassmask=ua.NodeClass.Object):
            name = str((await child.read_browse_name()).Name)
            if child.nodeid.NamespaceIndex == 0 or name in ("Machines", "DeviceSet"):
                continue
            path = f"{prefix}/{name}" if prefix else name
            type_id = await child.read_type_definition() or ua.NodeId()
            out.append((path, child, type_id))
            if level > 1 and not is_packml_type(type_id, table):
                await walk(child, path, level - 1)

    await walk(client.nodes.objects, "", depth)
    return out


async def _packml_unit(path: str, node: Node) -> BrowsedMachine:
    name = path.rsplit("/", 1)[-1]
    return BrowsedMachine(name, "PackMLBaseObjectType", ("packml",),
                          await _numeric_variables(node, "", 1), path=path)


#: ``nodes`` field -> (node class, what the value is, a name pattern), tried in this order.
NODE_HINTS: tuple[tuple[str, ua.NodeClass, str, str], ...] = (
    ("start", ua.NodeClass.Method, "method", r"^start"),
    ("abort", ua.NodeClass.Method, "method", r"abort|^stop"),
    ("trigger", ua.NodeClass.Variable, "bool", r"start|trigger"),
    ("job_id", ua.NodeClass.Variable, "str", r"job|order|batch"),
    ("done_counter", ua.NodeClass.Variable, "int", r"done|count|parts|good"),
    ("busy", ua.NodeClass.Variable, "bool", r"busy|running|active"),
    ("fault", ua.NodeClass.Variable, "bool", r"fault|error|alarm"),
    ("alarm_text", ua.NodeClass.Variable, "str", r"alarm|message|fault"),
    ("quality", ua.NodeClass.Variable, "str", r"quality|result"),
)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    return "str" if isinstance(value, str) else "?"


async def _legacy(path: str, node: Node) -> BrowsedMachine | None:
    """A ``nodes`` mapping suggested from the names of an object's methods and variables,
    or None when it has no way to start a job and no counter."""
    children = []
    for child in await node.get_children(refs=ua.ObjectIds.HierarchicalReferences):
        cls = await child.read_node_class()
        if cls not in (ua.NodeClass.Method, ua.NodeClass.Variable):
            continue
        kind = "method"
        if cls == ua.NodeClass.Variable:
            try:
                kind = _kind(await child.read_value())
            except ua.UaError:
                continue
        children.append((str((await child.read_browse_name()).Name), cls, kind))
    mapping: dict[str, str] = {}
    for field_name, cls, kind, pattern in NODE_HINTS:
        for name, c, k in children:
            if c == cls and k == kind and name not in mapping.values() and \
                    re.search(pattern, name, re.IGNORECASE):
                mapping[field_name] = name
                break
    if "start" in mapping:
        mapping.pop("trigger", None)
        mapping.pop("job_id", None)
    elif not {"trigger", "job_id"} <= set(mapping):
        return None
    if "done_counter" not in mapping:
        return None
    used = set(mapping.values())
    readings = {k: v for k, v in (await _numeric_variables(node, "", 0)).items()
                if v not in used}
    return BrowsedMachine(path.rsplit("/", 1)[-1], await _type_name(node), ("nodes",),
                          readings, path=path, nodes=mapping)


async def check_machine(machine: str, settings: OpcUaEquipment, pki: OpcUaPki,
                        credentials: Credentials | None) -> CheckLine:
    """One configured machine: reachable, secured as configured, every node there."""
    security = ("None (insecure)" if settings.insecure
                else f"{settings.security.policy}/{settings.security.mode}")
    params = SessionParams(settings.endpoint, settings, pki, credentials)
    try:
        client = await open_session(params)
    except (LinkError, OSError) as exc:
        return CheckLine(machine, settings.endpoint, security, False, (str(exc),))
    try:
        await client.load_data_type_definitions()
        profile = make_profile(settings.machine or machine, settings)
        await profile.resolve(client, await client.get_namespace_array())
    except jobs.MissingNode as exc:
        return CheckLine(machine, settings.endpoint, security, False, (str(exc),))
    except (ua.UaError, OSError) as exc:
        return CheckLine(machine, settings.endpoint, security, False,
                         (f"{type(exc).__name__}: {exc}",))
    finally:
        await _close(client)
    return CheckLine(machine, settings.endpoint, security, True)


async def fetch_certificate(endpoint: str, settings: OpcUaEquipment) -> tuple[bytes, str]:
    """The server certificate an endpoint presents, and its thumbprint."""
    der = await server_certificate(endpoint, settings)
    return der, thumbprint(der)


def certificate_summary(der: bytes) -> dict[str, Any]:
    from cryptography import x509

    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    return {"subject": cert.subject.rfc4514_string(), "application_uri": uris[0] if uris else "",
            "not_after": cert.not_valid_after_utc.isoformat(), "thumbprint": thumbprint(der)}


async def _close(client: Client) -> None:
    try:
        await client.disconnect()
    except Exception:  # noqa: BLE001 - closing a session that may be gone
        pass
