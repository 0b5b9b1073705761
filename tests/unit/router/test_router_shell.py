"""The router shell on the in-memory bus: a gateway's HELLO gets the route table, a
registration is published to every peer and then acknowledged, ``engine::*`` functions
answer over the bus, and a closed connection takes its function's route away."""
from __future__ import annotations

from brokers.kit import frames, wire
from brokers.kit.localbus import LocalHub
from brokers.router.service import Router
from brokers.router.unit import UNIT
from tests.localshell import context, invoke, running


def ops_of(header: dict) -> list:
    return [op[:3] for op in header["ops"]]


async def test_registration_routes_ack_and_disconnect(tmp_path) -> None:
    hub = LocalHub()
    gw, state = hub.peer("gw"), hub.peer("state")
    async with running(Router, context(UNIT, process="router", data_dir=str(tmp_path),
                                       peers=("gw", "state")), hub):
        gw.send("router", frames.hello("gw-epoch-1", fresh=True))
        _, snapshot, _ = await gw.next(frames.ROUTES, where=lambda h: h["ops"][0] == ["="])
        assert ["+", "default", "engine::functions::list"] in ops_of(snapshot)

        gw.send("router", frames.conn_open("C1", "tok", "127.0.0.1"))
        gw.send("router", frames.up("C1", "default", 1),
                wire.dumps({"type": "registerfunction", "id": "calc::add"}))
        _, added, _ = await gw.next(frames.ROUTES, where=lambda h: h["ops"][0][2] == "calc::add")
        assert added["ops"] == [["+", "default", "calc::add", "gw", "C1"]]
        _, ack, _ = await gw.next(frames.ACK)
        assert ack["s"] == 1
        _, seen, _ = await state.next(frames.ROUTES, where=lambda h: h["ops"][0][2] == "calc::add")
        assert seen["ops"] == added["ops"]  # every peer gets every route change

        listed = await invoke(gw, "router", "engine::functions::list", {})
        assert "calc::add" in [f["function_id"] for f in listed["result"]["functions"]]

        gw.send("router", frames.conn_close("C1"))
        _, removed, _ = await gw.next(frames.ROUTES, where=lambda h: h["ops"][0][0] == "-")
        assert removed["ops"][0][:3] == ["-", "default", "calc::add"]
        bad = await invoke(gw, "router", "engine::register_trigger", {"trigger_type": 5})
        assert bad["error"]["code"] == "deserialization_error"
