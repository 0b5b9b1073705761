"""The queue broker shell on the in-memory bus (in-memory store): an enqueue is answered
with its receipt, the job delivered to its function, a failure retried after the
backoff, and ``topic_stats`` sees the queue drain."""
from __future__ import annotations

import orjson

from brokers.kit import frames
from brokers.kit.localbus import LocalHub
from brokers.queue.service import QueueBroker
from brokers.queue.unit import UNIT
from tests.localshell import answer, context, invoke, registrations, route, running

CONFIG = {"adapter": {"name": "builtin", "config": {"store_method": "in_memory"}},
          "queue_configs": {"jobs": {"max_retries": 3, "concurrency": 1, "backoff_ms": 10}}}


async def test_enqueue_deliver_retry_and_stats() -> None:
    hub = LocalHub()
    router, gw = hub.peer(frames.ROUTER), hub.peer("gw")
    async with running(QueueBroker, context(UNIT, CONFIG, peers=("gw",)), hub):
        ids = {m["id"] for m in registrations(router)["registerfunction"]}
        assert {"engine::queue::enqueue", "iii::durable::publish", "engine::queue::topic_stats"} <= ids
        route(router, ["queue"], "work::do", "gw", "W1")
        out = await invoke(gw, "queue", "engine::queue::enqueue",
                           {"queue": "jobs", "function_id": "work::do", "data": {"n": 7},
                            "messageReceiptId": "r-1"})
        assert out["result"] == {"messageReceiptId": "r-1"}

        _, first, body = await gw.next(frames.INV, where=lambda h: h["fn"] == "work::do")
        assert first["to"] == "W1" and orjson.loads(body)["data"] == {"n": 7}
        gw.send(first["rn"], frames.res(first["id"], first.get("rc")),
                orjson.dumps({"type": "invocationresult", "invocation_id": first["id"],
                              "function_id": "work::do", "error": {"code": "boom", "message": "x"}}))
        _, second, body = await gw.next(frames.INV, where=lambda h: h["fn"] == "work::do")
        assert second["id"] != first["id"] and orjson.loads(body)["data"] == {"n": 7}
        answer(gw, second, {"ok": True})

        for _ in range(100):
            stats = (await invoke(gw, "queue", "engine::queue::topic_stats", {"topic": "jobs"}))["result"]
            if stats["depth"] == 0:
                break
        assert stats["depth"] == 0 and stats["dlq_depth"] == 0
        assert stats["config"]["max_retries"] == 3

        bad = await invoke(gw, "queue", "engine::queue::enqueue", {"queue": "jobs"})
        assert bad["error"]["code"] == "deserialization_error"
