"""GatewayCore connection lifecycle: open, namespace buffering (protocol.md §4.4), the
``engine::workers::register`` round trip through the router (§4.3), router frames
(DOWN/CLOSE/HELLO), resync, and input the core must drop without effects (§2, §3.14, §9.3)."""
from __future__ import annotations

import orjson
import pytest

from brokers.gateway.core import GatewayCore


def _register(ns: str | None = None, inv_id: str | None = None, **extra) -> bytes:
    data = {"runtime": "python", "name": "w", "pid": 1, **extra}
    if ns is not None:
        data["namespace"] = ns
    msg = {"type": "invokefunction", "function_id": "engine::workers::register", "data": data}
    if inv_id:
        msg["invocation_id"] = inv_id
    else:
        msg["action"] = {"type": "void"}
    return orjson.dumps(msg)


REG_F = b'{"type":"registerfunction","id":"svc::f","description":"F"}'
REG_T = b'{"type":"registertrigger","id":"t1","trigger_type":"cron","function_id":"svc::f","config":{}}'
REG_TT = b'{"type":"registertriggertype","id":"webhook","description":"W"}'
UNREG_F = b'{"type":"unregisterfunction","id":"svc::f"}'


def test_open_announces_to_router_greets_worker_and_arms_grace(rec) -> None:
    gw = GatewayCore("gw1", rec)
    conn = gw.open("C1", "1.2.3.4")
    events = rec.take()
    assert events[0] == ("bus", "router", {"k": "conn", "c": "C1", "ev": "open", "token": conn.token,
                                           "ip": "1.2.3.4"}, b"")
    assert events[1][:2] == ("ws", "C1")
    assert orjson.loads(events[1][2]) == {"type": "workerregistered", "worker_id": "C1",
                                          "reattach_token": conn.token}
    assert events[2] == ("grace", "C1")
    assert len(events) == 3
    assert gw.open("C2").token != conn.token


def test_registrations_are_held_until_metaok_then_released_in_order(core, rec) -> None:
    for raw in (REG_TT, REG_F, REG_T, UNREG_F):
        core.on_message("A", raw)
    assert rec.take() == []  # nothing reaches the router before the namespace is known
    core.on_message("A", _register("orders"))
    (node, header, body), = rec.bus_frames()
    assert node == "router" and header == {"k": "meta", "c": "A", "id": None, "fixed": None}
    meta = orjson.loads(body)
    assert meta["namespace"] == "orders" and meta["_caller_worker_id"] == "A"
    rec.take()
    core.on_frame("router", {"k": "metaok", "c": "A", "ok": True, "ns": "orders", "id": None}, b"")
    frames = rec.bus_frames()
    assert [(n, h) for n, h, _ in frames] == [("router", {"k": "up", "c": "A", "ns": "orders", "s": s})
                                              for s in (1, 2, 3, 4)]  # numbered for the router's ACK
    assert [b for _, _, b in frames] == [REG_TT, REG_F, REG_T, UNREG_F]  # the bytes as sent
    assert rec.ws_to("A") == []  # void register: no result
    rec.take()
    core.on_message("A", REG_F)  # after the namespace is fixed: straight through
    assert rec.take() == [("bus", "router", {"k": "up", "c": "A", "ns": "orders", "s": 5}, REG_F)]


def test_sync_register_gets_success_result(core, rec) -> None:
    core.on_message("A", _register(None, inv_id="r1"))
    rec.take()
    core.on_frame("router", {"k": "metaok", "c": "A", "ok": True, "ns": "default", "id": "r1"}, b"")
    assert rec.ws_to("A") == [{"type": "invocationresult", "invocation_id": "r1",
                               "function_id": "engine::workers::register", "result": {"success": True}}]
    assert core.conns["A"].ns == "default"


def test_grace_expiry_fixes_default_and_the_fixed_namespace_wins(core, rec) -> None:
    core.on_message("A", REG_F)
    core.on_message("A", REG_T)
    assert rec.take() == []
    core.grace_expired("A")
    assert rec.take() == [("bus", "router", {"k": "up", "c": "A", "ns": "default", "s": 1}, REG_F),
                          ("bus", "router", {"k": "up", "c": "A", "ns": "default", "s": 2}, REG_T)]
    core.on_message("A", _register("orders"))
    (_, header, _), = rec.bus_frames()
    assert header["fixed"] == "default"  # the router is told the namespace is already fixed
    rec.take()
    core.on_frame("router", {"k": "metaok", "c": "A", "ok": True, "ns": "orders", "id": None}, b"")
    assert core.conns["A"].ns == "default"
    core.grace_expired("A")  # a late timer changes nothing
    assert rec.take() == []


