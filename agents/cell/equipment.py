"""How a resource on real equipment is reached: a machine's ``opcua:`` block, a robot's
``vda5050:`` block.

A machine whose ``backend`` is ``opcua`` names the OPC UA server that runs
it, the companion specification it speaks (its *profile*), how the link is
secured, and which variables are its readings.  The gateway
(:mod:`sim_bridge.opcua`) reads these settings; this module only says what a
cell file may write, so ``autocell validate`` checks it with the rest of the
cell.  docs/equipment.md is the commissioning guide.

Security is on by default: Basic256Sha256 with SignAndEncrypt, the server's
certificate checked against the gateway's trust list.  A link without
security needs ``insecure: true``, which ``validate`` warns about.
Credentials never stand in the cell file: ``user`` names an entry of the
secrets file (``security.opcua_secrets``), which must be 0600.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

__all__ = ["OPCUA_PROFILES", "OpcUaEquipment", "OpcUaNodes", "OpcUaPackML", "OpcUaSecurity",
           "Vda5050Vehicle"]

#: How a machine may be driven (docs/equipment.md): a companion specification, or an
#: explicit mapping of a legacy machine's nodes.
OPCUA_PROFILES: tuple[str, ...] = ("machinery-jobs", "packml", "nodes")

Endpoint = Annotated[str, StringConstraints(pattern=r"^opc\.tcp://[^\s/:]+(:\d{1,5})?(/\S*)?$",
                                            max_length=512)]


def _check_profile(value: str) -> str:
    if value not in OPCUA_PROFILES:
        raise ValueError(
            f"unknown OPC UA profile {value!r}: use {', '.join(map(repr, OPCUA_PROFILES))}")
    return value


Profile = Annotated[str, AfterValidator(_check_profile)]
BrowsePath = Annotated[str, StringConstraints(pattern=r"^[^\s/][^/]*(/[^\s/][^/]*)*$",
                                              max_length=512)]
#: A node of a legacy machine: a browse path below the machine object (as ``readings``), or
#: a NodeId with its namespace named by URI (``nsu=URI;s=Name`` or ``nsu=URI;i=42``), never
#: by index, since a server may renumber its namespaces when it restarts.
NodeRef = Annotated[str, StringConstraints(
    pattern=r"^(nsu=[^;\s]+;(s=\S.*|i=\d+)|[^\s/][^/]*(/[^\s/][^/]*)*)$", max_length=512)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class OpcUaSecurity(_Model):
    """The secure channel: policy and message security mode."""

    policy: Literal["Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"] = Field(
        default="Basic256Sha256", description="OPC UA security policy of the secure channel.")
    mode: Literal["SignAndEncrypt", "Sign"] = Field(
        default="SignAndEncrypt", description="Message security mode.")


class OpcUaNodes(_Model):
    """The ``nodes`` profile: which nodes of a legacy machine start a job, say it ended, and
    say it is down (docs/equipment.md, "Legacy machines")."""

    start: NodeRef | None = Field(
        default=None,
        description="Method that starts a job: called with (JobId: String, DurationS: Double), "
        "returns an Int32 status, 0 = started. Give `start` or `trigger`.")
    trigger: NodeRef | None = Field(
        default=None,
        description="Boolean variable the gateway sets true to start a job (after writing "
        "`job_id`); the machine resets it. Give `start` or `trigger`.")
    job_id: NodeRef | None = Field(
        default=None,
        description="String variable the job id is written to before `trigger` is set; "
        "required with `trigger`.")
    done_counter: NodeRef = Field(
        description="UInt32/Int32 variable the machine increments when a job ends: an "
        "increment ends the running job.")
    busy: NodeRef | None = Field(
        default=None,
        description="Boolean variable, true while a job runs; lets a reconnect tell a job "
        "that was lost (a restarted machine) from one still running.")
    fault: NodeRef | None = Field(
        default=None, description="Boolean variable: true = the machine is down.")
    alarm_text: NodeRef | None = Field(
        default=None, description="String variable: why the machine is down (the fault's "
        "reason).")
    quality: NodeRef | None = Field(
        default=None,
        description="String variable read when a job ends; values in `quality_ok` are a good "
        "part, any other is scrap. Absent: every part is good.")
    abort: NodeRef | None = Field(
        default=None,
        description="Method without arguments that stops the running job. Absent: an abort "
        "hands the job back and the machine finishes it unreported.")

    @model_validator(mode="after")
    def _one_way_to_start(self) -> OpcUaNodes:
        if (self.start is None) == (self.trigger is None):
            raise ValueError("give exactly one of `start` (a method) and `trigger` (a Boolean "
                             "variable)")
        if self.trigger is not None and self.job_id is None:
            raise ValueError("`trigger` needs `job_id`: the String variable the job id is "
                             "written to first")
        if self.start is not None and self.job_id is not None:
            raise ValueError("`job_id` goes with `trigger`; a `start` method takes the job id "
                             "as its argument")
        return self

    def mapped(self) -> dict[str, str]:
        """Field name -> node reference, for every node given."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


