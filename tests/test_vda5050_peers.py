"""The VDA 5050 test peers themselves: Mosquitto and vda-5050-lib's virtual vehicles (issue 15).

Before autocell's ``vda5050`` backend is tested against these peers, this
module pins down what they do, with nothing of autocell in the loop: a
minimal master control on ``aiomqtt`` sees each vehicle's connection, state
and factsheet, sends orders and instant actions, and checks what comes back
— every message both ways against the official VDA 5050 2.0.0 JSON schemas
(``sim_bridge/vda5050/schemas``, read here with ``jsonschema`` itself, not
through the backend).  The contract these tests hold the peers to is
tests/vda5050/CONTRACT.md.  Waits are on messages (the bounds are hang guards).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiomqtt
import jsonschema
import pytest
from helpers.vda5050_peers import (
    PASSWORD,
    SCHEMAS,
    USERNAME,
    Broker,
    Vehicles,
    missing_peers,
)
from helpers.waiting import NotYet, until

_missing = missing_peers()
pytestmark = [
    pytest.mark.vda5050, pytest.mark.slow,
    pytest.mark.skipif(bool(_missing) and not os.environ.get("CI"),
                       reason=f"{', '.join(_missing)} missing: run `bash tests/setup.sh`"),
]

INTERFACE, MANUFACTURER, MAP = "uagv", "autocell", "cell"
SPEED = 50.0
VALIDATORS = {
    topic: jsonschema.Draft202012Validator(json.loads((SCHEMAS / f"{topic}.schema.json").read_text()))
    for topic in ("connection", "state", "factsheet", "visualization", "order", "instantActions")
}
PICK_DROP_PARAMETERS = [{"key": "stationType", "value": "floor"},
                        {"key": "loadType", "value": "EPAL"}]


def schema_errors(topic: str, message: dict[str, Any]) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in VALIDATORS[topic].iter_errors(message)]


class MasterControl:
    """A minimal master control: every message per (serial, topic), and a sender."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.received: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.invalid: dict[tuple[str, str], list[str]] = {}
        self.header_ids: dict[str, int] = {}

    async def pump(self) -> None:
        async for message in self.client.messages:
            _, _, _, serial, topic = message.topic.value.split("/")
            assert isinstance(message.payload, bytes)
            body = json.loads(message.payload)
            self.received.setdefault((serial, topic), []).append(body)
            errors = schema_errors(topic, body)
            if errors:
                self.invalid.setdefault((serial, topic), []).extend(errors)

    def of(self, serial: str, topic: str) -> list[dict[str, Any]]:
        return self.received.get((serial, topic), [])

    def last(self, serial: str, topic: str) -> dict[str, Any] | None:
        got = self.of(serial, topic)
        return got[-1] if got else None

    async def wait(self, what: str, check: Callable[[], Any]) -> Any:
        return await until(what, check)

    async def wait_state(self, serial: str, what: str, check: Callable[[dict[str, Any]], bool],
                         *, after: int = 0) -> dict[str, Any]:
        """The latest state of ``serial`` that passes ``check``, among those received so far
        (or, if none does yet, the first to come), skipping the first ``after`` states."""
        def seen() -> object:
            for state in reversed(self.of(serial, "state")[after:]):
                if check(state):
                    return state
            return NotYet(self.last(serial, "state"))
        state: dict[str, Any] = await until(f"{serial}: {what}", seen)
        return state

    async def wait_connection(self, serial: str, connection_state: str) -> None:
        await until(f"{serial} {connection_state}",
                    lambda: (c := self.last(serial, "connection")) is not None
                    and c["connectionState"] == connection_state
                    or NotYet(self.last(serial, "connection")))

    def _header(self, serial: str, topic: str) -> dict[str, Any]:
        header_id = self.header_ids.get(topic, 0)
        self.header_ids[topic] = header_id + 1
        return {"headerId": header_id,
                "timestamp": datetime.now(timezone.utc).isoformat(timespec="milliseconds")
                .replace("+00:00", "Z"),
                "version": "2.0.0", "manufacturer": MANUFACTURER, "serialNumber": serial}

    async def send(self, serial: str, topic: str, body: dict[str, Any]) -> dict[str, Any]:
        message = {**self._header(serial, topic), **body}
        assert schema_errors(topic, message) == [], schema_errors(topic, message)
        await self.client.publish(f"{INTERFACE}/v2/{MANUFACTURER}/{serial}/{topic}",
                                  json.dumps(message), qos=0)
        return message

    async def instant(self, serial: str, action_type: str,
                      parameters: list[dict[str, Any]] | None = None) -> str:
        action_id = f"{action_type}-{uuid.uuid4().hex[:8]}"
        # As the backend sends them: blockingType NONE, an empty parameter list.
        action = {"actionId": action_id, "actionType": action_type, "blockingType": "NONE",
                  "actionParameters": parameters or []}
        await self.send(serial, "instantActions", {"actions": [action]})
        return action_id


