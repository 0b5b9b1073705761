"""Registry: function ownership (protocol.md §3.2, §5.4, §10.2), route broadcasts, node
hello/reset, reattach (§4.7), worker leases (§4.3) and engine::workers-available (workers-a §5.11)."""
from __future__ import annotations

import pytest

import orjson

from brokers.router.core import sanitize_name
from regfake import A, B, C, Reg


def test_first_owner_keeps_a_function_and_the_second_is_rejected(reg: Reg) -> None:
    reg.fn(A, "math::add", "orders")
    assert reg.route_broadcasts() == [[["+", "orders", "math::add", "gw1", "A"]]]
    assert reg.route_ops == [[["+", "orders", "math::add", "gw1", "A"]]]  # applied locally too
    reg.take()
    reg.fn(C, "math::add", "orders")
    assert reg.take() == [("gw2", {"k": "down", "c": "C"}, orjson.dumps({
        "type": "registrationrejected", "code": "FUNCTION_NAMESPACE_CONFLICT", "namespace": "orders",
        "function_id": "math::add", "owner_worker_id": "A"}))]
    assert reg.functions[("orders", "math::add")].owner == A
    reg.fn(C, "math::add", "billing")  # another namespace: no conflict
    assert reg.route_broadcasts() == [[["+", "billing", "math::add", "gw2", "C"]]]


def test_reregistration_by_the_owner_is_idempotent_and_updates_the_message(reg: Reg) -> None:
    reg.fn(A, "math::add", description="v1")
    reg.take()
    reg.functions_changed = False
    reg.fn(A, "math::add", description="v2")
    assert reg.take() == []  # no conflict, no route change
    assert reg.functions[("default", "math::add")].message["description"] == "v2"
    assert reg.functions_changed


def test_takeover_after_the_owner_disconnected(reg: Reg) -> None:
    reg.fn(A, "math::add")
    reg.take()
    reg.disconnect(A)
    assert reg.route_broadcasts() == [[["-", "default", "math::add", "gw1", "A"]]]
    reg.take()
    reg.fn(C, "math::add")
    assert reg.route_broadcasts() == [[["+", "default", "math::add", "gw2", "C"]]]
    assert reg.down(C) == []


def test_takeover_of_a_function_whose_owner_is_not_alive(reg: Reg) -> None:
    ghost = ("gw1", "ghost")  # e.g. a record left by a connection the router never saw close
    reg.register_function(ghost, "default", {"type": "registerfunction", "id": "x::y"})
    reg.take()
    reg.fn(B, "x::y")
    assert reg.down(B) == []
    assert reg.functions[("default", "x::y")].owner == B


def test_engine_prefix_outside_default_is_refused_with_empty_owner(reg: Reg) -> None:
    reg.fn(A, "engine::mine", "orders")
    assert reg.down(A) == [{"type": "registrationrejected", "code": "FUNCTION_NAMESPACE_CONFLICT",
                            "namespace": "orders", "function_id": "engine::mine", "owner_worker_id": ""}]
    assert ("orders", "engine::mine") not in reg.functions



@pytest.mark.parametrize("fid", ["engine::queue::enqueue", "engine::log::info", "engine::channels::create",
                                 "engine::baggage::get", "iii::durable::publish", "iii::anything",
                                 "state::set", "stream::get", "publish", "iii-http::on-config-change"])
def test_engine_ids_are_refused_to_workers_in_every_namespace_built_or_not(reg: Reg, fid: str) -> None:
    """The reference lets a worker claim ``engine::*`` in ``default`` (and every other
    built-in id); a worker that claimed ``engine::log::info`` received other workers' log
    lines. Every engine id is refused to connections, whether this engine has it or not."""
    reg.fn(A, fid)
    assert reg.down(A) == [{"type": "registrationrejected", "code": "FUNCTION_NAMESPACE_CONFLICT",
                            "namespace": "default", "function_id": fid, "owner_worker_id": ""}]
    assert ("default", fid) not in reg.functions


