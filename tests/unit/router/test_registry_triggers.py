"""Registry: trigger types and bindings (protocol.md §3.7-§3.12, §6.1, §6.2, §4.6 steps 4-5).

Provider ``P`` lives on gw2, ``Q`` on gw1; binders are ``A``/``B`` (gw1) and ``C`` (gw2)."""
from __future__ import annotations

from regfake import A, B, C, P, Q, Reg


def reg_msg(bid: str, ttype: str, fid: str = "svc::f", **extra) -> dict:
    return {"type": "registertrigger", "id": bid, "trigger_type": ttype, "function_id": fid,
            "config": {"c": 1}, **extra}


def test_binding_without_provider_is_parked_then_delivered(reg: Reg) -> None:
    reg.bind(A, "b1", "webhook", metadata={"m": 1})
    assert reg.take() == [] and reg.bindings["b1"].provider is None
    reg.tt(P, "webhook")
    assert reg.down(P) == [reg_msg("b1", "webhook", metadata={"m": 1})]
    assert reg.bindings["b1"].provider == ("default", "webhook")


def test_delivery_names_target_and_provider_namespaces_only_when_not_default(reg: Reg) -> None:
    reg.tt(P, "webhook", "orders")
    reg.bind(A, "b1", "webhook", namespace="billing", trigger_namespace="orders")
    assert reg.down(P) == [reg_msg("b1", "webhook", namespace="billing", trigger_namespace="orders")]


def test_missing_config_is_null(reg: Reg) -> None:
    reg.tt(P, "webhook")
    reg.up(A, "default", {"type": "registertrigger", "id": "b1", "trigger_type": "webhook", "function_id": "f"})
    assert reg.down(P) == [{"type": "registertrigger", "id": "b1", "trigger_type": "webhook",
                            "function_id": "f", "config": None}]


def test_provider_disconnect_parks_and_a_new_provider_gets_the_binding_again(reg: Reg) -> None:
    reg.tt(P, "webhook")
    reg.bind(A, "b1", "webhook")
    reg.take()
    reg.disconnect(P)
    assert reg.bindings["b1"].provider is None and ("default", "webhook") not in reg.trigger_types
    assert reg.down(A) == []  # parking is silent
    reg.take()
    reg.tt(Q, "webhook")
    assert reg.down(Q) == [reg_msg("b1", "webhook")]


def test_reregistered_type_redelivers_filed_bindings(reg: Reg) -> None:
    reg.tt(P, "webhook")
    reg.bind(A, "b1", "webhook")
    reg.bind(C, "b2", "webhook")
    reg.take()
    reg.tt(P, "webhook")  # e.g. the provider reconnected without the router noticing a gap
    assert [m["id"] for m in reg.down(P)] == ["b1", "b2"]


def test_trigger_namespace_is_strict(reg: Reg) -> None:
    reg.tt(P, "webhook")  # default only
    reg.bind(A, "b1", "webhook", trigger_namespace="orders")
    assert reg.bindings["b1"].provider is None and reg.down(P) == []
    reg.tt(Q, "webhook", "orders")
    assert reg.down(Q) == [reg_msg("b1", "webhook", trigger_namespace="orders")]


def test_resolve_prefers_home_namespace_then_falls_back_to_default(reg: Reg) -> None:
    reg.tt(P, "webhook")
    reg.bind(A, "b1", "webhook", ns="orders")  # home namespace orders, no provider there yet
    assert reg.bindings["b1"].provider == ("default", "webhook")
    assert reg.down(P) == [reg_msg("b1", "webhook")]
    reg.take()
    reg.tt(Q, "webhook", "orders")  # re-home: old provider told to drop, new one told to bind
    assert reg.down(P) == [{"type": "unregistertrigger", "id": "b1", "trigger_type": "webhook"}]
    assert reg.down(Q) == [reg_msg("b1", "webhook", trigger_namespace="orders")]
    assert reg.bindings["b1"].provider == ("orders", "webhook")
    reg.take()
    reg.disconnect(Q)  # back to the default provider
    assert reg.down(P) == [reg_msg("b1", "webhook")]


def test_default_home_binding_is_not_rehomed_by_a_namespaced_provider(reg: Reg) -> None:
    reg.tt(P, "webhook")
    reg.bind(A, "b1", "webhook")
    reg.take()
    reg.tt(Q, "webhook", "orders")
    assert reg.take() == [] and reg.bindings["b1"].provider == ("default", "webhook")


