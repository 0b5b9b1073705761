"""The engine::* introspection functions over a populated Registry (workers-a §5.1-§5.7,
§8 namespace_introspection / namespace_trigger tests)."""
from __future__ import annotations

import pytest

from brokers.router import builtins as bi
from brokers.kit.errors import EngineError
from regfake import A, B, C, P, Reg

STATE, ROUTER, QUEUE, CRON = ("state", None), ("router", None), ("queue", None), ("cron", None)
D = ("gw2", "D")  # a second worker named "math", in namespace orders


@pytest.fixture
def full(reg: Reg) -> Reg:
    reg.hello("state", "e", "iii-state", 1)
    reg.hello("router", "e", "iii-engine-functions", 2)
    reg.hello("queue", "e", "iii-queue", 3)
    reg.hello("cron", "e", "iii-cron", 4)
    reg.conn(D)
    reg.register_worker(A, {"name": "math", "pid": 10, "runtime": "python", "version": "0.25.0", "os": "Linux"}, None)
    reg.register_worker(C, {"name": "orders-svc", "pid": 11, "runtime": "node", "namespace": "orders"}, None)
    reg.register_worker(D, {"name": "math", "pid": 12, "runtime": "node", "namespace": "orders"}, None)
    reg.register_worker(P, {"name": "prov", "pid": 13, "runtime": "python"}, None)
    # B is connected but never reported a pid (and has no name)
    reg.fn(STATE, "state::set", description="Set a value in state")
    reg.fn(STATE, "iii-state::on-config-change", metadata={"internal": True})
    reg.fn(ROUTER, "engine::functions::list", description="List registered functions")
    reg.fn(QUEUE, "engine::queue::enqueue")
    reg.fn(A, "math::add", description="Add two numbers", request_format={"type": "object"},
           response_format={"type": "number"}, metadata={"owner": "math-team"})
    reg.fn(A, "math::adder")
    reg.fn(A, "add::x")
    reg.fn(A, "math::sub", description="can ADD too, negatively")
    reg.fn(A, "dup::f")
    reg.fn(C, "orders::place", "orders")
    reg.fn(C, "dup::f", "orders")
    reg.fn(C, "shared::f", "orders")
    reg.fn(D, "shared::f", "billing")
    reg.fn(D, "math::add", "orders")
    reg.fn(B, "plain")
    reg.tt(STATE, "state", description="State trigger")
    reg.tt(ROUTER, "engine::workers-available")
    reg.tt(P, "webhook", description="Webhook trigger", trigger_request_format={"type": "object"},
           call_request_format={"type": "string"})
    reg.tt(CRON, "cron", description="Cron-based scheduled triggers")
    reg.tt(B, "foo::bar", description="Foo")
    reg.bind(A, "b1", "webhook", fid="math::add", config={"url": "/" + "x" * 100}, metadata={"m": 1})
    reg.bind(C, "b2", "state", fid="math::add", namespace="orders")
    reg.bind(C, "b3", "engine::workers-available", fid="engine::hidden")
    reg.bind(A, "b4", "nobody-provides", fid="gone::fn")
    reg.take()
    return reg


def ids(rows: list[dict], key: str = "function_id") -> list:
    return [r[key] for r in rows]


def err(fn, reg, data) -> EngineError:
    with pytest.raises(EngineError) as info:
        fn(reg, data)
    return info.value


# ---- engine::functions::list --------------------------------------------------------------

def test_functions_list_hides_engine_and_internal_functions_by_default(full: Reg) -> None:
    rows = bi.functions_list(full, {})["functions"]
    assert ids(rows) == sorted(ids(rows))
    assert "engine::functions::list" not in ids(rows) and "iii-state::on-config-change" not in ids(rows)
    assert "engine::queue::enqueue" in ids(rows)
    everything = ids(bi.functions_list(full, {"include_internal": True})["functions"])
    assert {"engine::functions::list", "iii-state::on-config-change"} <= set(everything)
    assert len(everything) == len(full.functions)