class OpcUaPackML(_Model):
    """The ``packml`` profile: which ``Start`` parameters carry the job (docs/equipment.md,
    "PackML machines")."""

    job_parameter: int = Field(
        default=1, ge=0, le=2**31 - 1,
        description="ID of the PackMLDescriptorDataType that carries the job id `<task>@<award "
        "epoch>` in its Name, in the Parameter array of `Start` and, while the job is the "
        "machine's, of `Status/Parameter`: the machine refuses a Start with an id it ran.")
    duration_parameter: int | None = Field(
        default=2, ge=0, le=2**31 - 1,
        description="ID of the descriptor whose Value is the operation's duration in cell "
        "seconds (Name `duration_s`); null: not sent (the machine knows its own cycle).")

    @model_validator(mode="after")
    def _distinct(self) -> OpcUaPackML:
        if self.job_parameter == self.duration_parameter:
            raise ValueError("`job_parameter` and `duration_parameter` must be different IDs")
        return self


class OpcUaEquipment(_Model):
    """One machine on an OPC UA server (``backend: opcua``)."""

    endpoint: Endpoint = Field(
        description="The server's endpoint URL, e.g. `opc.tcp://mill1.plant:4840`. Machines "
        "on the same endpoint share one connection.")
    profile: Profile = Field(
        default="machinery-jobs",
        description="How the machine is driven: `machinery-jobs` (OPC 40001-3 Machinery Job "
        "Management), `packml` (OPC 30050 PackML: Start, Abort, Clear, Reset on the unit's "
        "state machines) or `nodes` (an explicit mapping of a legacy machine, in `nodes`).")
    machine: str | None = Field(
        default=None, min_length=1, max_length=256,
        description="`machinery-jobs`: browse name of the machine object under the server's "
        "Machinery `Machines` folder. `packml`, `nodes`: browse path of the machine object below "
        "`Objects` (e.g. `PLC1/Press`) or its NodeId (`nsu=URI;s=...`). Default: the machine id.")
    nodes: OpcUaNodes | None = Field(
        default=None,
        description="The `nodes` profile's mapping (required for it, refused for the others).")
    packml: OpcUaPackML | None = Field(
        default=None,
        description="The `packml` profile's job parameters (optional; refused for the others).")
    security: OpcUaSecurity = Field(
        default_factory=OpcUaSecurity, description="Security policy and mode of the link.")
    insecure: bool = Field(
        default=False,
        description="Connect without any security (policy None). Only for a test bench; "
        "`autocell validate` warns about it.")
    user: str | None = Field(
        default=None, min_length=1, max_length=128,
        description="Entry of the secrets file (`security.opcua_secrets`) whose username and "
        "password log in; absent: anonymous.")
    grace_s: float = Field(
        default=5.0, ge=0, le=3600,
        description="Wall seconds a lost link may last before the machine is reported down "
        "and its work re-routed.")
    readings: dict[Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_]*$",
                                                    max_length=64)], BrowsePath] = Field(
        default_factory=dict, max_length=64,
        description="Reading name -> browse path of the variable below the machine object, "
        "e.g. `spindle_load: Monitoring/SpindleLoad`; each change becomes a `reading` event.")
    quality_parameter: str = Field(
        default="Quality", min_length=1, max_length=128,
        description="ID of the job response parameter that holds the quality result.")
    quality_ok: list[str] = Field(
        default_factory=lambda: ["ok", "good", "OK"], min_length=1, max_length=16,
        description="Values of the quality parameter that mean a good part; any other is scrap.")
    sessions: int = Field(
        default=1, ge=1, le=64,
        description="Sessions (secure channels) the gateway opens to this endpoint; the "
        "endpoint's machines are divided among them in cell-file order (the largest value "
        "given on the endpoint counts). More than one spreads a busy endpoint's requests "
        "over several channels (docs/equipment.md, \"Many machines on one endpoint\").")
    refusals_to_escalate: int = Field(
        default=3, ge=1, le=1000,
        description="Consecutive starts the server refuses before the machine's case is "
        "escalated to a supervisor as non-routine.")

    @model_validator(mode="after")
    def _nodes_with_their_profile(self) -> OpcUaEquipment:
        if self.profile == "nodes" and self.nodes is None:
            raise ValueError("profile `nodes` needs a `nodes:` block (start or trigger, "
                             "done_counter, ...)")
        if self.profile != "nodes" and self.nodes is not None:
            raise ValueError(f"a `nodes:` block is for profile `nodes`, not {self.profile!r}")
        if self.profile != "packml" and self.packml is not None:
            raise ValueError(f"a `packml:` block is for profile `packml`, not {self.profile!r}")
        return self

    @property
    def packml_settings(self) -> OpcUaPackML:
        """The ``packml:`` block, or its defaults."""
        return self.packml if self.packml is not None else OpcUaPackML()


