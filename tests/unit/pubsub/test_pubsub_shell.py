"""The pub/sub broker shell on the in-memory bus: it announces its function and trigger
type, accepts a subscription, and a publish becomes one void call per subscriber carrying
the publisher's trace context."""
from __future__ import annotations

import orjson

from brokers.kit import frames, wire
from brokers.kit.localbus import LocalHub
from brokers.pubsub.service import PubSubBroker
from brokers.pubsub.unit import UNIT
from tests.localshell import context, invoke, registrations, route, running


async def test_announce_subscribe_and_publish_fan_out() -> None:
    hub = LocalHub()
    router, gw = hub.peer(frames.ROUTER), hub.peer("gw")
    async with running(PubSubBroker, context(UNIT, peers=("gw",)), hub):
        regs = registrations(router)
        assert [m["id"] for m in regs["registerfunction"]] == ["publish"]
        assert [m["id"] for m in regs["registertriggertype"]] == ["subscribe"]
        router.received.clear()

        for tid, fn in (("t1", "a::on"), ("t2", "b::on")):
            router.send("pubsub", frames.down(None), wire.dumps(
                {"type": "registertrigger", "id": tid, "trigger_type": "subscribe",
                 "function_id": fn, "config": {"topic": "news"}}))
            _, _, body = await router.next(frames.UP)
            assert orjson.loads(body)["type"] == "triggerregistrationresult"
            route(router, ["pubsub"], fn, "gw", "W-" + fn)

        tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        out = await invoke(gw, "pubsub", "publish", {"topic": "news", "data": {"n": 1}}, traceparent=tp)
        assert "error" not in out and out.get("result") is None
        got = []
        for _ in range(2):
            _, header, body = await gw.next(frames.INV)
            msg = orjson.loads(body)
            assert header["rn"] is None and msg["traceparent"] == tp  # void, same trace
            got.append((header["fn"], header["to"], msg["data"]))
        assert sorted(got) == [("a::on", "W-a::on", {"n": 1}), ("b::on", "W-b::on", {"n": 1})]

        bad = await invoke(gw, "pubsub", "publish", {"topic": ""})
        assert bad["error"]["code"] == "deserialization_error"