def test_functions_list_rows_carry_namespace_and_worker_name(full: Reg) -> None:
    rows = {(r["namespace"], r["function_id"]): r for r in bi.functions_list(full, {})["functions"]}
    assert rows[("default", "math::add")] == {"function_id": "math::add", "namespace": "default",
                                              "worker_name": "math", "description": "Add two numbers",
                                              "metadata": {"owner": "math-team"}}
    assert rows[("default", "state::set")]["worker_name"] == "iii-state"
    assert rows[("orders", "orders::place")] == {"function_id": "orders::place", "namespace": "orders",
                                                 "worker_name": "orders-svc"}  # no description/metadata keys
    assert rows[("default", "plain")]["worker_name"] is None  # nameless worker, no "::"
    assert rows[("billing", "shared::f")]["worker_name"] == "math"


def test_functions_list_prefix_and_worker_filters(full: Reg) -> None:
    assert ids(bi.functions_list(full, {"prefix": "math::"})["functions"]) == \
        ["math::add", "math::add", "math::adder", "math::sub"]
    only_state = bi.functions_list(full, {"worker": "iii-state"})["functions"]
    assert ids(only_state) == ["state::set"]
    both = bi.functions_list(full, {"worker": "iii-state", "workers": ["orders-svc"]})["functions"]
    assert set(ids(both)) == {"state::set", "orders::place", "dup::f", "shared::f"}


def test_functions_list_search_ranks_then_sorts(full: Reg) -> None:
    rows = bi.functions_list(full, {"search": "ADD"})["functions"]
    # rank 0: id starts with it or a segment equals it; 1: id contains it; 2: description only
    assert [(r["function_id"], r["namespace"]) for r in rows] == [
        ("add::x", "default"), ("math::add", "default"), ("math::add", "orders"),
        ("math::adder", "default"), ("math::sub", "default")]
    assert bi.functions_list(full, {"search": "no-such-thing"}) == {"functions": []}


@pytest.mark.parametrize("data", [None, [], "x", 3])
def test_builtins_refuse_a_non_object_input(full: Reg, data) -> None:
    for fid, (fn, _) in bi.FUNCTIONS.items():
        e = err(fn, full, data)
        assert e.code == "deserialization_error"
        assert e.message.startswith(f"Failed to deserialize input for {fid}: ")


# ---- engine::functions::info --------------------------------------------------------------

def test_functions_info_single_detail(full: Reg) -> None:
    out = bi.functions_info(full, {"function_id": "math::add"})
    assert out == {"function_id": "math::add", "namespace": "default", "worker_name": "math",
                   "description": "Add two numbers", "metadata": {"owner": "math-team"},
                   "request_schema": {"type": "object"}, "response_schema": {"type": "number"},
                   "registered_triggers": [{"id": "b1", "trigger_type": "webhook",
                                            "config": {"url": "/" + "x" * 100}}]}
    orders = bi.functions_info(full, {"function_id": "math::add", "namespace": "orders"})
    assert orders["worker_name"] == "math" and orders["namespace"] == "orders"
    assert orders["registered_triggers"] == [{"id": "b2", "trigger_type": "state", "config": {"c": 1}}]


def test_functions_info_resolution_of_a_bare_id(full: Reg) -> None:
    assert bi.functions_info(full, {"function_id": "orders::place"})["namespace"] == "orders"  # unique
    assert bi.functions_info(full, {"function_id": "dup::f"})["namespace"] == "default"  # default wins
    e = err(bi.functions_info, full, {"function_id": "shared::f"})
    assert e.code == "NOT_FOUND"
    assert e.message == ("Function 'shared::f' is ambiguous: it is registered in namespace(s): billing, orders. "
                         "Pass `namespace` to select one.")
    assert bi.functions_info(full, {"function_id": "shared::f", "namespace": "billing"})["namespace"] == "billing"
    e = err(bi.functions_info, full, {"function_id": "orders::place", "namespace": "default"})  # strict
    assert (e.code, e.message) == ("NOT_FOUND", "Function 'orders::place' is not registered.")
    e = err(bi.functions_info, full, {"function_id": "does::not::exist"})
    assert (e.code, e.message) == ("NOT_FOUND", "Function 'does::not::exist' is not registered.")


