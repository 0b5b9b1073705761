"""GatewayCore call path (protocol.md §5): local and routed sync calls, void, enqueue,
misses, result acceptance (§12.3), halting on disconnect and node restart (§4.6), NaN
relay (§2) and the 1 MiB guard for older Python workers (§10.4).

Fixture: node ``gw1``, caller ``A``, callee ``B`` owning ``(default, math::add)``."""
from __future__ import annotations

import orjson
import pytest

STOPPED = {"code": "invocation_stopped", "message": "Invocation stopped"}


def call(core, conn: str, fid: str = "math::add", inv: str | None = "i1", **fields) -> None:
    msg = {"type": "invokefunction", "function_id": fid, **fields}
    if inv is not None:
        msg["invocation_id"] = inv
    core.on_message(conn, orjson.dumps(msg))


def add_route(core, ns: str, fid: str, node: str, conn: str | None) -> None:
    core.on_frame("router", {"k": "routes", "ops": [["+", ns, fid, node, conn]]}, b"")


def test_local_sync_call_delivers_to_callee_and_relays_result_bytes(core, rec) -> None:
    call(core, "A", data={"a": 2, "b": 3}, metadata={"m": 1}, traceparent="00-tp", baggage="k=v")
    assert rec.bus_frames() == []  # same process: never leaves it
    (delivered,) = rec.ws_to("B")
    assert delivered == {"type": "invokefunction", "invocation_id": "i1", "function_id": "math::add",
                         "data": {"a": 2, "b": 3, "_caller_worker_id": "A"}, "metadata": {"m": 1},
                         "traceparent": "00-tp", "baggage": "k=v"}
    rec.take()
    reply = '{"invocation_id": "i1", "function_id": "math::add", "result": {"c": 5}, "type": "invocationresult"}'
    core.on_message("B", reply)
    assert rec.take() == [("ws", "A", reply.encode())]  # the callee's bytes, untouched
    core.on_message("B", reply)  # answered once only
    assert rec.take() == []


def test_delivered_call_has_no_action_or_namespace_and_null_data_when_missing(core, rec) -> None:
    call(core, "A", namespace="default")
    (delivered,) = rec.ws_to("B")
    assert delivered == {"type": "invokefunction", "invocation_id": "i1", "function_id": "math::add",
                         "data": None}


def test_caller_id_only_injected_into_object_payloads(core, rec) -> None:
    call(core, "A", data=[1, 2])
    call(core, "A", inv="i2", data="text")
    assert [m["data"] for m in rec.ws_to("B")] == [[1, 2], "text"]


def test_call_to_a_function_on_another_node_goes_over_the_bus(core, rec) -> None:
    add_route(core, "orders", "svc::f", "gw2", "X")
    rec.take()
    call(core, "A", fid="svc::f", data={"k": 1}, namespace="orders")
    (node, header, body), = rec.bus_frames()
    assert node == "gw2"
    assert header == {"k": "inv", "id": "i1", "fn": "svc::f", "to": "X", "rn": "gw1", "rc": "A"}
    assert orjson.loads(body) == {"type": "invokefunction", "invocation_id": "i1", "function_id": "svc::f",
                                  "data": {"k": 1, "_caller_worker_id": "A"}}
    rec.take()
    res = b'{"type":"invocationresult","invocation_id":"i1","function_id":"svc::f","result":1}'
    core.on_frame("gw2", {"k": "res", "id": "i1", "to": "A"}, res)
    core.on_frame("gw2", {"k": "res", "id": "i1", "to": "A"}, res)  # a duplicate is dropped
    core.on_frame("gw2", {"k": "res", "id": "zz", "to": "A"}, res)  # never asked
    assert rec.take() == [("ws", "A", res)]


def test_call_delivered_from_another_node_is_answered_over_the_bus(core, rec) -> None:
    body = b'{"type":"invokefunction","invocation_id":"r1","function_id":"math::add","data":1}'
    core.on_frame("gw2", {"k": "inv", "id": "r1", "fn": "math::add", "to": "B", "rn": "gw2", "rc": "X"}, body)
    assert rec.take() == [("ws", "B", body)]
    res = b'{"type":"invocationresult","invocation_id":"r1","function_id":"math::add","result":2}'
    core.on_message("B", res)
    assert rec.take() == [("bus", "gw2", {"k": "res", "id": "r1", "to": "X"}, res)]