@asynccontextmanager
async def master_control(port: int, *, tls: ssl.SSLContext | None = None,
                         password: str = PASSWORD) -> AsyncIterator[MasterControl]:
    async with aiomqtt.Client("127.0.0.1", port, username=USERNAME, password=password,
                              tls_context=tls, identifier=f"mc-{uuid.uuid4().hex[:8]}") as client:
        await client.subscribe(f"{INTERFACE}/v2/{MANUFACTURER}/+/+")
        mc = MasterControl(client)
        pump = asyncio.create_task(mc.pump())
        try:
            yield mc
        finally:
            pump.cancel()
            with pytest.raises(asyncio.CancelledError):
                await pump


def node(node_id: str, sequence_id: int, xy: tuple[float, float] | None,
         actions: Sequence[dict[str, Any]] = (), map_id: str = MAP) -> dict[str, Any]:
    n: dict[str, Any] = {"nodeId": node_id, "sequenceId": sequence_id, "released": True,
                         "actions": list(actions)}
    if xy is not None:
        n["nodePosition"] = {"x": xy[0], "y": xy[1], "mapId": map_id}
    return n


def pick_drop_order(order_id: str, start: tuple[float, float] | None,
                    end: tuple[float, float], *, map_id: str = MAP,
                    pick: bool = True) -> dict[str, Any]:
    """The order the backend sends: ``pick`` at the first node, ``drop`` at the last."""
    first = [{"actionId": f"{order_id}-pick", "actionType": "pick", "blockingType": "HARD",
              "actionParameters": PICK_DROP_PARAMETERS}] if pick else []
    last = [{"actionId": f"{order_id}-drop", "actionType": "drop", "blockingType": "HARD",
             "actionParameters": PICK_DROP_PARAMETERS}]
    return {"orderId": order_id, "orderUpdateId": 0,
            "nodes": [node("a", 0, start, first, map_id), node("b", 2, end, last, map_id)],
            "edges": [{"edgeId": "a-b", "sequenceId": 1, "startNodeId": "a", "endNodeId": "b",
                       "released": True, "actions": []}]}


def action_status(state: dict[str, Any], action_id: str) -> str | None:
    return next((a["actionStatus"] for a in state["actionStates"] if a["actionId"] == action_id),
                None)


def order_done(order_id: str, last_node: str = "b") -> Callable[[dict[str, Any]], bool]:
    """The backend's ``arrived``: last node reached and its drop FINISHED."""
    return lambda s: (s["orderId"] == order_id and s["nodeStates"] == [] and s["edgeStates"] == []
                      and s["lastNodeId"] == last_node
                      and action_status(s, f"{order_id}-drop") == "FINISHED")


@pytest.fixture
def broker(tmp_path: Path) -> Any:
    b = Broker(tmp_path / "broker", tls=True).start()
    yield b
    b.stop()


@pytest.fixture
def spawned(tmp_path: Path) -> Any:
    """Vehicles processes started by a test, stopped after it."""
    procs: list[Vehicles] = []

    def spawn(broker: Broker, serials: list[str], **kwargs: Any) -> Vehicles:
        v = Vehicles(tmp_path / "vehicles", broker.url, serials, map_id=MAP, speed=SPEED,
                     name=f"vehicles{len(procs)}", **kwargs)
        procs.append(v)
        return v
    yield spawn
    for v in procs:
        v.stop()