def test_provider_error_parks_the_binding_and_reaches_the_binder(reg: Reg) -> None:
    reg.tt(P, "webhook")
    reg.bind(C, "b1", "webhook")
    reg.take()
    err = {"code": "trigger_registration_failed", "message": "bad url"}
    result = {"type": "triggerregistrationresult", "id": "b1", "trigger_type": "webhook", "function_id": "svc::f"}
    assert reg.trigger_result(Q, "default", {**result, "error": err}) is None  # not the provider
    assert reg.trigger_result(P, "default", result) is None  # success: nothing to do
    assert reg.take() == [] and reg.bindings["b1"].provider == ("default", "webhook")
    assert reg.trigger_result(P, "default", {**result, "error": err}) == err
    assert reg.bindings["b1"].provider is None
    assert reg.down(C) == [{**result, "error": err}]
    reg.take()
    assert reg.trigger_result(P, "default", {**result, "error": err}) is None  # already parked
    reg.tt(Q, "webhook")  # a parked binding is delivered to the next provider
    assert [m["id"] for m in reg.down(Q)] == ["b1"]


def test_blank_namespaces_are_refused_with_invalid_namespace(reg: Reg) -> None:
    reg.tt(P, "webhook")
    reg.take()
    reg.bind(A, "b1", "webhook", namespace="  ")
    reg.bind(A, "b2", "webhook", trigger_namespace="")
    assert [m["error"]["code"] for m in reg.down(A)] == ["INVALID_NAMESPACE"] * 2
    assert reg.down(A)[0] == {"type": "triggerregistrationresult", "id": "b1", "trigger_type": "webhook",
                              "function_id": "svc::f", "error": {"code": "INVALID_NAMESPACE",
                                                                  "message": "namespace must not be blank"}}
    assert reg.bindings == {} and reg.down(P) == []


def test_same_binding_id_replaces_the_old_binding(reg: Reg) -> None:
    reg.tt(P, "webhook")
    reg.tt(Q, "ticker")
    reg.bind(A, "b1", "webhook")
    reg.take()
    reg.bind(A, "b1", "ticker", fid="svc::g")
    assert reg.down(P) == [{"type": "unregistertrigger", "id": "b1", "trigger_type": "webhook"}]
    assert reg.down(Q) == [reg_msg("b1", "ticker", fid="svc::g")]
    assert len(reg.bindings) == 1


def test_unregistertrigger_tells_the_provider_and_is_idempotent(reg: Reg) -> None:
    reg.tt(P, "webhook")
    reg.bind(A, "b1", "webhook")
    reg.take()
    reg.up(B, "default", {"type": "unregistertrigger", "id": "b1"})  # not the binder
    assert reg.take() == [] and "b1" in reg.bindings
    reg.up(A, "default", {"type": "unregistertrigger", "id": "b1", "trigger_type": "webhook"})
    assert reg.take() == [("gw2", {"k": "down", "c": "P"}, b'{"type":"unregistertrigger","id":"b1",'
                                                           b'"trigger_type":"webhook"}')]
    assert reg.bindings == {}
    reg.up(A, "default", {"type": "unregistertrigger", "id": "b1"})
    assert reg.take() == []


def test_unregistering_a_parked_binding_sends_nothing(reg: Reg) -> None:
    reg.bind(A, "b1", "nobody-provides")
    assert reg.unregister_trigger(A, "default", {"id": "b1"}) is True
    assert reg.take() == [] and reg.bindings == {}


def test_unregistertriggertype_parks_or_rehomes_its_bindings(reg: Reg) -> None:
    reg.tt(P, "webhook")
    reg.tt(Q, "webhook", "orders")
    reg.bind(A, "home-orders", "webhook", ns="orders")
    reg.bind(A, "strict-orders", "webhook", trigger_namespace="orders")
    reg.take()
    reg.up(C, "orders", {"type": "unregistertriggertype", "id": "webhook"})  # not the provider
    assert reg.take() == [] and ("orders", "webhook") in reg.trigger_types
    reg.up(Q, "default", {"type": "unregistertriggertype", "id": "webhook", "namespace": "orders"})
    assert ("orders", "webhook") not in reg.trigger_types
    assert reg.bindings["home-orders"].provider == ("default", "webhook")
    assert reg.down(P) == [reg_msg("home-orders", "webhook")]
    assert reg.bindings["strict-orders"].provider is None