def test_void_call_gets_a_fresh_id_and_its_reply_is_discarded(core, rec) -> None:
    call(core, "A", inv=None, data={"x": 1}, action={"type": "void"})
    (delivered,) = rec.ws_to("B")
    fresh = delivered["invocation_id"]
    assert isinstance(fresh, str) and len(fresh) == 36
    assert delivered["data"] == {"x": 1, "_caller_worker_id": "A"}
    rec.take()
    core.on_message("B", orjson.dumps({"type": "invocationresult", "invocation_id": fresh,
                                       "function_id": "math::add", "result": 1}))
    assert rec.take() == []


def test_void_call_with_an_id_still_replaces_it_and_remote_void_has_no_reply_node(core, rec) -> None:
    call(core, "A", inv="mine", action={"type": "void"})
    assert rec.ws_to("B")[0]["invocation_id"] != "mine"
    rec.take()
    add_route(core, "default", "svc::f", "gw2", "X")
    call(core, "A", fid="svc::f", inv=None, action={"type": "void"})
    (node, header, _), = rec.bus_frames()
    assert node == "gw2" and header["rn"] is None and header["rc"] is None and header["id"]


def test_function_not_found_names_other_namespaces(core, rec) -> None:
    add_route(core, "orders", "svc::f", "gw2", "X")
    add_route(core, "billing", "svc::f", "gw2", "Y")
    rec.take()
    call(core, "A", fid="svc::f")
    call(core, "A", fid="nope::x", inv="i2", namespace="orders")
    errors = [m["error"] for m in rec.ws_to("A")]
    assert errors == [
        {"code": "function_not_found", "message": "Function svc::f not found in namespace default. "
                                                   "It is registered in namespace(s): billing, orders."},
        {"code": "function_not_found", "message": "Function nope::x not found in namespace orders."}]
    assert [m["function_id"] for m in rec.ws_to("A")] == ["svc::f", "nope::x"]
    rec.take()
    call(core, "A", fid="svc::f", inv=None, action={"type": "void"})  # void miss: silence
    assert rec.take() == []


def test_namespace_is_strict(core, rec) -> None:
    call(core, "A", namespace="orders")  # math::add only exists in default
    (msg,) = rec.ws_to("A")
    assert msg["error"]["code"] == "function_not_found"
    assert rec.ws_to("B") == []


@pytest.mark.parametrize("ns", ["", "  ", "\t", 3])
def test_blank_namespace_is_invalid(core, rec, ns) -> None:
    call(core, "A", namespace=ns)
    assert rec.take() == [("ws", "A", orjson.dumps({
        "type": "invocationresult", "invocation_id": "i1", "function_id": "math::add",
        "error": {"code": "INVALID_NAMESPACE", "message": "namespace must not be blank"}}))]
    call(core, "A", inv=None, namespace=ns, action={"type": "void"})
    call(core, "A", namespace=ns, action={"type": "enqueue", "queue": "q"})
    assert [m["error"]["code"] for m in rec.ws_to("A")] == ["INVALID_NAMESPACE"]  # void dropped


def test_enqueue_without_a_queue_route_is_an_enqueue_error(core, rec) -> None:
    call(core, "A", data={"k": 1}, action={"type": "enqueue", "queue": "jobs"})
    (msg,) = rec.ws_to("A")
    assert msg["invocation_id"] == "i1" and msg["function_id"] == "math::add"
    assert msg["error"]["code"] == "enqueue_error"
    assert "queue" in msg["error"]["message"]
    assert rec.ws_to("B") == [] and rec.bus_frames() == []