_BROKER = r"^mqtts?://[^\s/:]+(:\d{1,5})?$"
_LOOPBACK = ("127.", "localhost", "[::1]", "::1")


class Vda5050Vehicle(_Model):
    """One transport robot as a VDA 5050 vehicle (``backend: vda5050``), autocell its master
    control over an MQTT broker."""

    broker: Annotated[str, StringConstraints(pattern=_BROKER, max_length=512)] = Field(
        description="The MQTT broker: `mqtts://HOST:PORT` (TLS, the default port 8883), or "
        "`mqtt://127.0.0.1:PORT` with `insecure: true` on loopback only. Vehicles on the "
        "same broker share one connection.")
    serial: str | None = Field(
        default=None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$",
        description="The vehicle's serialNumber; default: the robot id.")
    manufacturer: str = Field(
        default="autocell", min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$",
        description="The vehicle's manufacturer, as in its topics.")
    interface_name: str = Field(
        default="uagv", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$",
        description="The first level of the VDA 5050 topics.")
    map: str | None = Field(
        default=None, min_length=1, max_length=128,
        description="The map id the vehicle must report (its `agvPosition.mapId`); default: "
        "the layout's `map`, else `cell`. A vehicle on another map is held down (`wrong map`).")
    insecure: bool = Field(
        default=False,
        description="Plain MQTT without TLS; allowed only with an `mqtt://` broker on loopback.")
    ca: str | None = Field(
        default=None, min_length=1, max_length=1024,
        description="CA certificate (PEM) that signed the broker's certificate, relative to "
        "the cell file; absent: the system's trust store.")
    user: str | None = Field(
        default=None, min_length=1, max_length=128,
        description="Entry of the secrets file (`security.opcua_secrets`, shared by all "
        "equipment) whose username and password log in to the broker.")
    grace_s: float = Field(
        default=5.0, ge=0, le=3600,
        description="Wall seconds a vehicle may be OFFLINE or CONNECTIONBROKEN before it is "
        "reported down and its move re-negotiated.")
    action_parameters: dict[Annotated[str, StringConstraints(min_length=1, max_length=64)],
                            str | float] = Field(
        default_factory=lambda: dict[str, str | float](stationType="floor", loadType="EPAL"),
        max_length=16,
        description="actionParameters of every pick and drop (what the vehicle needs to know "
        "of the station and the load); default a floor station and a Euro pallet.")
    pick_action: str = Field(default="pick", min_length=1, max_length=64,
                             description="actionType that loads the part at the origin.")
    drop_action: str = Field(default="drop", min_length=1, max_length=64,
                             description="actionType that unloads it at the destination.")

    @model_validator(mode="after")
    def _secure_unless_told(self) -> Vda5050Vehicle:
        plain = self.broker.startswith("mqtt://")
        host = self.broker.split("://", 1)[1]
        if plain and not self.insecure:
            raise ValueError("a plain `mqtt://` broker needs `insecure: true` (and loopback); "
                             "use `mqtts://` in production")
        if plain and not host.startswith(_LOOPBACK):
            raise ValueError(f"plain MQTT is allowed on loopback only, not {host!r}; use "
                             "`mqtts://`")
        if self.insecure and not plain:
            raise ValueError("`insecure: true` is for a plain `mqtt://` broker on loopback")
        return self