def test_disconnect_removes_everything_the_connection_registered(reg: Reg) -> None:
    reg.register_worker(P, {"name": "prov"}, None)
    reg.fn(P, "prov::f")
    reg.tt(P, "webhook")
    reg.tt(Q, "ticker")
    reg.bind(P, "mine", "ticker")  # P's own binding on Q's type
    reg.bind(A, "theirs", "webhook")  # A's binding on P's type
    reg.register_trigger(None, "default", reg_msg("durable", "webhook"))  # engine::register_trigger
    reg.take()
    reg.disconnect(P)
    assert reg.route_broadcasts() == [[["-", "default", "prov::f", "gw2", "P"]]]
    assert reg.down(Q) == [{"type": "unregistertrigger", "id": "mine", "trigger_type": "ticker"}]
    assert "mine" not in reg.bindings
    assert reg.bindings["theirs"].provider is None and reg.bindings["durable"].provider is None
    assert reg.trigger_types.keys() == {("default", "ticker")}
    assert ("default", "prov") not in reg.leases and P not in reg.workers
    assert reg.down(P) == []  # nothing is sent to the gone connection
    reg.take()
    reg.disconnect(P)  # cleanup runs once
    assert reg.take() == []


def test_disconnect_keeps_a_type_already_replaced_by_a_newer_provider(reg: Reg) -> None:
    reg.tt(P, "webhook")
    reg.tt(Q, "webhook")  # last writer wins
    reg.bind(A, "b1", "webhook")
    reg.take()
    reg.disconnect(P)
    assert reg.trigger_types[("default", "webhook")].provider == Q
    assert reg.bindings["b1"].provider == ("default", "webhook") and reg.take() == []


def test_durable_binding_survives_and_only_goes_when_unregistered_without_owner(reg: Reg) -> None:
    reg.tt(P, "webhook")
    b = reg.register_trigger(None, "default", reg_msg("d1", "webhook"))
    assert b is not None and b.owner is None and b.provider == ("default", "webhook")
    assert reg.unregister_trigger(A, "default", {"id": "d1"}) is False  # a connection cannot
    assert reg.unregister_trigger(None, "default", {"id": "d1"}) is True
    assert reg.unregister_trigger(None, "default", {"id": "d1"}) is False


def test_bindings_of_a_dead_owner_are_dropped_when_a_type_registers(reg: Reg) -> None:
    ghost = ("gw1", "ghost")
    reg.register_trigger(ghost, "default", reg_msg("g1", "webhook"))  # owner never connected
    reg.tt(P, "webhook")
    assert "g1" not in reg.bindings and reg.down(P) == []


def test_invalid_bindings_and_types_are_ignored(reg: Reg) -> None:
    reg.up(A, "default", {"type": "registertrigger", "id": "b1", "trigger_type": "webhook"})  # no function
    reg.up(A, "default", {"type": "registertrigger", "trigger_type": "webhook", "function_id": "f"})
    reg.up(P, "default", {"type": "registertriggertype", "description": "no id"})
    reg.up(P, "default", {"type": "registertriggertype", "id": "webhook", "namespace": " "})
    assert reg.bindings == {} and reg.trigger_types == {} and reg.take() == []


def test_engine_trigger_types_fire_only_their_bindings(reg: Reg) -> None:
    me = ("router", None)
    reg.hello("router", "e", "iii-engine-functions", 0)
    reg.tt(me, "engine::functions-available")
    reg.bind(A, "fa", "engine::functions-available")
    reg.bind(A, "other", "webhook")
    reg.fire_engine("engine::functions-available", {"event": "functions_changed", "functions": []})
    reg.fire_engine("engine::workers-available", {"event": "x"})
    assert reg.fired == [("fa", {"event": "functions_changed", "functions": []})]


