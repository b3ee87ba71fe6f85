"""Fault scenarios (``cell_configs/faults/*.yaml``): what goes wrong, and when.

A scenario is played by ``autocell run CELL --faults FILE`` in virtual time
and by ``autocell up CELL --faults FILE`` on real processes.  Times are
seconds of cell time from the start of the run.  It is validated like a
cell file — every problem as ``FILE:LINE: path: message`` — and against
the cell it is played on: every agent, resource and host it names must
exist there.  Those two checks need the YAML and the whole cell, so they
live with the loader (:mod:`ops.config.fault_files`); these are the models.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from agents.cell.limits import MAX_SECONDS
from agents.cell.model import (
    Fraction,
    Name,
    PositiveSeconds,
    Seconds,
    _Model,
)

__all__ = ["AgentCrash", "Breakdown", "ClockSkewFault", "FaultScenario", "HostFault",
           "NetworkFaults", "Partition"]


class Breakdown(_Model):
    """A machine or robot breaks down at ``at_s`` and is repaired ``repair_s`` later."""

    resource: Name = Field(description="Machine or robot id.")
    at_s: Seconds = Field(description="When it breaks, seconds from the start.")
    repair_s: PositiveSeconds = Field(description="Repair time, seconds.")


class AgentCrash(_Model):
    """An agent's process state is lost; its host restarts it from the journal."""

    agent: Name = Field(description="Agent id (machine, robot or order).")
    at_s: Seconds = Field(description="When it crashes, seconds from the start.")
    down_s: Seconds = Field(default=1.0, description="Time until it is restarted, seconds.")


class HostFault(_Model):
    """A whole host is killed (``kill -9``, then restarted) or paused (``SIGSTOP``/``SIGCONT``)."""

    host: Name = Field(description="Host name from the cell's `hosts` section.")
    action: Literal["kill", "pause"] = Field(description="`kill` or `pause`.")
    at_s: Seconds = Field(description="When, seconds from the start.")
    duration_s: Seconds = Field(
        default=1.0,
        description="Pause length; for `kill`, the time until the restart in virtual time "
                    "(real processes are restarted by the supervisor as soon as it sees the "
                    "death).")


class NetworkFaults(_Model):
    """Message faults for the whole run, on top of the cell's own network model."""

    loss: Fraction = Field(default=0.0, description="Probability a message is dropped.")
    duplication: Fraction = Field(default=0.0, description="Probability of a second copy.")
    reorder: Fraction = Field(default=0.0, description="Probability a message is held back.")
    delay_s: Seconds = Field(default=0.0, description="Extra latency, seconds.")
    jitter_s: Seconds = Field(default=0.0, description="Random extra delay up to this, seconds.")

    @field_validator("loss")
    @classmethod
    def _possible(cls, loss: float) -> float:
        if loss >= 0.5:
            raise ValueError(f"loss {loss} is not a network, it is an outage: use a "
                             "partition for that (loss must be < 0.5)")
        return loss


class Partition(_Model):
    """``agents`` are cut off from every other agent from ``at_s`` for ``duration_s``."""

    agents: list[Name] = Field(min_length=1, description="Agents on the far side of the cut.")
    at_s: Seconds = Field(description="When the cut starts, seconds from the start.")
    duration_s: PositiveSeconds = Field(description="How long it lasts, seconds.")


class ClockSkewFault(_Model):
    """An agent's clock is off by ``offset_s`` (its envelope timestamps), from ``at_s``."""

    agent: Name = Field(description="Agent id.")
    offset_s: float = Field(ge=-MAX_SECONDS, le=MAX_SECONDS, description="Clock offset, seconds (may be negative).")
    at_s: Seconds = Field(default=0.0, description="When the skew starts, seconds.")


class FaultScenario(_Model):
    """A fault scenario: breakdowns, crashes, host faults, network faults, partitions, skew."""

    name: Name = Field(description="Scenario name.")
    description: str = Field(default="", description="Free text for people.")
    mtbf_breakdowns: bool = Field(
        default=True, description="Keep the random breakdowns drawn from each machine's "
                                  "MTBF/MTTR (set false to play only the listed ones).")
    breakdowns: list[Breakdown] = Field(default_factory=list, description="Breakdowns.")
    crashes: list[AgentCrash] = Field(default_factory=list, description="Agent crashes.")
    hosts: list[HostFault] = Field(default_factory=list, description="Host kills and pauses.")
    network: NetworkFaults = Field(default_factory=NetworkFaults, description="Message faults.")
    partitions: list[Partition] = Field(default_factory=list, description="Partitions.")
    clock_skew: list[ClockSkewFault] = Field(default_factory=list, description="Clock skews.")

    _source: str = "<dict>"

    @property
    def source(self) -> str:
        return self._source

    def needs_journal(self) -> bool:
        return bool(self.crashes or any(h.action == "kill" for h in self.hosts))
