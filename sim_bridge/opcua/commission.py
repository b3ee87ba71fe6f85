"""Commissioning: what a server offers (``equipment browse``), whether a cell's machines
are reachable as configured (``equipment check``), and trusting a server (``equipment trust``).

These open the same secured sessions as the gateway (:mod:`.session`) and
find nodes with the same profile code (:mod:`.profiles`), so a machine that passes
``check`` is one the gateway can drive.  They return plain data; the CLI
(``ops/equipment.py``) prints it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from asyncua import Client, Node, ua

from agents.cell.equipment import OpcUaEquipment

from . import jobs
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
        elif cls == ua.NodeClass.Object and name not in ("MachineryBuildingBlocks",
                                                          "Identification"):
            out.update(await _numeric_variables(child, path, depth - 1))
    return out


async def browse(params: SessionParams) -> list[BrowsedMachine]:
    """Every machine in the server's Machinery ``Machines`` folder."""
    client = await open_session(params)
    try:
        table: list[str] = await client.get_namespace_array()
        if jobs.NS_MACHINERY not in table:
            raise LinkError(params.endpoint, "the server has no Machinery namespace "
                                             "(OPC 40001-1); map a legacy machine's nodes with "
                                             "the `nodes` profile (docs/equipment.md)")
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
        return sorted(found, key=lambda m: m.name)
    finally:
        await _close(client)


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
