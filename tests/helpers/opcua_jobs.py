"""The job book of the asyncua machine emulator: ISA-95 job orders per machine, no OPC UA.

``tests/helpers/opcua_server.py`` exposes one :class:`MachineJobs` per machine through the
Machinery Jobs methods (StoreAndStart, Abort, Clear, RequestJobResponseByJobOrderID); this
module holds what those methods *mean*, so the rules of the contract
(``/work/prompts/opcua_contract.md``, mirrored in ``tests/opcua/CONTRACT.md``) read in one
place and the OPC UA layer only translates values and runs timers.

Theory of operation
-------------------
A job order moves through the ISA-95 states of OPC 10031-4 (ISA95JobOrderReceiverObjectType):
StoreAndStart takes it straight to ``Running``; its timer (owned by the caller) ends it as
``Ended``; Abort makes a ``Running`` or ``AllowedToStart`` job ``Aborted``; Clear removes an
``Ended`` or ``Aborted`` job from the list while its response stays retrievable.

The machine refuses a duplicate itself: a JobOrderID the server has *accepted* once — in
this life, or in an earlier life recorded in the same job log — is refused with ReturnStatus
3 (UnableToAcceptJobOrder), as is any order while the machine already runs one.  A refused
order does not consume its id (the machine never stored it), so ``seen`` holds accepted ids
only; the job log records refusals too, with ``why``.

Where the contract is silent the standard's ReturnStatus codes answer: Abort of a job that
is no longer running and Clear of one that has not finished give 2 (InvalidJobOrderStatus);
a StoreAndStart without a JobOrderID or a ``duration_s`` gives 4 (InvalidRequest).  A job's
response is available from its start (JobState ``Running``, no JobResponseData) and carries
Quality ``ok`` once it is final.

The job log is the server's own record, one JSON object per line, flushed and fsynced per
line so that it survives ``kill -9``: the tests count executions from it, and a restarted
server replays it to rebuild ``seen``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: ISA95 job order state names and their standard numbers (ISA95JobOrderStateMachine).
STATE_NUMBERS = {"NotAllowedToStart": 1, "AllowedToStart": 2, "Running": 3,
                 "Interrupted": 4, "Ended": 5, "Aborted": 6}

# ISA95 method ReturnStatus values (OPC 10031-4, the JobOrderReceiver methods).
OK = 0
UNKNOWN_JOB_ORDER_ID = 1
INVALID_JOB_ORDER_STATUS = 2
UNABLE_TO_ACCEPT_JOB_ORDER = 3
INVALID_REQUEST = 4

FINAL_STATES = ("Ended", "Aborted")


class JobLog:
    """Append-only JSON lines, each flushed and fsynced before the call returns."""

    def __init__(self, path: Path | None, now_iso: Callable[[], str]) -> None:
        self._path = path
        self._now_iso = now_iso
        self._file = open(path, "a", encoding="utf-8") if path is not None else None
        if path is not None and self._file is not None and _ends_torn(path):
            self._file.write("\n")      # a line torn by kill -9 must not swallow the next one

    def write(self, machine: str, job: str, event: str, why: str | None = None) -> None:
        if self._file is None:
            return
        line: dict[str, Any] = {"t": self._now_iso(), "machine": machine, "job": job,
                                "event": event}
        if why is not None:
            line["why"] = why
        self._file.write(json.dumps(line, sort_keys=True) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _ends_torn(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() == 0:
            return False
        f.seek(-1, os.SEEK_END)
        return f.read(1) != b"\n"


def accepted_ids(path: Path | None) -> set[str]:
    """The JobOrderIDs an earlier life of the server started, read from its job log.

    A torn last line (the process died mid-write, before the fsync) is skipped: that
    line's call never returned, so the client never saw it accepted either.
    """
    if path is None or not path.exists():
        return set()
    seen: set[str] = set()
    for raw in path.read_text(encoding="utf-8").splitlines():
        try:
            line = json.loads(raw)
        except json.JSONDecodeError:
            continue
        if isinstance(line, dict) and line.get("event") == "started":
            seen.add(str(line.get("job")))
    return seen


@dataclass
class Job:
    """One job order as the machine holds it."""

    job_id: str
    order: Any                      # the ISA95JobOrderDataType as received
    duration_s: float
    state: str = "Running"
    started_at: Any = None          # datetime, for the job response
    ended_at: Any = None
    cleared: bool = False


@dataclass
class MachineJobs:
    """The job orders of one machine; ``seen`` is shared by every machine of the server."""

    machine: str
    seen: set[str]
    log: JobLog
    jobs: dict[str, Job] = field(default_factory=dict)
    running: str | None = None

    def store_and_start(self, job_id: str, order: Any, duration_s: float | None,
                        now: Any) -> int:
        """Accept and start ``job_id`` (ReturnStatus 0) or refuse it (3, or 4 without a
        usable ``duration_s``), logging either."""
        if duration_s is None or duration_s < 0 or not job_id:
            self.log.write(self.machine, job_id, "refused",
                           why="no JobOrderID or no duration_s >= 0 among JobOrderParameters")
            return INVALID_REQUEST
        if job_id in self.seen:
            self.log.write(self.machine, job_id, "refused", why="duplicate JobOrderID")
            return UNABLE_TO_ACCEPT_JOB_ORDER
        if self.running is not None:
            self.log.write(self.machine, job_id, "refused",
                           why=f"busy with {self.running}")
            return UNABLE_TO_ACCEPT_JOB_ORDER
        self.seen.add(job_id)
        self.jobs[job_id] = Job(job_id, order, duration_s, started_at=now)
        self.running = job_id
        self.log.write(self.machine, job_id, "started")
        return OK

    def end(self, job_id: str, now: Any) -> bool:
        """The job's time is up: Running -> Ended.  False when it is no longer running."""
        job = self.jobs.get(job_id)
        if job is None or job.state != "Running":
            return False
        job.state, job.ended_at = "Ended", now
        self.running = None
        self.log.write(self.machine, job_id, "ended")
        return True

    def abort(self, job_id: str, now: Any) -> int:
        job = self.jobs.get(job_id)
        if job is None or job.cleared:
            return UNKNOWN_JOB_ORDER_ID
        if job.state not in ("Running", "AllowedToStart"):
            return INVALID_JOB_ORDER_STATUS
        job.state, job.ended_at = "Aborted", now
        if self.running == job_id:
            self.running = None
        self.log.write(self.machine, job_id, "aborted")
        return OK

    def clear(self, job_id: str) -> int:
        job = self.jobs.get(job_id)
        if job is None or job.cleared:
            return UNKNOWN_JOB_ORDER_ID
        if job.state not in FINAL_STATES:
            return INVALID_JOB_ORDER_STATUS
        job.cleared = True
        self.log.write(self.machine, job_id, "cleared")
        return OK

    def listed(self) -> list[Job]:
        """JobOrderList: every job not yet cleared, in the order they were stored."""
        return [job for job in self.jobs.values() if not job.cleared]

    def finished(self) -> list[Job]:
        """JobOrderResponseList: every ended or aborted job, cleared or not."""
        return [job for job in self.jobs.values() if job.state in FINAL_STATES]


def duration_of(parameters: Iterable[Any] | None) -> float | None:
    """The ``duration_s`` parameter (cell seconds) of a JobOrder, or None when absent."""
    for parameter in parameters or ():
        if getattr(parameter, "ID", None) == "duration_s":
            value = getattr(parameter, "Value", None)
            value = getattr(value, "Value", value)      # a Variant or a bare number
            try:
                return float(value)
            except (TypeError, ValueError):
                return None
    return None