def test_connection_state_factsheet_and_a_pick_drop_order(broker: Broker, spawned: Any) -> None:
    vehicles = spawned(broker, ["agv1", "agv2"], extra=["--start", "agv1=0,0,0,home1",
                                                        "--start", "agv2=5,5,0"]).start()

    async def scenario() -> None:
        async with master_control(broker.port) as mc:
            for serial in ("agv1", "agv2"):
                await mc.wait_connection(serial, "ONLINE")     # retained: seen on subscribe
                await mc.wait(f"{serial} factsheet", lambda: mc.last(serial, "factsheet"))
            # The library publishes state on change and at least every 30 s, so
            # a master control that subscribes late asks for it.
            await mc.instant("agv1", "stateRequest")
            state = await mc.wait_state("agv1", "a state", lambda s: True)
            assert state["agvPosition"] == {"x": 0, "y": 0, "theta": 0, "mapId": MAP,
                                            "positionInitialized": True}
            assert state["lastNodeId"] == "home1" and state["operatingMode"] == "AUTOMATIC"
            assert state["version"] == "2.0.0"
            factsheet = mc.last("agv1", "factsheet")
            assert factsheet is not None
            actions = {a["actionType"]: a for a in factsheet["protocolFeatures"]["agvActions"]}
            assert actions["pick"]["actionScopes"] == ["NODE"]
            assert actions["drop"]["actionScopes"] == ["NODE"]
            assert {"cancelOrder", "stateRequest", "factsheetRequest"} <= set(actions)

            # The vehicle stands on the order's first node: pick there, drive 20 m, drop.
            await mc.send("agv1", "order", pick_drop_order("o1", (0, 0), (20, 0)))
            await mc.wait_state("agv1", "order o1 accepted", lambda s: s["orderId"] == "o1")
            done = await mc.wait_state("agv1", "o1 at b with its drop FINISHED", order_done("o1"))
            assert action_status(done, "o1-pick") == "FINISHED"
            assert done["agvPosition"]["x"] == 20 and done["agvPosition"]["y"] == 0
            assert done["loads"] == [] and done["driving"] is False and done["errors"] == []
            assert any(s["driving"] for s in mc.of("agv1", "state")), "never reported driving"

            # factsheetRequest publishes it again (retained).
            before = len(mc.of("agv2", "factsheet"))
            await mc.instant("agv2", "factsheetRequest")
            await mc.wait("agv2 factsheet again", lambda: len(mc.of("agv2", "factsheet")) > before)
            assert mc.of("agv2", "state") == [] or all(
                s["orderId"] == "" for s in mc.of("agv2", "state")), "agv2 was never ordered"
            assert mc.invalid == {}, f"messages failing the VDA 5050 2.0.0 schemas: {mc.invalid}"

        assert vehicles.stop() == 0

    asyncio.run(scenario())


def test_cancel_order_mid_edge_and_a_next_order_from_where_the_vehicle_stopped(
        broker: Broker, spawned: Any) -> None:
    spawned(broker, ["agv1"]).start()

    async def scenario() -> None:
        async with master_control(broker.port) as mc:
            await mc.wait_connection("agv1", "ONLINE")
            # 10 km at 2 m/s x 50: 100 s of wall time, so it is mid-edge when cancelled.
            await mc.send("agv1", "order", pick_drop_order("long", (0, 0), (10_000, 0)))
            await mc.wait_state("agv1", "driving", lambda s: s["driving"])
            cancel = await mc.instant("agv1", "cancelOrder")
            stopped = await mc.wait_state(
                "agv1", "cancelOrder FINISHED",
                lambda s: action_status(s, cancel) == "FINISHED")
            assert stopped["driving"] is False
            assert stopped["nodeStates"] == [] and stopped["edgeStates"] == []
            assert action_status(stopped, "long-drop") == "FAILED"
            assert stopped["lastNodeId"] == "a"
            assert len(stopped["loads"]) == 1, "the load picked at a is still on board"

            # The vehicle stands between nodes: an order whose first node has no
            # position starts where it is (a positioned first node would have to
            # lie within 0.5 m of it).
            await mc.send("agv1", "order", pick_drop_order("home", None, (0, 0), pick=False))
            done = await mc.wait_state("agv1", "back at 0,0 and dropped", order_done("home"))
            assert done["agvPosition"]["x"] == 0 and done["loads"] == []
            assert mc.invalid == {}, mc.invalid

    asyncio.run(scenario())