def test_enqueue_hands_the_job_to_the_queue_broker(core, rec) -> None:
    add_route(core, "default", "engine::queue::enqueue", "queue", None)
    rec.take()
    call(core, "A", fid="x::y", data={"k": 1}, metadata={"s": 1}, traceparent="00-tp",
         namespace="orders", action={"type": "enqueue", "queue": "jobs"})
    (node, header, body), = rec.bus_frames()
    assert node == "queue"
    assert header == {"k": "inv", "id": "i1", "fn": "engine::queue::enqueue", "to": None, "rn": "gw1", "rc": "A"}
    msg = orjson.loads(body)
    assert msg["type"] == "invokefunction" and msg["function_id"] == "engine::queue::enqueue"
    job = msg["data"]
    receipt = job.pop("messageReceiptId")
    assert isinstance(receipt, str) and len(receipt) == 36
    assert job == {"queue": "jobs", "function_id": "x::y", "data": {"k": 1},  # no _caller_worker_id
                   "metadata": {"s": 1}, "traceparent": "00-tp", "namespace": "orders"}
    rec.take()
    call(core, "A", fid="x::y", inv="i2", action={"type": "enqueue", "queue": "jobs"})
    (_, _, body), = rec.bus_frames()
    assert "namespace" not in orjson.loads(body)["data"]  # only when not default
    rec.take()
    receipt_reply = orjson.dumps({"type": "invocationresult", "invocation_id": "i2",
                                  "function_id": "engine::queue::enqueue", "result": {"messageReceiptId": "r"}})
    core.on_frame("queue", {"k": "res", "id": "i2", "to": "A"}, receipt_reply)
    assert rec.take() == [("ws", "A", receipt_reply)]


def test_result_from_a_connection_that_was_not_the_callee_is_dropped(core, rec) -> None:
    core.open("C")
    call(core, "A", data={})
    rec.take()
    forged = b'{"type":"invocationresult","invocation_id":"i1","function_id":"math::add","result":"forged"}'
    core.on_message("C", forged)
    core.on_message("A", forged)
    assert rec.take() == []
    real = b'{"type":"invocationresult","invocation_id":"i1","function_id":"math::add","result":"real"}'
    core.on_message("B", real)
    assert rec.take() == [("ws", "A", real)]


def test_callee_disconnect_stops_a_local_callers_call(core, rec) -> None:
    call(core, "A")
    call(core, "A", inv="v", action={"type": "void"})
    rec.take()
    core.closed("B")
    events = rec.take()
    assert [(e[0], e[1]) for e in events] == [("ws", "A"), ("bus", "router")]
    assert orjson.loads(events[0][2]) == {"type": "invocationresult", "invocation_id": "i1",
                                          "function_id": "math::add", "error": STOPPED}
    assert events[1][2] == {"k": "conn", "c": "B", "ev": "close"}


def test_callee_disconnect_stops_a_remote_callers_call(core, rec) -> None:
    core.on_frame("gw2", {"k": "inv", "id": "r1", "fn": "math::add", "to": "B", "rn": "gw2", "rc": "X"}, b"{}")
    rec.take()
    core.closed("B")
    frames_ = rec.bus_frames()
    assert frames_[0][:2] == ("gw2", {"k": "res", "id": "r1", "to": "X", "e": "invocation_stopped"})
    assert orjson.loads(frames_[0][2])["error"] == STOPPED


def test_call_to_a_gone_callee_is_stopped_at_once(core, rec) -> None:
    core.on_frame("gw2", {"k": "inv", "id": "r1", "fn": "svc::f", "to": "ghost", "rn": "gw2", "rc": "X"}, b"{}")
    (node, header, body), = rec.bus_frames()
    assert (node, header) == ("gw2", {"k": "res", "id": "r1", "to": "X", "e": "invocation_stopped"})
    assert orjson.loads(body) == {"type": "invocationresult", "invocation_id": "r1", "function_id": "svc::f",
                                  "error": STOPPED}
    rec.take()
    add_route(core, "default", "svc::g", "gw1", "ghost")  # a stale local route
    call(core, "A", fid="svc::g")
    assert [m["error"] for m in rec.ws_to("A")] == [STOPPED]


def test_caller_disconnect_discards_the_late_result(core, rec) -> None:
    call(core, "A")
    core.closed("A")
    rec.take()
    core.on_message("B", b'{"type":"invocationresult","invocation_id":"i1","function_id":"math::add","result":1}')
    assert rec.take() == []


