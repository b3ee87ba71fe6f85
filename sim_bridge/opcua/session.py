"""Opening one secured OPC UA session, with errors an automation engineer can act on.

Theory of operation
-------------------
:func:`open_session` is the one place a client connects (the gateway, the
commissioning commands, the benchmark).  Security is decided before a byte
of the session is sent:

1. Unless ``insecure``, the server's endpoints are read over an unsecured
   discovery channel (as every OPC UA client does), the endpoint with the
   configured policy and mode is picked — none: :class:`LinkError` naming what
   the server offers — and its certificate is checked against the trust list
   (:meth:`~sim_bridge.opcua.pki.OpcUaPki.check`; untrusted:
   :class:`~sim_bridge.opcua.pki.UntrustedServer`).
2. The session is opened with the gateway's certificate, under that policy
   and mode, as the configured user (credentials from the secrets file).
   asyncua verifies that the server signs with the certificate that was
   checked; a refusal of our certificate or of the user becomes a
   :class:`LinkError` saying which.

``insecure: true`` skips both and connects with policy None.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from asyncua import Client, ua
from asyncua.crypto import security_policies

from agents.cell.equipment import OpcUaEquipment
from security.errors import ConfigurationError

from .pki import APPLICATION_URI, Credentials, OpcUaPki

__all__ = ["LinkError", "SessionParams", "open_session", "server_certificate"]

POLICIES: dict[str, type[security_policies.SecurityPolicy]] = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
    "Aes128_Sha256_RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
    "Aes256_Sha256_RsaPss": security_policies.SecurityPolicyAes256Sha256RsaPss,
}

#: Status codes a server answers to a refused identity or certificate, and what they mean.
REFUSALS: dict[str, str] = {
    "BadUserAccessDenied": "the user may not log in or do this",
    "BadIdentityTokenInvalid": "the username or password is wrong",
    "BadIdentityTokenRejected": "the username or password is wrong",
    "BadSecurityChecksFailed": "the server does not trust the gateway's certificate "
                               "(trust KEYS/opcua/own/cert.der on the server)",
    "BadCertificateUntrusted": "the server does not trust the gateway's certificate "
                               "(trust KEYS/opcua/own/cert.der on the server)",
    "BadSecurityPolicyRejected": "the server refuses this security policy",
}


class LinkError(ConfigurationError):
    """The link to a server could not be opened; the message says why and what to do."""

    def __init__(self, endpoint: str, problem: str, *, transient: bool = False) -> None:
        self.endpoint = endpoint
        self.problem = problem
        self.transient = transient        # worth retrying as is (network), or not (config)
        super().__init__(f"{endpoint}: {problem}")


@dataclass(frozen=True)
class SessionParams:
    """What it takes to open a session to one endpoint."""

    endpoint: str
    settings: OpcUaEquipment
    pki: OpcUaPki
    credentials: Credentials | None
    timeout_s: float = 4.0


def status_name(exc: BaseException) -> str:
    """The OPC UA status name of an error, or its class name."""
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        try:
            return ua.StatusCode(ua.UInt32(code)).name
        except Exception:  # noqa: BLE001 - an unknown code still has a number
            return f"0x{code:08X}"
    return type(exc).__name__


async def server_certificate(endpoint: str, settings: OpcUaEquipment,
                             timeout_s: float = 4.0) -> bytes:
    """The certificate of the endpoint with the configured policy and mode (discovery)."""
    client = Client(endpoint, timeout=timeout_s)
    try:
        endpoints = await client.connect_and_get_server_endpoints()
    except (OSError, TimeoutError, asyncio.TimeoutError) as exc:
        raise LinkError(endpoint, f"unreachable: {exc or type(exc).__name__}",
                        transient=True) from None
    except ua.UaError as exc:
        raise LinkError(endpoint, f"discovery failed: {status_name(exc)}", transient=True) from None
    policy = POLICIES[settings.security.policy]
    mode = getattr(ua.MessageSecurityMode, settings.security.mode)
    for ep in endpoints:
        if ep.SecurityMode == mode and ep.SecurityPolicyUri == policy.URI:
            cert: bytes = ep.ServerCertificate
            return cert
    offered = sorted({f"{ep.SecurityPolicyUri.rsplit('#', 1)[-1]}/{ep.SecurityMode.name}"
                      for ep in endpoints})
    raise LinkError(endpoint, f"the server offers no {settings.security.policy}/"
                              f"{settings.security.mode} endpoint (it offers "
                              f"{', '.join(offered)})")


async def open_session(p: SessionParams) -> Client:
    """A connected, secured client for ``p.endpoint``; :class:`LinkError` otherwise."""
    client = Client(p.endpoint, timeout=p.timeout_s)
    client.application_uri = APPLICATION_URI
    client.name = client.description = "autocell gateway"
    client.session_timeout = 60_000
    if not p.settings.insecure:
        server_der = await server_certificate(p.endpoint, p.settings, p.timeout_s)
        p.pki.check(p.endpoint, server_der)
        p.pki.ensure_own()          # created once; asyncua reads the files by their suffix
        await client.set_security(
            POLICIES[p.settings.security.policy], str(p.pki.cert_path), str(p.pki.key_path),
            server_certificate=server_der,
            mode=getattr(ua.MessageSecurityMode, p.settings.security.mode))
    if p.credentials is not None:
        client.set_user(p.credentials.username)
        client.set_password(p.credentials.password)
    try:
        await client.connect()
    except (OSError, TimeoutError, asyncio.TimeoutError) as exc:
        raise LinkError(p.endpoint, f"unreachable: {exc or type(exc).__name__}",
                        transient=True) from None
    except ua.UaError as exc:
        name = status_name(exc)
        await _quietly_close(client)
        why = REFUSALS.get(name)
        if why is None:
            raise LinkError(p.endpoint, f"session refused: {name}", transient=True) from None
        raise LinkError(p.endpoint, f"session refused: {name}: {why}") from None
    return client


async def _quietly_close(client: Client) -> None:
    try:
        await client.disconnect()
    except Exception:  # noqa: BLE001 - the link is being given up anyway
        pass