def test_sdk_helper_ids_and_lookalikes_stay_free(reg: Reg) -> None:
    for fid in ("stream::get(orders)", "state::custom", "engineering::x", "publisher"):
        reg.fn(A, fid)
        assert reg.down(A) == [] and ("default", fid) in reg.functions


def test_unregister_only_by_the_owner(reg: Reg) -> None:
    reg.fn(A, "math::add")
    reg.take()
    reg.up(B, "default", {"type": "unregisterfunction", "id": "math::add"})
    reg.up(A, "orders", {"type": "unregisterfunction", "id": "math::add"})  # other namespace
    assert reg.take() == [] and ("default", "math::add") in reg.functions
    reg.up(A, "default", {"type": "unregisterfunction", "id": "math::add"})
    assert reg.route_broadcasts() == [[["-", "default", "math::add", "gw1", "A"]]]
    assert reg.functions == {}


def test_registrations_from_unknown_connections_or_without_id_are_ignored(reg: Reg) -> None:
    reg.fn(("gw1", "never-opened"), "x::y")
    reg.up(A, "default", {"type": "registerfunction", "id": "   "})
    reg.up(A, "default", {"type": "registerfunction"})
    reg.up(A, "default", {"type": "nonsense"})
    assert reg.take() == [] and reg.functions == {}


def test_snapshot_resets_then_lists_every_route(reg: Reg) -> None:
    reg.fn(A, "a::f")
    reg.fn(C, "c::g", "orders")
    assert reg.snapshot() == [["="], ["+", "default", "a::f", "gw1", "A"], ["+", "orders", "c::g", "gw2", "C"]]


def test_hello_sends_the_snapshot_and_a_new_epoch_drops_the_node(reg: Reg) -> None:
    reg.hello("gw1", "e1", None, 5)
    assert reg.take() == [("gw1", {"k": "routes", "ops": [["="]]}, b"")]
    reg.fn(A, "a::f")
    reg.fn(C, "c::g")
    reg.hello("gw1", "e1", None, 6)  # same life: nothing dropped
    assert ("default", "a::f") in reg.functions and A in reg.workers
    reg.take()
    reg.hello("gw1", "e2", None, 7)
    assert A not in reg.workers and B not in reg.workers and C in reg.workers
    sent = reg.take()
    routes = [(n, h["ops"]) for n, h, _ in sent if h["k"] == "routes"]
    assert ("gw2", [["-", "default", "a::f", "gw1", "A"]]) in routes
    resets = [(n, h) for n, h, _ in sent if h["k"] == "reset"]
    assert sorted(resets, key=lambda r: r[0]) == [(p, {"k": "reset", "node": "gw1"}) for p in ("gw1", "gw2", "queue")]
    assert sent[-1] == ("gw1", {"k": "routes", "ops": [["="], ["+", "default", "c::g", "gw2", "C"]]}, b"")
    reg.hello("gw2", "x", None, 8, snapshot=False)  # while collecting replays: no partial snapshot
    assert reg.take() == []


def test_a_broker_hello_creates_its_worker(reg: Reg) -> None:
    reg.hello("queue", "e1", "iii-queue", 42)
    w = reg.workers[("queue", None)]
    assert (w.name, w.meta["runtime"], w.connected_at_ms) == ("iii-queue", "engine", 42)
    reg.fn(("queue", None), "engine::queue::enqueue")
    reg.take()
    reg.hello("queue", "e2", "iii-queue", 43)  # restarted: its functions go, the worker is back
    assert ("default", "engine::queue::enqueue") not in reg.functions
    assert ("queue", None) in reg.workers


def test_reattach_with_the_right_token_retires_the_old_connection(reg: Reg) -> None:
    reg.fn(A, "a::f")
    reg.take()
    new = ("gw2", "A2")
    reg.conn(new)
    for msg in ({"previous_worker_id": "A", "reattach_token": "wrong"},
                {"previous_worker_id": "A"},
                {"previous_worker_id": "nobody", "reattach_token": "tok-A"},
                {"previous_worker_id": "A2", "reattach_token": "tok"}):
        reg.up(new, "default", {"type": "reattach", **msg})
    assert A in reg.workers and [h["k"] for _, h, _ in reg.take()] == []
    reg.up(new, "default", {"type": "reattach", "previous_worker_id": "A", "reattach_token": "tok-A"})
    assert A not in reg.workers and ("default", "a::f") not in reg.functions
    sent = reg.take()
    assert sent[-1] == ("gw1", {"k": "close", "c": "A"}, b"")
    reg.fn(new, "a::f")  # the replay lands on a clean slate
    assert reg.down(new) == []


