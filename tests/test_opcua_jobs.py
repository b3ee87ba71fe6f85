"""The machinery-jobs profile's pure parts: job ids, job lists, quality (no server)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace as NS
from typing import Any

from asyncua import ua

from sim_bridge.opcua import jobs


def entry(jid: str, number: int = 0, text: str = "") -> Any:
    state = NS(StateNumber=number, StateText=ua.LocalizedText(text))
    return NS(JobOrder=NS(JobOrderID=jid), State=[state])


def test_a_job_id_is_the_task_and_its_award_epoch() -> None:
    assert jobs.job_id("o7/2", 3) == "o7/2@3"


def test_a_job_list_gives_each_job_its_state_by_number_or_else_by_name() -> None:
    listed = [entry("a@1", 3), entry("b@1", 0, "Ended"), entry("c@2", 0, "Nonsense"),
              NS(JobOrder=NS(JobOrderID=None), State=[])]
    assert jobs.parse_job_list(listed) == {"a@1": jobs.RUNNING, "b@1": jobs.ENDED, "c@2": 0}
    assert jobs.parse_job_list(None) == {}


class _Session:
    """Answers every call with the response and ReturnStatus 0 (the calls go through the
    session's batch, sim_bridge/opcua/batch.py)."""

    def __init__(self, response: Any) -> None:
        self.response = response

    async def call(self, methods: list[Any]) -> list[Any]:
        return [NS(StatusCode=ua.StatusCode(), OutputArguments=[NS(Value=self.response),
                                                                 NS(Value=0)])
                for _m in methods]


class _Results:
    def __init__(self, response: Any) -> None:
        self.nodeid = ua.NodeId(1)
        self.session = _Session(response)


def quality(params: list[Any], ok: list[str]) -> str:
    nodes = NS(results=_Results(NS(JobResponseData=params)),
               methods={"RequestJobResponseByJobOrderID": None})
    ns = jobs.Namespaces(machinery=2, isa95=3, jobs=4, di=None)
    return asyncio.run(jobs.quality(ns, nodes, "a@1", "Quality", ok))  # type: ignore[arg-type]


def test_the_quality_parameter_maps_to_ok_or_scrap_and_a_silent_machine_is_ok() -> None:
    ok = ["ok", "good"]
    assert quality([NS(ID="Quality", Value=ua.Variant("good"))], ok) == "ok"
    assert quality([NS(ID="Quality", Value=ua.Variant("NOK"))], ok) == "scrap"
    assert quality([NS(ID="Other", Value=ua.Variant("NOK"))], ok) == "ok"
    assert quality([], ok) == "ok"
