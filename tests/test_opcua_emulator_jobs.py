"""The asyncua emulator's job book (``tests/helpers/opcua_jobs.py``), without any OPC UA.

Table-driven: each case is a sequence of calls on one machine and the ReturnStatus each
must give; the job log and its replay are checked on a real file (a torn last line, as
``kill -9`` mid-write leaves it, is skipped).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.opcua_jobs import (
    INVALID_JOB_ORDER_STATUS, INVALID_REQUEST, OK, UNABLE_TO_ACCEPT_JOB_ORDER,
    UNKNOWN_JOB_ORDER_ID, JobLog, MachineJobs, accepted_ids, duration_of)

NOW = "2026-01-01T00:00:00+00:00"

CASES = {
    "start, end, clear": [("start", "a", OK), ("end", "a", True), ("clear", "a", OK)],
    "a duplicate id is refused, also after it ended": [
        ("start", "a", OK), ("start", "a", UNABLE_TO_ACCEPT_JOB_ORDER), ("end", "a", True),
        ("start", "a", UNABLE_TO_ACCEPT_JOB_ORDER)],
    "a busy machine refuses, and the refused id stays free": [
        ("start", "a", OK), ("start", "b", UNABLE_TO_ACCEPT_JOB_ORDER), ("end", "a", True),
        ("start", "b", OK)],
    "abort a running job, then it cannot end": [
        ("start", "a", OK), ("abort", "a", OK), ("end", "a", False), ("abort", "a",
                                                                       INVALID_JOB_ORDER_STATUS)],
    "unknown ids": [("abort", "x", UNKNOWN_JOB_ORDER_ID), ("clear", "x", UNKNOWN_JOB_ORDER_ID)],
    "a running job cannot be cleared": [("start", "a", OK), ("clear", "a",
                                                             INVALID_JOB_ORDER_STATUS)],
    "a cleared job is gone from the list": [
        ("start", "a", OK), ("end", "a", True), ("clear", "a", OK),
        ("clear", "a", UNKNOWN_JOB_ORDER_ID)],
}


def apply(jobs: MachineJobs, op: str, job_id: str) -> object:
    if op == "start":
        return jobs.store_and_start(job_id, order=None, duration_s=1.0, now=NOW)
    if op == "end":
        return jobs.end(job_id, NOW)
    if op == "abort":
        return jobs.abort(job_id, NOW)
    return jobs.clear(job_id)


@pytest.mark.parametrize("steps", CASES.values(), ids=CASES.keys())
def test_job_book(steps: list[tuple[str, str, object]], tmp_path: Path) -> None:
    jobs = MachineJobs("m1", set(), JobLog(tmp_path / "log", lambda: NOW))
    assert [apply(jobs, op, job_id) for op, job_id, _ in steps] == [want for *_, want in steps]


def test_a_start_without_duration_is_an_invalid_request(tmp_path: Path) -> None:
    jobs = MachineJobs("m1", set(), JobLog(tmp_path / "log", lambda: NOW))
    assert jobs.store_and_start("a", order=None, duration_s=None, now=NOW) == INVALID_REQUEST
    assert jobs.store_and_start("a", order=None, duration_s=1.0, now=NOW) == OK


def test_the_log_is_replayed_to_refuse_ids_started_in_an_earlier_life(tmp_path: Path) -> None:
    path = tmp_path / "jobs.jsonl"
    log = JobLog(path, lambda: NOW)
    first = MachineJobs("m1", accepted_ids(path), log)
    assert first.store_and_start("a", None, 1.0, NOW) == OK
    assert first.store_and_start("b", None, 1.0, NOW) == UNABLE_TO_ACCEPT_JOB_ORDER   # busy
    log.close()
    with open(path, "a") as torn:
        torn.write('{"event": "started", "job": "c"')          # killed mid-write
    assert accepted_ids(path) == {"a"}
    again = MachineJobs("m1", accepted_ids(path), JobLog(path, lambda: NOW))
    assert again.store_and_start("a", None, 1.0, NOW) == UNABLE_TO_ACCEPT_JOB_ORDER
    raw = path.read_text().splitlines()
    assert [json.loads(line) for line in raw[:2]] == [
        {"t": NOW, "machine": "m1", "job": "a", "event": "started"},
        {"t": NOW, "machine": "m1", "job": "b", "event": "refused", "why": "busy with a"}]
    assert json.loads(raw[3]) == {"t": NOW, "machine": "m1", "job": "a", "event": "refused",
                                  "why": "duplicate JobOrderID"}


class _Parameter:
    def __init__(self, ID: str, Value: object) -> None:
        self.ID, self.Value = ID, Value


def test_duration_is_read_from_the_duration_s_parameter() -> None:
    assert duration_of([_Parameter("order", "o1"), _Parameter("duration_s", 4)]) == 4.0
    assert duration_of([_Parameter("order", "o1")]) is None
    assert duration_of(None) is None
    assert duration_of([_Parameter("duration_s", "soon")]) is None
