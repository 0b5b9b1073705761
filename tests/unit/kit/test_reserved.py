"""The reserved-id catalogue covers every function and trigger type this engine's own
brokers register (so no worker can claim one before or after that broker exists)."""
from __future__ import annotations

import orjson

from brokers.kit import frames, reserved
from brokers.kit.localbus import LocalHub
from tests.localshell import context, running


async def test_every_broker_id_is_reserved(tmp_path) -> None:
    from brokers.pubsub.service import PubSubBroker
    from brokers.pubsub.unit import UNIT as PUBSUB
    from brokers.queue.service import QueueBroker
    from brokers.queue.unit import UNIT as QUEUE
    from brokers.router.service import Router
    from brokers.router.unit import UNIT as ROUTER
    from brokers.state.service import StateBroker
    from brokers.state.unit import UNIT as STATE

    hub = LocalHub()
    router_peer = hub.peer(frames.ROUTER)
    memory = {"adapter": {"name": "kv", "config": {"store_method": "in_memory"}}}
    qmem = {"adapter": {"name": "builtin", "config": {"store_method": "in_memory"}}}
    for make, unit, cfg in ((StateBroker, STATE, memory), (QueueBroker, QUEUE, qmem),
                            (PubSubBroker, PUBSUB, None)):
        async with running(make, context(unit, cfg), hub):
            pass
    ids = {(orjson.loads(b)["type"], orjson.loads(b)["id"]) for _, h, b in router_peer.received
           if h.get("k") == frames.UP and b}
    functions = {i for t, i in ids if t == "registerfunction"}
    types = {i for t, i in ids if t == "registertriggertype"}
    hub2 = LocalHub()
    async with running(Router, context(ROUTER, process="router", data_dir=str(tmp_path)), hub2) as r:
        functions |= set(r.functions)
    assert "state::set" in functions and "engine::functions::list" in functions and "publish" in functions
    assert {"state", "subscribe", "durable:subscriber"} <= types
    assert [f for f in functions if not reserved.function(f)] == []
    assert [t for t in types if not reserved.trigger_type(t)] == []
