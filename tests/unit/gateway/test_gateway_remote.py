"""GatewayCore's calls to and from other engine hosts' gateways (issue 19): a route of the
cluster node to ``<host>/<node>/<conn>`` whose peer the cluster listed (PEERS) is sent to
that gateway directly, with this gateway's host-qualified name as the reply node and its
TCP endpoint as ``ra``; anything else still goes to the cluster process.

Fixture: node ``gw1``, caller ``A``, callee ``B`` owning ``(default, math::add)``."""
from __future__ import annotations

import orjson

from tests.unit.gateway.test_gateway_calls import STOPPED, add_route, call

PEER = "hostB/gateway-0"
REMOTE = f"{PEER}/wB"


def peers(core, table: dict[str, str] | None = None) -> None:
    core.remote_addr = "tcp://10.0.0.1:7000"
    core.on_frame("cluster", {"k": "peers", "peers": {PEER: "tcp://10.0.0.2:7001"} if table is None else table,
                              "as": "hostA/gw1"}, b"")


def test_a_listed_peer_is_called_directly_and_answers_come_back(core, rec) -> None:
    peers(core)
    add_route(core, "default", "far::f", "cluster", REMOTE)
    call(core, "A", fid="far::f", data={"x": 1})
    ((node, header, body),) = rec.bus_frames()
    assert node == PEER
    assert header == {"k": "inv", "id": "i1", "fn": "far::f", "to": "wB", "rn": "hostA/gw1", "rc": "A",
                      "ra": "tcp://10.0.0.1:7000"}
    assert orjson.loads(body)["data"] == {"x": 1, "_caller_worker_id": "A"}
    rec.take()
    answer = b'{"type":"invocationresult","invocation_id":"i1","function_id":"far::f","result":2}'
    core.on_frame(PEER, {"k": "res", "id": "i1", "to": "A"}, answer)
    assert rec.take() == [("ws", "A", answer)]


def test_a_void_call_names_no_reply_node(core, rec) -> None:
    peers(core)
    add_route(core, "default", "far::f", "cluster", REMOTE)
    call(core, "A", fid="far::f", inv=None)
    ((node, header, _),) = rec.bus_frames()
    assert node == PEER and header["rn"] is None and header["rc"] is None


def test_an_unlisted_peer_goes_through_the_cluster_process(core, rec) -> None:
    peers(core, {"hostC/gateway-0": "tcp://10.0.0.3:7001"})
    add_route(core, "default", "far::f", "cluster", REMOTE)
    call(core, "A", fid="far::f")
    ((node, header, _),) = rec.bus_frames()
    assert node == "cluster" and header["to"] == REMOTE and header["rn"] == "gw1" and "ra" not in header


def test_a_reset_of_the_peer_stops_the_calls_waiting_on_it(core, rec) -> None:
    peers(core)
    add_route(core, "default", "far::f", "cluster", REMOTE)
    call(core, "A", fid="far::f")
    rec.take()
    core.on_frame("cluster", {"k": "reset", "node": PEER}, b"")
    (msg,) = rec.ws_to("A")
    assert msg["invocation_id"] == "i1" and msg["error"] == STOPPED


def test_a_call_from_another_hosts_gateway_is_answered_to_its_name(core, rec) -> None:
    body = orjson.dumps({"type": "invokefunction", "invocation_id": "r1", "function_id": "math::add", "data": 1})
    core.on_frame("hostB/gateway-0", {"k": "inv", "id": "r1", "fn": "math::add", "to": "B", "rn": PEER, "rc": "C",
                                      "ra": "tcp://10.0.0.2:7001"}, body)
    assert rec.take() == [("ws", "B", body)]
    core.on_message("B", '{"type":"invocationresult","invocation_id":"r1","function_id":"math::add","result":3}')
    ((node, header, _),) = rec.bus_frames()
    assert node == PEER and header == {"k": "res", "id": "r1", "to": "C"}