def test_reset_of_a_node_stops_calls_waiting_on_it(core, rec) -> None:
    add_route(core, "default", "svc::f", "gw2", "X")
    add_route(core, "default", "svc::h", "gw3", "Z")
    call(core, "A", fid="svc::f", inv="w1")
    call(core, "A", fid="svc::h", inv="w3")
    call(core, "A", inv="local")  # waiting on B in this process
    rec.take()
    core.on_frame("router", {"k": "reset", "node": "gw1"}, b"")  # our own restart is not news
    assert rec.take() == []
    core.on_frame("router", {"k": "reset", "node": "gw2"}, b"")
    assert rec.take() == [("ws", "A", orjson.dumps({"type": "invocationresult", "invocation_id": "w1",
                                                   "function_id": "svc::f", "error": STOPPED}))]
    core.on_frame("gw2", {"k": "res", "id": "w1", "to": "A"}, b'{"late":1}')
    assert rec.take() == []
    core.on_frame("gw3", {"k": "res", "id": "w3", "to": "A"}, b'{"ok":1}')  # other nodes unaffected
    assert rec.take() == [("ws", "A", b'{"ok":1}')]


def test_reset_of_the_callers_node_turns_its_delivered_calls_void(core, rec) -> None:
    core.on_frame("gw2", {"k": "inv", "id": "r1", "fn": "math::add", "to": "B", "rn": "gw2", "rc": "X"}, b"{}")
    core.on_frame("router", {"k": "reset", "node": "gw2"}, b"")
    rec.take()
    core.on_message("B", b'{"type":"invocationresult","invocation_id":"r1","function_id":"math::add"}')
    assert rec.take() == []  # nobody in gw2's new life waits for it


def test_nan_in_a_result_is_relayed_as_null(core, rec) -> None:
    call(core, "A")
    rec.take()
    core.on_message("B", '{"type": "invocationresult", "invocation_id": "i1", "function_id": "math::add", '
                         '"result": {"x": NaN, "y": Infinity, "z": 1.5}}')
    (event,) = rec.take()
    assert event[:2] == ("ws", "A")
    assert b"NaN" not in event[2] and b"Infinity" not in event[2]
    assert orjson.loads(event[2])["result"] == {"x": None, "y": None, "z": 1.5}


def _register_meta(core, rec, conn: str, **data) -> None:
    core.on_message(conn, orjson.dumps({"type": "invokefunction", "function_id": "engine::workers::register",
                                        "action": {"type": "void"}, "data": data}))
    core.on_frame("router", {"k": "metaok", "c": conn, "ok": True, "ns": "default", "id": None}, b"")
    rec.take()


def test_over_one_mib_to_an_old_python_worker_is_payload_too_large(core, rec) -> None:
    _register_meta(core, rec, "B", runtime="python", version="0.23.0")
    big = "x" * (1024 * 1024 + 10)
    call(core, "A", data={"s": big})
    (msg,) = rec.ws_to("A")
    assert msg["error"]["code"] == "payload_too_large" and msg["invocation_id"] == "i1"
    assert rec.ws_to("B") == []
    rec.take()
    call(core, "A", inv="small", data={"s": "x"})
    assert [m["invocation_id"] for m in rec.ws_to("B")] == ["small"]


def test_large_messages_feature_or_node_runtime_lifts_the_guard(core, rec) -> None:
    _register_meta(core, rec, "B", runtime="python", features=["large-messages.v1"])
    core.open("N")
    _register_meta(core, rec, "N", runtime="node")
    add_route(core, "default", "n::f", "gw1", "N")
    rec.take()
    big = "x" * (1024 * 1024 + 10)
    call(core, "A", data={"s": big})
    call(core, "A", fid="n::f", inv="i2", data={"s": big})
    assert len(rec.ws_to("B")) == 1 and len(rec.ws_to("N")) == 1


def test_a_worker_can_call_its_own_function(core, rec) -> None:
    call(core, "B", data={})
    assert rec.take() == [("ws", "B", b'{"type":"invokefunction","invocation_id":"i1","function_id":"math::add",'
                                      b'"data":{"_caller_worker_id":"B"}}')]
    res = b'{"type":"invocationresult","invocation_id":"i1","function_id":"math::add","result":3}'
    core.on_message("B", res)
    assert rec.take() == [("ws", "B", res)]