def test_grace_after_metaok_is_a_no_op(core, rec) -> None:
    core.on_message("A", _register("orders"))
    core.on_frame("router", {"k": "metaok", "c": "A", "ok": True, "ns": "orders", "id": None}, b"")
    rec.take()
    core.grace_expired("A")
    core.grace_expired("gone")
    assert rec.take() == [] and core.conns["A"].ns == "orders"


def test_rejected_metaok_answers_false_and_closes(core, rec) -> None:
    core.on_message("A", _register("orders", inv_id="r1"))
    rec.take()
    core.on_frame("router", {"k": "metaok", "c": "A", "ok": False, "ns": "orders", "id": "r1"}, b"")
    events = rec.take()
    assert orjson.loads(events[0][2])["result"] == {"success": False}
    assert events[1] == ("close", "A")
    assert events[2] == ("bus", "router", {"k": "conn", "c": "A", "ev": "close"}, b"")
    assert "A" not in core.conns


@pytest.mark.parametrize("ns", ["", "   ", 5])
def test_blank_namespace_on_register_is_refused(core, rec, ns) -> None:
    core.on_message("A", _register(ns, inv_id="r1"))
    assert rec.ws_to("A") == [{"type": "invocationresult", "invocation_id": "r1",
                               "function_id": "engine::workers::register",
                               "error": {"code": "INVALID_NAMESPACE", "message": "namespace must not be blank"}}]
    assert rec.bus_frames() == []
    rec.take()
    core.on_message("A", _register(ns))  # void: refused silently
    assert rec.take() == []


def test_down_and_close_frames_from_the_router(core, rec) -> None:
    core.on_frame("router", {"k": "down", "c": "A"}, b'{"type":"registrationrejected"}')
    core.on_frame("router", {"k": "down", "c": "nobody"}, b'{}')
    assert rec.take() == [("ws", "A", b'{"type":"registrationrejected"}')]
    core.on_frame("router", {"k": "close", "c": "B"}, b"")
    core.on_frame("router", {"k": "close", "c": "nobody"}, b"")
    assert rec.take() == [("close", "B"), ("bus", "router", {"k": "conn", "c": "B", "ev": "close"}, b"")]


def test_resync_replays_conn_meta_and_held_registrations(core, rec) -> None:
    core.on_message("A", _register("orders"))
    core.on_frame("router", {"k": "metaok", "c": "A", "ok": True, "ns": "orders", "id": None}, b"")
    reg_g = b'{"type":"registerfunction","id":"svc::g"}'
    for raw in (REG_T, REG_F, REG_TT, reg_g, UNREG_F):
        core.on_message("A", raw)
    meta = core.conns["A"].meta
    token_a, token_b = core.conns["A"].token, core.conns["B"].token
    rec.take()
    core.on_frame("gw2", {"k": "hello", "epoch": "x"}, b"")  # only the router's HELLO counts
    assert rec.take() == []
    seq = core.up_sent
    core.on_frame("router", {"k": "hello", "epoch": "e2"}, b"")
    up = {"k": "up", "c": "A", "ns": "orders"}
    assert rec.take() == [
        ("bus", "router", {"k": "hello", "epoch": "ep1"}, b""),  # lets the router see our next restart
        ("bus", "router", {"k": "conn", "c": "A", "ev": "open", "token": token_a, "ip": "10.0.0.1"}, b""),
        ("bus", "router", {"k": "meta", "c": "A", "id": None, "fixed": "orders"}, meta),
        # types, then functions, then triggers; the unregistered svc::f is gone
        ("bus", "router", {**up, "s": seq + 1}, REG_TT), ("bus", "router", {**up, "s": seq + 2}, reg_g),
        ("bus", "router", {**up, "s": seq + 3}, REG_T),
        ("bus", "router", {"k": "conn", "c": "B", "ev": "open", "token": token_b, "ip": "10.0.0.2"}, b""),
        # an UP the dead router never applied must not hold the ACK fence up: ask for an ACK
        ("bus", "router", {"k": "up", "c": None, "ns": None, "s": seq + 4}, b""),
    ]