def test_functions_info_batch_keeps_order_dedups_and_marks_misses(full: Reg) -> None:
    out = bi.functions_info(full, {"function_ids": ["math::add", "does::not::exist", "math::add", "state::set"]})
    rows = out["functions"]
    assert ids(rows) == ["math::add", "does::not::exist", "state::set"]
    assert rows[1] == {"function_id": "does::not::exist", "error": "not_found"}
    assert rows[0]["request_schema"] == {"type": "object"} and "error" not in rows[0]
    ambiguous = bi.functions_info(full, {"function_ids": ["shared::f"]})["functions"]
    assert ambiguous == [{"function_id": "shared::f", "error": "not_found"}]


@pytest.mark.parametrize("data", [
    {}, {"function_id": "a", "function_ids": ["a"]}, {"function_ids": []},
    {"function_ids": [f"f{i}" for i in range(33)]}])
def test_functions_info_invalid_arguments(full: Reg, data) -> None:
    assert err(bi.functions_info, full, data).code == "INVALID_ARGUMENTS"


def test_functions_info_accepts_32_ids(full: Reg) -> None:
    assert len(bi.functions_info(full, {"function_ids": [f"f{i}" for i in range(32)]})["functions"]) == 32


# ---- engine::workers::list / info ---------------------------------------------------------

def test_workers_list_hides_pidless_workers_and_includes_brokers(full: Reg) -> None:
    rows = bi.workers_list(full, {})["workers"]
    assert [(r["name"], r["namespace"]) for r in rows] == [
        ("iii-cron", "default"), ("iii-engine-functions", "default"), ("iii-queue", "default"),
        ("iii-state", "default"), ("math", "default"), ("math", "orders"), ("orders-svc", "orders"),
        ("prov", "default")]
    assert all(r["id"] != "B" for r in rows)
    math = rows[4]
    assert math == {"name": "math", "description": None, "version": "0.25.0", "id": "A", "namespace": "default",
                    "runtime": "python", "os": "Linux", "status": "connected", "function_count": 5,
                    "connected_at_ms": 1000, "active_invocations": 0, "isolation": None, "ip_address": None}
    state = rows[3]
    assert (state["status"], state["runtime"], state["version"], state["function_count"], state["os"],
            state["ip_address"]) == ("available", "engine", bi.ENGINE_VERSION, 2, None, None)


def test_workers_list_filters(full: Reg) -> None:
    assert [r["id"] for r in bi.workers_list(full, {"search": "MAT"})["workers"]] == ["A", "D"]
    assert [r["id"] for r in bi.workers_list(full, {"runtime": "node"})["workers"]] == ["D", "C"]
    assert {r["name"] for r in bi.workers_list(full, {"status": "available"})["workers"]} == \
        {"iii-cron", "iii-engine-functions", "iii-queue", "iii-state"}


def test_workers_info(full: Reg) -> None:
    e = err(bi.workers_info, full, {"name": "math"})
    assert e.code == "NOT_FOUND" and "ambiguous" in e.message and "default, orders" in e.message
    out = bi.workers_info(full, {"name": "math", "namespace": "orders"})
    assert out["worker"]["id"] == "D" and out["worker"]["pid"] == 12 and out["worker"]["internal"] is False
    assert ids(out["functions"]) == ["math::add", "shared::f"]
    assert out["trigger_types"] == [] and out["registered_triggers"] == []
    prov = bi.workers_info(full, {"name": "prov"})
    assert prov["trigger_types"] == [{"id": "webhook", "namespace": "default", "worker_name": "prov",
                                      "description": "Webhook trigger"}]
    state = bi.workers_info(full, {"name": "iii-state"})
    assert state["worker"]["internal"] is True and ids(state["trigger_types"], "id") == ["state"]
    assert ids(bi.workers_info(full, {"name": "math", "namespace": "default"})["registered_triggers"], "id") \
        == ["b1", "b4"]
    e = err(bi.workers_info, full, {"name": "nobody"})
    assert (e.code, e.message) == ("NOT_FOUND", "Worker 'nobody' is not connected.")


# ---- engine::triggers::list / info --------------------------------------------------------

