"""A connection's own registrations route at once (the reference registers synchronously)."""
from __future__ import annotations

import orjson

from brokers.gateway.core import GatewayCore



def _ready(core: GatewayCore, conn: str) -> None:
    core.grace_expired(conn)  # namespace fixed to default


def test_a_function_is_callable_right_after_its_registration(core: GatewayCore, rec) -> None:
    _ready(core, "A")
    _ready(core, "B")
    core.on_message("B", b'{"type":"registerfunction","id":"svc::new"}')
    rec.take()
    core.on_message("A", b'{"type":"invokefunction","function_id":"svc::new","invocation_id":"i1","data":{}}')
    delivered = rec.ws_to("B")
    assert delivered and delivered[0]["function_id"] == "svc::new" and delivered[0]["invocation_id"] == "i1"


def test_a_taken_id_is_not_claimed_and_a_rejection_withdraws_the_claim(core: GatewayCore, rec) -> None:
    _ready(core, "A")
    core.on_message("A", b'{"type":"registerfunction","id":"math::add"}')
    assert core.routes.get("default", "math::add") == ("gw1", "B")  # B keeps it
    core.on_message("A", b'{"type":"registerfunction","id":"svc::x"}')
    assert core.routes.get("default", "svc::x") == ("gw1", "A")
    rejection = {"type": "registrationrejected", "code": "FUNCTION_NAMESPACE_CONFLICT",
                 "namespace": "default", "function_id": "svc::x", "owner_worker_id": "Z"}
    core.on_frame("router", {"k": "down", "c": "A"}, orjson.dumps(rejection))
    assert core.routes.get("default", "svc::x") is None
    assert rec.ws_to("A")[-1] == rejection


def test_closing_a_connection_drops_its_routes_at_once(core: GatewayCore, rec) -> None:
    _ready(core, "A")
    core.on_message("A", b'{"type":"registerfunction","id":"svc::y"}')
    core.closed("A")
    assert core.routes.get("default", "svc::y") is None


def test_a_pending_connection_calling_its_own_buffered_function_waits_for_the_buffer(
        core: GatewayCore, rec) -> None:
    # Node 0.22: registerfunction, then its queued call, then engine::workers::register.
    core.on_message("A", b'{"type":"registerfunction","id":"svc::own"}')
    core.on_message("A", b'{"type":"invokefunction","function_id":"svc::own","invocation_id":"i9","data":{}}')
    assert not rec.ws_to("A")  # neither answered nor failed yet
    core.grace_expired("A")
    calls = [m for m in rec.ws_to("A") if m.get("type") == "invokefunction"]
    assert calls and calls[0]["invocation_id"] == "i9" and calls[0]["data"]["_caller_worker_id"] == "A"


def test_a_pending_connection_calling_an_unknown_function_is_answered_at_once(core: GatewayCore, rec) -> None:
    core.on_message("A", b'{"type":"registerfunction","id":"svc::own"}')
    core.on_message("A", b'{"type":"invokefunction","function_id":"nope::x","invocation_id":"i8"}')
    assert rec.ws_to("A")[-1]["error"]["code"] == "function_not_found"


def test_calls_to_other_nodes_go_through_the_router_until_it_acks_the_registrations(
        core: GatewayCore, rec) -> None:
    """frames.ACK: a call must not overtake a registration sent before it."""
    _ready(core, "A")
    core.on_frame("router", {"k": "routes", "ops": [["+", "default", "engine::queue::enqueue", "queue", None]]}, b"")
    core.on_message("A", b'{"type":"registerfunction","id":"svc::job"}')
    enqueue = (b'{"type":"invokefunction","function_id":"svc::job","invocation_id":"%s","data":{},'
               b'"action":{"type":"enqueue","queue":"q"}}')
    rec.take()
    core.on_message("A", enqueue % b"i1")
    core.on_message("A", b'{"type":"invokefunction","function_id":"math::add","invocation_id":"i2","data":{}}')
    calls = [(node, header.get("via"), header["id"]) for node, header, _ in rec.bus_frames()]
    assert calls == [("router", "queue", "i1")]  # the local call to B stays local, unfenced
    assert rec.ws_to("B")[0]["invocation_id"] == "i2"
    rec.take()
    core.on_frame("router", {"k": "ack", "s": core.up_sent - 1}, b"")  # an older ACK: still fenced
    core.on_message("A", enqueue % b"i3")
    core.on_frame("router", {"k": "ack", "s": core.up_sent}, b"")
    core.on_message("A", enqueue % b"i4")
    calls = [(node, header.get("via"), header["id"]) for node, header, _ in rec.bus_frames()]
    assert calls == [("router", "queue", "i3"), ("queue", None, "i4")]