def test_kill_9_leaves_the_last_will_and_sigterm_says_offline(broker: Broker,
                                                               spawned: Any) -> None:
    vehicles = spawned(broker, ["agv1", "agv2"]).start()

    async def scenario() -> None:
        async with master_control(broker.port) as mc:
            def reported_x(topic: str) -> float:
                got = mc.last("agv1", topic)
                return float(got["agvPosition"]["x"]) if got else 0.0

            for serial in ("agv1", "agv2"):
                await mc.wait_connection(serial, "ONLINE")
            # Killed mid-move: 10 km at 100 m/s, killed once it has reported 100 m or more.
            await mc.send("agv1", "order", pick_drop_order("k1", (0, 0), (10_000, 0)))
            await mc.wait("agv1 reported under way", lambda: reported_x("visualization") >= 100)
            vehicles.kill()
            for serial in ("agv1", "agv2"):
                await mc.wait_connection(serial, "CONNECTIONBROKEN")
            # The broker read all a vehicle sent before its socket closed, then the will.
            seen_x = max(reported_x("visualization"), reported_x("state"))
            states_before = len(mc.of("agv1", "state"))
            vehicles.start()
            for serial in ("agv1", "agv2"):
                await mc.wait_connection(serial, "ONLINE")
            # Back where it last reported, with no order and no load (a new process).
            await mc.instant("agv1", "stateRequest")
            back = await mc.wait_state("agv1", "a state after the restart", lambda s: True,
                                       after=states_before)
            assert back["agvPosition"]["x"] == seen_x and back["orderId"] == ""
            assert back["lastNodeId"] == "a" and back.get("loads", []) == []
            assert vehicles.stop() == 0
            for serial in ("agv1", "agv2"):
                await mc.wait_connection(serial, "OFFLINE")
            # Retained: a master control that connects now still learns each one's last word.
        async with master_control(broker.port) as late:
            await late.wait_connection("agv1", "OFFLINE")
            assert mc.invalid == {} and late.invalid == {}

    asyncio.run(scenario())


def test_tls_with_a_password_works_and_a_wrong_password_is_refused(broker: Broker,
                                                                   spawned: Any,
                                                                   tmp_path: Path) -> None:
    assert broker.pki is not None and broker.tls_port is not None
    tls = broker.pki.client_context()
    vehicles = Vehicles(tmp_path / "tls", broker.tls_url, ["agv1"], map_id=MAP, speed=SPEED,
                        ca=broker.pki.ca_file).start()

    async def scenario() -> None:
        try:
            async with master_control(broker.tls_port, tls=tls) as mc:
                await mc.wait_connection("agv1", "ONLINE")
                await mc.send("agv1", "order", pick_drop_order("t1", (0, 0), (3, 4)))
                await mc.wait_state("agv1", "t1 done over TLS", order_done("t1"))
        finally:
            vehicles.stop()
        for port, context in ((broker.tls_port, tls), (broker.port, None)):
            with pytest.raises(aiomqtt.MqttError, match="(?i)not authori[sz]ed"):
                async with master_control(port, tls=context, password="wrong"):
                    pass
        # A client that does not trust the broker's CA never gets to the password.
        with pytest.raises(aiomqtt.MqttError):
            async with master_control(broker.tls_port, tls=ssl.create_default_context()):
                pass

    asyncio.run(scenario())
    # A vehicle with the wrong password gives up at once with a clear message.
    refused = Vehicles(tmp_path / "refused", broker.url, ["agv9"], password="wrong")
    refused.start(wait=False)
    assert refused.proc is not None and refused.proc.wait(60) == 1
    assert "cannot connect" in refused.log() and "Not authorized" in refused.log()