def test_triggers_list(full: Reg) -> None:
    rows = bi.triggers_list(full, {})["triggers"]
    assert rows == [
        {"id": "cron", "namespace": "default", "worker_name": "iii-cron",  # a broker, by its name
         "description": "Cron-based scheduled triggers"},
        {"id": "foo::bar", "namespace": "default", "worker_name": "foo", "description": "Foo"},  # first segment
        {"id": "state", "namespace": "default", "worker_name": "iii-state", "description": "State trigger"},
        {"id": "webhook", "namespace": "default", "worker_name": "prov", "description": "Webhook trigger"}]
    internal = ids(bi.triggers_list(full, {"include_internal": True})["triggers"], "id")
    assert "engine::workers-available" in internal
    assert ids(bi.triggers_list(full, {"prefix": "foo"})["triggers"], "id") == ["foo::bar"]
    assert ids(bi.triggers_list(full, {"worker": "prov"})["triggers"], "id") == ["webhook"]
    assert ids(bi.triggers_list(full, {"search": "SCHEDULED"})["triggers"], "id") == ["cron"]


def test_triggers_info(full: Reg) -> None:
    out = bi.triggers_info(full, {"id": "webhook"})
    assert out == {"id": "webhook", "namespace": "default", "worker_name": "prov", "description": "Webhook trigger",
                   "configuration_schema": {"type": "object"}, "request_schema": {"type": "string"},
                   "instance_count": 1}
    e = err(bi.triggers_info, full, {"id": "webhook", "namespace": "orders"})
    assert (e.code, e.message) == ("NOT_FOUND", "Trigger type 'webhook' is not registered in namespace 'orders'.")


# ---- engine::registered-triggers::list / info ---------------------------------------------

def test_registered_triggers_list(full: Reg) -> None:
    rows = bi.registered_list(full, {})["registered_triggers"]
    assert ids(rows, "id") == ["b1", "b2", "b4"]  # b3 targets an engine:: function
    b1 = rows[0]
    assert (b1["trigger_type"], b1["function_id"], b1["worker_name"]) == ("webhook", "math::add", "math")
    assert b1["config_summary"] == ('{"url":"/' + "x" * 100)[:80] + "…"
    assert rows[1]["config_summary"] == '{"c":1}' and rows[1]["worker_name"] == "orders-svc"
    assert ids(bi.registered_list(full, {"include_internal": True})["registered_triggers"], "id") == \
        ["b1", "b2", "b3", "b4"]
    assert ids(bi.registered_list(full, {"trigger_type": "state"})["registered_triggers"], "id") == ["b2"]
    assert ids(bi.registered_list(full, {"function_id": "gone::fn"})["registered_triggers"], "id") == ["b4"]
    assert ids(bi.registered_list(full, {"worker": "orders-svc"})["registered_triggers"], "id") == ["b2"]
    assert ids(bi.registered_list(full, {"search": "webhook"})["registered_triggers"], "id") == ["b1"]


def test_registered_triggers_info(full: Reg) -> None:
    out = bi.registered_info(full, {"id": "b1"})
    assert "config_summary" not in out and out["metadata"] == {"m": 1}
    assert out["trigger"]["id"] == "webhook" and out["trigger"]["instance_count"] == 1
    assert out["function"]["function_id"] == "math::add" and out["function"]["namespace"] == "default"
    b2 = bi.registered_info(full, {"id": "b2"})  # resolved in the binding's target namespace
    assert b2["function"]["namespace"] == "orders" and b2["function"]["worker_name"] == "math"
    assert "metadata" not in b2
    parked = bi.registered_info(full, {"id": "b4"})
    assert parked["trigger"] is None and parked["function"] is None
    e = err(bi.registered_info, full, {"id": "zz"})
    assert (e.code, e.message) == ("NOT_FOUND", "Registered trigger 'zz' was not found.")


def test_function_summaries_include_internal(full: Reg) -> None:
    assert len(bi.function_summaries(full)) == len(full.functions)


def test_functions_info_wrong_types_are_deserialization_errors(full: Reg) -> None:
    # A string where a list belongs fails decoding, as serde does in the reference.
    for data in ({"function_ids": "math::add"}, {"function_id": {"a": 1}}, {"function_ids": [{"a": 1}]}):
        assert err(bi.functions_info, full, data).code == "deserialization_error"
    assert err(bi.functions_list, full, {"search": 5}).code == "deserialization_error"
    assert err(bi.functions_list, full, {"workers": "abc"}).code == "deserialization_error"