def test_a_binding_id_of_another_live_worker_cannot_be_taken_over(reg: Reg) -> None:
    """The reference let any worker re-send ``registertrigger`` with another's binding id
    (ids are listed to everyone) and receive that binding's events from then on."""
    reg.tt(P, "webhook")
    reg.bind(A, "b1", "webhook", fid="owner::on")
    reg.take()
    reg.bind(C, "b1", "webhook", fid="thief::on")
    assert reg.down(C) == [{"type": "triggerregistrationresult", "id": "b1", "trigger_type": "webhook",
                            "function_id": "thief::on",
                            "error": {"code": "trigger_registration_failed",
                                      "message": "trigger id b1 belongs to another worker"}}]
    assert reg.down(P) == [] and reg.bindings["b1"].function_id == "owner::on"
    reg.up(C, "default", {"type": "unregistertrigger", "id": "b1"})  # not theirs to remove either
    assert "b1" in reg.bindings and reg.down(P) == []
    reg.register_trigger(None, "default", reg_msg("d1", "webhook"))  # a durable one
    reg.take()
    reg.bind(C, "d1", "webhook", fid="thief::on")
    assert reg.bindings["d1"].function_id == "svc::f" and reg.bindings["d1"].owner is None


def test_engine_unregister_trigger_removes_only_durable_bindings(reg: Reg) -> None:
    reg.tt(P, "webhook")
    reg.bind(A, "b1", "webhook")
    reg.register_trigger(None, "default", reg_msg("d1", "webhook"))
    reg.take()
    assert reg.unregister_trigger(None, "default", {"id": "b1"}) is False  # A's, not the engine's
    assert "b1" in reg.bindings and reg.down(P) == []
    assert reg.unregister_trigger(None, "default", {"id": "d1"}) is True
    assert reg.down(P) == [{"type": "unregistertrigger", "id": "d1", "trigger_type": "webhook"}]


def test_a_dead_owners_binding_id_may_be_reused(reg: Reg) -> None:
    reg.tt(P, "webhook")
    ghost = ("gw1", "ghost")
    reg.register_trigger(ghost, "default", reg_msg("b1", "webhook"))
    reg.take()
    reg.bind(C, "b1", "webhook", fid="new::on")
    assert reg.bindings["b1"].owner == C and reg.down(C) == []


def test_built_in_trigger_types_are_refused_to_workers(reg: Reg) -> None:
    """A worker providing ``state`` or ``cron`` would receive every other worker's
    bindings of that type (and their configs)."""
    for ttype in ("state", "cron", "http", "subscribe", "durable:subscriber", "engine::x"):
        reg.tt(P, ttype)
        assert ("default", ttype) not in reg.trigger_types
    reg.bind(A, "b1", "cron")
    assert reg.bindings["b1"].provider is None and reg.down(P) == []


def test_processes_of_one_broker_each_get_every_binding_of_their_type(reg: Reg) -> None:
    """``processes: 2`` of the HTTP worker: both serve ``http``, so both need every route;
    the second must not replace the first as the provider."""
    h0, h1 = ("http-0", None), ("http-1", None)
    reg.hello("http-0", "e0", "iii-http", 1)
    reg.hello("http-1", "e1", "iii-http", 1)
    reg.tt(h0, "http")
    reg.bind(A, "r1", "http", config={"api_path": "/a"})
    reg.tt(h1, "http")  # joins: learns the existing binding
    assert [m["id"] for m in reg.down(h1) if m["type"] == "registertrigger"] == ["r1"]
    reg.take()
    reg.bind(A, "r2", "http")
    assert [m["id"] for m in reg.down(h0)] == ["r2"] and [m["id"] for m in reg.down(h1)] == ["r2"]
    reg.hello("http-0", "e0-restarted", "iii-http", 2)  # http-0 restarted: http-1 carries on
    assert reg.trigger_types[("default", "http")].provider == h1
    assert reg.bindings["r1"].provider == ("default", "http")
    reg.take()
    reg.tt(("http-0", None), "http")  # back: it gets every binding again
    assert sorted(m["id"] for m in reg.down(("http-0", None))) == ["r1", "r2"]
    reg.take()
    reg.up(A, "default", {"type": "unregistertrigger", "id": "r1"})
    assert [m["type"] for m in reg.down(h0)] == [m["type"] for m in reg.down(h1)] == ["unregistertrigger"]


def test_a_worker_with_the_same_name_does_not_become_a_replica(reg: Reg) -> None:
    reg.tt(P, "webhook")
    reg.tt(Q, "webhook")  # two connections: the later one takes over, as before
    assert reg.trigger_types[("default", "webhook")].provider == Q
    assert reg.trigger_types[("default", "webhook")].replicas == []