def test_fatal_after_the_second_order_halts_until_cleared(broker: Broker,
                                                          spawned: Any) -> None:
    vehicles = spawned(broker, ["agv1"], extra=["--fatal-after-orders", "2"]).start()

    async def scenario() -> None:
        async with master_control(broker.port) as mc:
            await mc.wait_connection("agv1", "ONLINE")
            await mc.send("agv1", "order", pick_drop_order("f1", (0, 0), (10, 0)))
            await mc.wait_state("agv1", "f1 done", order_done("f1"))
            await mc.send("agv1", "order", pick_drop_order("f2", (10, 0), (20, 0)))
            faulted = await mc.wait_state(
                "agv1", "a FATAL error", lambda s: any(e["errorLevel"] == "FATAL"
                                                        for e in s["errors"]))
            (error,) = faulted["errors"]
            assert error["errorType"] == "vehicleFault"
            assert {"referenceKey": "orderId", "referenceValue": "f2"} in error["errorReferences"]
            assert faulted["orderId"] == "f2" and faulted["paused"] is True
            assert faulted["driving"] is False
            vehicles.signal(signal.SIGUSR1)            # the fault is cleared
            done = await mc.wait_state("agv1", "f2 done after the fault cleared",
                                       order_done("f2"))
            assert done["errors"] == [] and done["paused"] is False
            assert mc.invalid == {}, mc.invalid

    asyncio.run(scenario())


def test_a_fatal_vehicle_takes_cancel_order_stays_fatal_and_works_once_cleared(
        broker: Broker, spawned: Any) -> None:
    """What the backend does with a FATAL vehicle: cancel its order, wait for the repair."""
    vehicles = spawned(broker, ["agv1"], extra=["--fatal-after-orders", "1"]).start()

    async def scenario() -> None:
        async with master_control(broker.port) as mc:
            await mc.wait_connection("agv1", "ONLINE")
            await mc.send("agv1", "order", pick_drop_order("x1", (0, 0), (10, 0)))
            await mc.wait_state("agv1", "FATAL", lambda s: any(e["errorLevel"] == "FATAL"
                                                                 for e in s["errors"]))
            cancel = await mc.instant("agv1", "cancelOrder")
            cancelled = await mc.wait_state("agv1", "cancelOrder FINISHED",
                                            lambda s: action_status(s, cancel) == "FINISHED")
            assert cancelled["nodeStates"] == [] and cancelled["driving"] is False
            # The pick it was running FAILED, which the library reports as a WARNING.
            assert sorted((e["errorLevel"], e["errorType"]) for e in cancelled["errors"]) == [
                ("FATAL", "vehicleFault"), ("WARNING", "orderActionError")]
            vehicles.signal(signal.SIGUSR1)
            await mc.wait_state("agv1", "FATAL cleared", lambda s: all(
                e["errorLevel"] != "FATAL" for e in s["errors"]))
            await mc.send("agv1", "order", pick_drop_order("x2", None, (10, 0)))
            done = await mc.wait_state("agv1", "x2 done", order_done("x2"))
            assert done["errors"] == []
            assert mc.invalid == {}, mc.invalid

    asyncio.run(scenario())


def test_invalid_state_fails_the_schema_for_that_vehicle_only(broker: Broker,
                                                              spawned: Any) -> None:
    spawned(broker, ["agv1", "agv2"], extra=["--invalid-state=agv2"]).start()

    async def scenario() -> None:
        async with master_control(broker.port) as mc:
            for serial in ("agv1", "agv2"):
                await mc.instant(serial, "stateRequest")
            await mc.wait_state("agv1", "a state", lambda s: True)
            await mc.wait_state("agv2", "a state", lambda s: True)
            assert set(mc.invalid) == {("agv2", "state")}
            assert any("driving" in e for e in mc.invalid[("agv2", "state")])
            assert mc.last("agv2", "factsheet") is not None   # only its state is invalid

    asyncio.run(scenario())