ENQUEUE_ROUTE = {"k": "routes", "ops": [["+", "default", "engine::queue::enqueue", "queue", None]]}
DECLARE = (b'{"type":"invokefunction","function_id":"engine::workers::register",'
           b'"data":{"runtime":"python","name":"w"}}')


def _enqueue(fid: str, inv: str) -> bytes:
    return (b'{"type":"invokefunction","function_id":"%s","invocation_id":"%s","data":{},'
            b'"action":{"type":"enqueue","queue":"q"}}' % (fid.encode(), inv.encode()))


def test_a_declared_worker_calls_wait_behind_its_buffered_registrations(core: GatewayCore, rec) -> None:
    """The router answers the declaration a round trip later; a job for the function
    registered meanwhile must not reach the queue broker before the registration."""
    core.on_frame("router", ENQUEUE_ROUTE, b"")
    core.on_message("A", DECLARE)
    core.on_message("A", b'{"type":"registerfunction","id":"svc::job"}')
    core.on_message("A", _enqueue("svc::job", "i1"))
    core.on_message("A", b'{"type":"invokefunction","function_id":"math::add","invocation_id":"i2","data":{}}')
    assert [h["k"] for _, h, _ in rec.bus_frames()] == ["meta"] and not rec.ws_to("B")
    rec.take()
    core.on_frame("router", {"k": "metaok", "c": "A", "ok": True, "ns": "default", "id": None}, b"")
    sent = [(node, h["k"], h.get("via")) for node, h, _ in rec.bus_frames()]
    assert sent == [("router", "up", None), ("router", "inv", "queue")]  # in order, fenced
    assert rec.ws_to("B")[0]["invocation_id"] == "i2"


def test_an_undeclared_worker_waits_only_for_calls_naming_its_buffered_functions(
        core: GatewayCore, rec) -> None:
    core.on_frame("router", ENQUEUE_ROUTE, b"")
    core.on_message("A", b'{"type":"registerfunction","id":"svc::job"}')
    core.on_message("A", _enqueue("svc::job", "i1"))
    core.on_message("A", _enqueue("svc::other", "i2"))
    assert [(h["k"], h["id"]) for _, h, _ in rec.bus_frames()] == [("inv", "i2")]
    rec.take()
    core.grace_expired("A")
    assert [(h["k"], h.get("id")) for _, h, _ in rec.bus_frames()] == [("up", None), ("inv", "i1")]


def test_an_engine_id_is_never_routed_to_a_worker_even_before_the_router_refuses_it(core, rec) -> None:
    """Claiming ``engine::log::info`` locally would route other workers' log lines (with
    their data) to the claimant until the router's refusal arrived."""
    _ready(core, "A")
    for fid in ("engine::log::info", "iii::x", "state::set", "publish"):
        core.on_message("A", orjson.dumps({"type": "registerfunction", "id": fid}))
        assert core.routes.get("default", fid) is None
    assert [f["k"] for _, f, _ in rec.bus_frames()].count("up") == 4  # the router still decides


def test_a_claim_outlives_a_snapshot_taken_before_the_router_applied_it(core: GatewayCore, rec) -> None:
    """The router's settling snapshot ("=") can cross a new registration's UP: the claim is
    applied again after it, so the worker's own call right after finds its function (the
    seed page's math_add.py failed so once). An acknowledged claim is the router's again."""
    _ready(core, "A")
    core.on_message("A", b'{"type":"registerfunction","id":"svc::fresh"}')
    snapshot = [["="], ["+", "default", "math::add", "gw1", "B"]]
    core.on_frame("router", {"k": "routes", "ops": snapshot}, b"")
    assert core.routes.get("default", "svc::fresh") == ("gw1", "A")
    rec.take()
    core.on_message("A", b'{"type":"invokefunction","function_id":"svc::fresh","invocation_id":"i1","data":{}}')
    assert rec.ws_to("A")[0]["invocation_id"] == "i1"  # delivered to A itself, not refused
    core.on_frame("router", {"k": "ack", "s": core.up_sent}, b"")
    core.on_frame("router", {"k": "routes", "ops": snapshot}, b"")  # the router left it out: gone
    assert core.routes.get("default", "svc::fresh") is None


def test_a_snapshot_does_not_bring_back_a_closed_connections_claim(core: GatewayCore, rec) -> None:
    _ready(core, "A")
    core.on_message("A", b'{"type":"registerfunction","id":"svc::gone"}')
    core.closed("A")
    core.on_frame("router", {"k": "routes", "ops": [["="]]}, b"")
    assert core.routes.get("default", "svc::gone") is None