def test_worker_name_lease(reg: Reg) -> None:
    assert reg.register_worker(A, {"name": "svc", "namespace": "orders", "_caller_worker_id": "A"}, None) \
        == (True, "orders")
    assert reg.workers[A].ns == "orders" and "_caller_worker_id" not in reg.workers[A].meta
    reg.take()
    assert reg.register_worker(C, {"name": "svc", "namespace": "orders"}, None) == (False, "orders")
    assert reg.down(C) == [{"type": "registrationrejected", "code": "WORKER_NAMESPACE_CONFLICT",
                            "namespace": "orders", "worker_name": "svc", "owner_worker_id": "A"}]
    assert reg.workers[C].name is None
    assert reg.register_worker(B, {"name": "svc"}, None) == (True, "default")  # other namespace
    assert reg.register_worker(A, {"name": "svc", "namespace": "orders"}, None) == (True, "orders")  # same owner
    reg.disconnect(A)
    reg.take()
    assert reg.register_worker(C, {"name": "svc", "namespace": "orders"}, None) == (True, "orders")
    assert reg.leases[("orders", "svc")] == C


def test_register_worker_fixed_namespace_defaults_and_sanitising(reg: Reg) -> None:
    assert reg.register_worker(A, {"namespace": "orders", "name": "x"}, "default") == (True, "default")
    assert reg.register_worker(B, None, None) == (True, "default")
    assert reg.workers[B].meta["runtime"] == "unknown" and reg.workers[B].name is None
    reg.register_worker(C, {"name": "\x1b[31mred\u202e  ", "description": "  d\x00\n", "runtime": "node"}, None)
    assert reg.workers[C].name == "[31mred"
    assert reg.workers[C].meta["description"] == "d" and reg.workers[C].meta["runtime"] == "node"
    assert reg.register_worker(("gw9", "nobody"), {"name": "x"}, None) == (False, "default")
    assert sanitize_name("   ") is None and sanitize_name(5) is None
    assert sanitize_name("n" * 300) == "n" * 280


def test_workers_available_fires_on_connect_metadata_and_disconnect(reg: Reg) -> None:
    me = ("router", None)
    reg.hello("router", "e", "iii-engine-functions", 0)
    reg.tt(me, "engine::workers-available")
    reg.bind(A, "wa", "engine::workers-available", fid="svc::watch")
    assert reg.bindings["wa"].provider == ("default", "engine::workers-available")
    assert reg.down(me) == []  # the router is the provider itself: nothing goes on the bus
    new = ("gw2", "N")
    reg.conn(new)
    reg.register_worker(new, {"name": "n"}, None)
    reg.disconnect(new)
    reg.disconnect(("queue", None))  # not a connection: no event
    assert reg.fired == [("wa", {"event": "worker_connected", "worker_id": "N"}),
                         ("wa", {"event": "worker_metadata_updated", "worker_id": "N"}),
                         ("wa", {"event": "worker_disconnected", "worker_id": "N"})]
    reg.conn(new)  # a second connect of a known owner fires nothing more
    reg.conn(new)
    assert len(reg.fired) == 4


def test_rename_frees_the_old_name(reg: Reg) -> None:
    assert reg.register_worker(A, {"name": "x"}, None) == (True, "default")
    assert reg.register_worker(A, {"name": "y"}, None) == (True, "default")
    assert reg.register_worker(B, {"name": "x"}, None) == (True, "default")


def test_names_lose_every_control_and_bidi_character() -> None:
    from brokers.router.core import sanitize_name
    assert sanitize_name("a\x85b\x9bc\u202e ") == "abc"
    assert sanitize_name(" \x00 ") is None
