"""Batched method calls (sim_bridge/opcua/batch.py) and sessions per endpoint, on a fake session.

No OPC UA server here: the session is a stand-in that records each CallRequest, so what is
checked is what the batch sends and what each caller gets back.  The backend over real
servers is tests/test_opcua_backend.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asyncua import Node, ua

from agents.cell.equipment import OpcUaEquipment
from sim_bridge.opcua import batch
from sim_bridge.opcua.backend import OpcUaMachine, session_keys


class FakeSession:
    """Answers each method with its input doubled; a method id of 99 fails Bad."""

    def __init__(self, limit: int = 0, refuse_many: bool = False) -> None:
        self.requests: list[list[ua.CallMethodRequest]] = []
        self.limit = limit
        self.refuse_many = refuse_many

    async def read(self, params: Any) -> list[ua.DataValue]:
        return [ua.DataValue(ua.Variant(self.limit, ua.VariantType.UInt32))]

    async def call(self, methods: list[ua.CallMethodRequest]) -> list[ua.CallMethodResult]:
        await asyncio.sleep(0)
        if self.refuse_many and len(methods) > 1:
            raise ua.UaStatusCodeError(ua.StatusCodes.BadTooManyOperations)
        self.requests.append(methods)
        out = []
        for m in methods:
            if m.MethodId == ua.NodeId(99):
                out.append(ua.CallMethodResult(StatusCode=ua.StatusCode(
                    ua.StatusCodes.BadUserAccessDenied)))
            else:
                value = m.InputArguments[0].Value * 2
                out.append(ua.CallMethodResult(OutputArguments=[ua.Variant(value)]))
        return out


def _node(session: FakeSession, i: int) -> Node:
    return Node(session, ua.NodeId(1000 + i))


def test_calls_of_one_turn_go_in_one_request() -> None:
    session = FakeSession()

    async def main() -> list[Any]:
        return await asyncio.gather(*[batch.call(_node(session, i), ua.NodeId(7), i)
                                      for i in range(50)])

    assert asyncio.run(main()) == [2 * i for i in range(50)]
    assert [len(r) for r in session.requests] == [batch.MAX_CALLS] * (50 // batch.MAX_CALLS)
    assert session.requests[0][3].ObjectId == ua.NodeId(1003)


def test_a_single_call_is_sent_alone_and_a_bad_status_is_raised_to_its_caller_only() -> None:
    session = FakeSession()

    async def main() -> tuple[Any, Any]:
        alone = await batch.call(_node(session, 0), ua.NodeId(7), 21)
        results = await asyncio.gather(batch.call(_node(session, 1), ua.NodeId(99), 1),
                                       batch.call(_node(session, 2), ua.NodeId(7), 5),
                                       return_exceptions=True)
        return alone, results

    alone, (bad, good) = asyncio.run(main())
    assert alone == 42 and good == 10
    assert isinstance(bad, ua.UaStatusCodeError)
    assert bad.code == ua.StatusCodes.BadUserAccessDenied
    assert [len(r) for r in session.requests] == [1, 2]


def test_the_servers_limit_cuts_a_batch_and_too_many_falls_back_to_one_call_each() -> None:
    limited, refusing = FakeSession(limit=4), FakeSession(refuse_many=True)

    async def main(session: FakeSession) -> list[Any]:
        return await asyncio.gather(*[batch.call(_node(session, i), ua.NodeId(7), i)
                                      for i in range(9)])

    assert asyncio.run(main(limited)) == [2 * i for i in range(9)]
    assert [len(r) for r in limited.requests] == [4, 4, 1]
    assert asyncio.run(main(refusing)) == [2 * i for i in range(9)]
    assert [len(r) for r in refusing.requests] == [1] * 9


def test_a_lost_link_fails_every_caller_of_the_request() -> None:
    class Lost(FakeSession):
        async def call(self, methods: list[ua.CallMethodRequest]) -> list[ua.CallMethodResult]:
            raise ConnectionError("client is disconnected")

    session = Lost()

    async def main() -> list[Any]:
        return await asyncio.gather(*[batch.call(_node(session, i), ua.NodeId(7), i)
                                      for i in range(3)], return_exceptions=True)

    assert all(isinstance(r, ConnectionError) for r in asyncio.run(main()))


@pytest.mark.parametrize("sessions, expected", [
    (1, ["e1", "e1", "e1", "e1", "e1", "e2"]),
    (2, ["e1#1", "e1#2", "e1#1", "e1#2", "e1#1", "e2"]),
    (8, ["e1#1", "e1#2", "e1#3", "e1#4", "e1#5", "e2"]),
])
def test_an_endpoints_machines_are_dealt_to_its_sessions(sessions: int,
                                                         expected: list[str]) -> None:
    machines = [OpcUaMachine(f"m{i}", OpcUaEquipment(endpoint="opc.tcp://h:1",
                                                     sessions=sessions if i == 0 else 1))
                for i in range(5)]
    machines.append(OpcUaMachine("x", OpcUaEquipment(endpoint="opc.tcp://h:2")))
    keys = [key.replace("opc.tcp://h:1", "e1").replace("opc.tcp://h:2", "e2")
            for _spec, key in session_keys(machines)]
    assert keys == expected