@pytest.mark.parametrize("raw", [
    b"not json", b"{\"type\":", "[1,2]", b"42", b'"str"', b"null", b"", "   ",
    b'{"type":"no-such-type","id":"x"}', b'{"no":"type"}',
    b'{"type":"invokefunction","invocation_id":"i1"}',               # no function_id
    b'{"type":"invokefunction","invocation_id":"i1","function_id":7}',
    b'{"type":"invocationresult","result":1}',                        # no invocation_id
    b'{"type":"invocationresult","invocation_id":"never-sent","result":1}',
    b'\xff\xfe\x00garbage',
])
def test_malformed_frames_are_dropped_without_effects(core, rec, raw) -> None:
    core.on_message("A", raw)
    assert rec.take() == []
    assert set(core.conns) == {"A", "B"}


@pytest.mark.parametrize("prefix", [b"OTLP", b"MTRC", b"LOGS"])
def test_telemetry_binary_frames_are_dropped(core, rec, prefix) -> None:
    core.on_message("A", prefix + b'{"type":"ping"}')
    assert rec.take() == []


def test_ping_gets_pong_and_unknown_connections_are_ignored(core, rec) -> None:
    core.on_message("A", '{"type":"ping"}')
    assert rec.take() == [("ws", "A", b'{"type":"pong"}')]
    core.on_message("ghost", '{"type":"ping"}')
    core.closed("ghost")
    assert rec.take() == []


def test_reattach_and_provider_results_go_to_the_router_unbuffered(core, rec) -> None:
    core.on_message("A", '{"type":"reattach","previous_worker_id":"old","reattach_token":"t"}')
    core.on_message("A", '{"type":"triggerregistrationresult","id":"t1","trigger_type":"x","function_id":"f"}')
    frames = rec.bus_frames()
    assert [h for _, h, _ in frames] == [{"k": "up", "c": "A", "ns": None, "s": 1},
                                         {"k": "up", "c": "A", "ns": None, "s": 2}]
    assert orjson.loads(frames[0][2])["previous_worker_id"] == "old"
    assert orjson.loads(frames[1][2])["type"] == "triggerregistrationresult"


def test_registrations_between_meta_and_metaok_stay_buffered_in_order(core, rec) -> None:
    core.on_message("A", REG_TT)
    core.on_message("A", _register("orders"))
    core.on_message("A", REG_F)  # the router has not answered yet
    core.on_message("A", '{"type":"ping"}')  # never buffered
    assert [e[0] for e in rec.take()] == ["bus", "ws"]  # META, pong
    core.on_frame("router", {"k": "metaok", "c": "A", "ok": True, "ns": "orders", "id": None}, b"")
    assert [b for _, _, b in rec.bus_frames()] == [REG_TT, REG_F]


def test_unregistered_bindings_and_types_are_not_replayed(core, rec) -> None:
    core.grace_expired("A")
    core.on_message("A", REG_T)
    core.on_message("A", REG_TT)
    core.on_message("A", '{"type":"unregistertrigger","id":"t1"}')
    core.on_message("A", '{"type":"unregistertriggertype","id":"webhook"}')
    core.on_message("A", '{"type":"registerservice","id":"svc"}')  # forwarded, not replayed
    assert len(rec.bus_frames()) == 5
    assert core.conns["A"].held == {}


def test_a_flood_of_garbage_is_logged_a_few_times_with_a_count(core, rec, caplog) -> None:
    """12,000 warnings in 2 minutes came from one connection sending garbage."""
    import logging
    core.grace_expired("A")
    with caplog.at_level(logging.WARNING, logger="brokers.gateway.core"):
        for _ in range(2500):
            core.on_message("A", b"{not json")
    lines = [r.getMessage() for r in caplog.records if "dropping" in r.getMessage()]
    assert len(lines) == 5 + 2  # the first five, then at 1000 and 2000 with the count
    assert lines[-1].endswith("(2000 frames of this connection dropped so far)")
    assert rec.ws_to("A") == []  # never a reply (protocol §1.3)


def test_a_message_type_that_is_not_a_string_is_ignored(core, rec) -> None:
    """``{"type": {}}`` raised TypeError outside the guard and closed the connection."""
    core.grace_expired("A")
    rec.take()
    for raw in (b'{"type": {}}', b'{"type": []}', b'{"type": 5}', b'{"type": null}'):
        core.on_message("A", raw)
    assert rec.take() == []
