"""The state broker shell on the in-memory bus (in-memory store): its functions answer
over the bus, a write acknowledged once committed, and a state trigger delivered to the
bound function with the writer's trace context, in commit order."""
from __future__ import annotations

import asyncio

import orjson

from brokers.kit import frames, wire
from brokers.kit.localbus import LocalHub
from brokers.state.service import StateBroker
from brokers.state.unit import UNIT
from tests.localshell import answer, context, invoke, registrations, route, running

MEMORY = {"adapter": {"name": "kv", "config": {"store_method": "in_memory"}}}


async def test_functions_over_the_bus() -> None:
    hub = LocalHub()
    router, gw = hub.peer(frames.ROUTER), hub.peer("gw")
    async with running(StateBroker, context(UNIT, MEMORY, peers=("gw",)), hub):
        ids = {m["id"] for m in registrations(router)["registerfunction"]}
        assert {"state::set", "state::get", "state::update", "state::list"} <= ids
        out = await invoke(gw, "state", "state::set", {"scope": "s", "key": "k", "value": 1})
        assert out["result"] == {"old_value": None, "new_value": 1}
        assert (await invoke(gw, "state", "state::get", {"scope": "s", "key": "k"}))["result"] == 1
        out = await invoke(gw, "state", "state::update",
                           {"scope": "s", "key": "k", "ops": [{"type": "increment", "path": "", "by": 2}]})
        assert out["result"]["new_value"] == 3
        assert (await invoke(gw, "state", "state::list", {"scope": "s"}))["result"] == [3]
        bad = await invoke(gw, "state", "state::get", {"scope": "s"})
        assert bad["error"]["code"] == "deserialization_error"


async def test_state_trigger_fires_with_the_writers_trace_in_order() -> None:
    hub = LocalHub()
    router, gw = hub.peer(frames.ROUTER), hub.peer("gw")
    async with running(StateBroker, context(UNIT, MEMORY, peers=("gw",)), hub):
        route(router, ["state"], "audit::on", "gw", "W1")
        router.received.clear()
        router.send("state", frames.down(None), wire.dumps(
            {"type": "registertrigger", "id": "t1", "trigger_type": "state",
             "function_id": "audit::on", "config": {"scope": "orders"}}))
        _, _, body = await router.next(frames.UP)
        assert orjson.loads(body) == {"type": "triggerregistrationresult", "id": "t1",
                                      "trigger_type": "state", "function_id": "audit::on"}
        tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        for n in (1, 2):
            out = await invoke(gw, "state", "state::set",
                               {"scope": "orders", "key": "o1", "value": n}, traceparent=tp)
            assert "error" not in out
        await invoke(gw, "state", "state::set", {"scope": "other", "key": "x", "value": 0})
        seen = []
        for _ in range(2):
            _, header, body = await gw.next(frames.INV, where=lambda h: h["fn"] == "audit::on")
            msg = orjson.loads(body)
            assert header["to"] == "W1" and msg["traceparent"] == tp
            seen.append((msg["data"]["key"], msg["data"]["new_value"]))
            answer(gw, header, None)
        assert seen == [("o1", 1), ("o1", 2)]
        assert not [h for _, h, _ in gw.received if h.get("fn") == "audit::on"]  # "other" did not fire


async def test_a_retried_write_with_its_idempotency_key_fires_its_trigger_once() -> None:
    hub = LocalHub()
    router, gw = hub.peer(frames.ROUTER), hub.peer("gw")
    async with running(StateBroker, context(UNIT, MEMORY, peers=("gw",)), hub):
        route(router, ["state"], "audit::on", "gw", "W1")
        router.received.clear()
        router.send("state", frames.down(None), wire.dumps(
            {"type": "registertrigger", "id": "t1", "trigger_type": "state",
             "function_id": "audit::on", "config": {"scope": "pay"}}))
        await router.next(frames.UP)  # the binding's triggerregistrationresult
        write = {"scope": "pay", "key": "p1", "value": {"amount": 5}, "idempotency_key": "pay-p1-1"}
        first = await invoke(gw, "state", "state::set", write)
        retry = await invoke(gw, "state", "state::set", write)  # the answer was lost: try again
        assert first["result"] == retry["result"] == {"old_value": None, "new_value": {"amount": 5}}
        _, header, _ = await gw.next(frames.INV, where=lambda h: h["fn"] == "audit::on")
        answer(gw, header, None)
        await asyncio.sleep(0.05)
        assert not [h for _, h, _ in gw.received if h.get("fn") == "audit::on"]  # fired once


async def test_events_of_writes_made_in_place_fire_the_bindings_of_their_commit_time() -> None:
    """A gateway that committed writes in place sends their events (``inplace.EVENTS``),
    each with its commit time: a binding made after a write's commit does not fire for it,
    even though its event arrives later; the batch's scopes are listed as groups."""
    import time

    from brokers.state.inplace import EVENTS
    hub = LocalHub()
    router, gw = hub.peer(frames.ROUTER), hub.peer("gw")
    async with running(StateBroker, context(UNIT, MEMORY, peers=("gw",)), hub):
        route(router, ["state"], "audit::on", "gw", "W1")
        before = time.monotonic()
        router.send("state", frames.down(None), wire.dumps(
            {"type": "registertrigger", "id": "t1", "trigger_type": "state",
             "function_id": "audit::on", "config": {"scope": "orders"}}))
        await router.next(frames.UP)
        after = time.monotonic()

        def event(key: str, new: int, at: float) -> list:
            return ["orders", key, {"type": "state", "event_type": "state:created", "scope": "orders",
                                    "key": key, "old_value": None, "new_value": new}, None, None, at]
        gw.send("state", {"k": EVENTS, "scopes": ["orders", "emptied"]},
                orjson.dumps([event("early", 1, before), event("late", 2, after)]))
        _, header, body = await gw.next(frames.INV, where=lambda h: h["fn"] == "audit::on")
        assert orjson.loads(body)["data"]["key"] == "late"
        answer(gw, header, None)
        await asyncio.sleep(0.05)
        assert not [h for _, h, _ in gw.received if h.get("fn") == "audit::on"]  # "early" did not fire
        groups = await invoke(gw, "state", "state::list_groups", {})
        assert "emptied" in groups["result"]["groups"]