def test_an_idle_vehicle_repeats_its_state_at_the_state_interval(broker: Broker,
                                                                 spawned: Any) -> None:
    spawned(broker, ["agv1"], extra=["--state-interval-s", "0.2"]).start()

    async def scenario() -> None:
        async with master_control(broker.port) as mc:
            await mc.wait("three states unasked", lambda: len(mc.of("agv1", "state")) >= 3)
            assert {s["orderId"] for s in mc.of("agv1", "state")} == {""}

    asyncio.run(scenario())


def test_a_vehicle_on_another_map_refuses_the_order(broker: Broker, spawned: Any) -> None:
    spawned(broker, ["agv1"], extra=["--map-id", "agv1=hall9"]).start()

    async def scenario() -> None:
        async with master_control(broker.port) as mc:
            await mc.instant("agv1", "stateRequest")
            state = await mc.wait_state("agv1", "a state", lambda s: True)
            assert state["agvPosition"]["mapId"] == "hall9"
            await mc.send("agv1", "order", pick_drop_order("m1", (0, 0), (10, 0)))
            refused = await mc.wait_state("agv1", "an error for m1", lambda s: s["errors"])
            (error,) = refused["errors"]
            assert error["errorLevel"] == "WARNING" and error["errorType"] == "noRouteError"
            assert {"referenceKey": "orderId", "referenceValue": "m1"} in error["errorReferences"]
            assert refused["orderId"] == "" and refused["nodeStates"] == []

    asyncio.run(scenario())


def test_orders_the_vehicle_refuses_and_why(broker: Broker, spawned: Any) -> None:
    spawned(broker, ["agv1"], extra=["--start", "agv1=0,0,0,home"]).start()

    def without_pick_parameters() -> dict[str, Any]:
        order = pick_drop_order("bare", (0, 0), (10, 0))
        order["nodes"][0]["actions"][0]["actionParameters"] = []
        return order

    def without_a_second_position() -> dict[str, Any]:
        order = pick_drop_order("blind", (0, 0), (10, 0))
        del order["nodes"][1]["nodePosition"]
        return order

    refusals = [
        ("orderError", without_pick_parameters()),
        ("noRouteError", without_a_second_position()),
        ("noRouteError", pick_drop_order("far", (3, 0), (10, 0))),   # 3 m from the vehicle
        ("validationError", {**pick_drop_order("v21", (0, 0), (10, 0)), "version": "2.1.0"}),
    ]

    async def scenario() -> None:
        async with master_control(broker.port) as mc:
            await mc.wait_connection("agv1", "ONLINE")
            for error_type, order in refusals:
                ref = {"referenceKey": "orderId", "referenceValue": order["orderId"]}

                def names_it(state: dict[str, Any]) -> bool:
                    return any(ref in e["errorReferences"] for e in state["errors"])

                await mc.send("agv1", "order", order)
                refused = await mc.wait_state("agv1", f"{order['orderId']} refused", names_it)
                (error,) = [e for e in refused["errors"] if ref in e["errorReferences"]]
                assert (error["errorType"], error["errorLevel"]) == (error_type, "WARNING"), error
                assert refused["orderId"] == "" and refused["nodeStates"] == []
            # The refusals stay in errors until an order is accepted.
            await mc.send("agv1", "order", pick_drop_order("ok", (0, 0), (10, 0)))
            done = await mc.wait_state("agv1", "ok done", order_done("ok"))
            assert done["errors"] == []
            assert mc.invalid == {}, mc.invalid

    asyncio.run(scenario())


def test_broker_restart_the_vehicles_come_back_online_and_take_orders(broker: Broker,
                                                                      spawned: Any) -> None:
    spawned(broker, ["agv1"]).start()

    async def scenario() -> None:
        async with master_control(broker.port) as mc:
            await mc.wait_connection("agv1", "ONLINE")
        broker.restart()            # retained messages are gone with it
        async with master_control(broker.port) as mc:
            await mc.wait_connection("agv1", "ONLINE")   # said again on reconnect
            await mc.wait("agv1 factsheet again", lambda: mc.last("agv1", "factsheet"))
            await mc.send("agv1", "order", pick_drop_order("r1", (0, 0), (10, 0)))
            await mc.wait_state("agv1", "r1 done after the restart", order_done("r1"))
            assert mc.invalid == {}, mc.invalid

    asyncio.run(scenario())
