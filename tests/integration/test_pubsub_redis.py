"""The pub/sub broker on the ``redis`` adapter against the session's real redis-server: two
pub/sub processes (hosts A and B) on one Redis database, on the in-memory bus. A publish
through A is a PUBLISH on the raw topic and reaches a subscriber on A and one on B once each;
each process subscribes exactly the topics its triggers name."""
from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack, asynccontextmanager

import orjson
import pytest
import redis as redis_sync

from brokers.kit import frames, wire
from brokers.kit.localbus import LocalHub
from brokers.pubsub.service import PubSubBroker
from brokers.pubsub.unit import UNIT
from tests.localshell import context, invoke, route, running


@asynccontextmanager
async def hosts(redis_server):
    url = redis_server.url(redis_server.fresh_db())
    hub = LocalHub()
    router, gw = hub.peer(frames.ROUTER), hub.peer("gw")
    cfg = {"adapter": {"name": "redis", "config": {"redis_url": url}}}
    async with AsyncExitStack() as stack:
        procs = [await stack.enter_async_context(
            running(PubSubBroker, context(UNIT, cfg, process=f"pubsub{n}", peers=("gw",)), hub)) for n in "AB"]
        yield hub, router, gw, procs, redis_sync.Redis.from_url(url)


def bind(router, node: str, tid: str, fn: str, topic: str) -> None:
    router.send(node, frames.down(None), wire.dumps(
        {"type": "registertrigger", "id": tid, "trigger_type": "subscribe", "function_id": fn,
         "config": {"topic": topic}}))
    route(router, [node], fn, "gw", "W-" + fn)


async def wait_numsub(r, topic: str, n: int) -> None:
    deadline = time.monotonic() + 5
    while r.pubsub_numsub(topic)[0][1] != n:
        assert time.monotonic() < deadline, f"{topic}: {r.pubsub_numsub(topic)} subscribers, not {n}"
        await asyncio.sleep(0.01)


async def test_a_publish_through_a_reaches_each_host_once(redis_server) -> None:
    async with hosts(redis_server) as (hub, router, gw, (a, b), r):
        bind(router, "pubsubA", "ta", "a::on", "news")
        bind(router, "pubsubB", "tb", "b::on", "news")
        await wait_numsub(r, "news", 2)
        out = await invoke(gw, "pubsubA", "publish", {"topic": "news", "data": {"n": 1}})
        assert "error" not in out and out.get("result") is None
        got = []
        for _ in range(2):
            sender, header, body = await gw.next(frames.INV, timeout=5)
            got.append((sender, header["fn"], orjson.loads(body)["data"]))
        assert sorted(got) == [("pubsubA", "a::on", {"n": 1}), ("pubsubB", "b::on", {"n": 1})]
        with pytest.raises(asyncio.TimeoutError):
            await gw.next(frames.INV, timeout=0.4)  # once each: no local copy on A
        # the raw topic carries the published data as it is (the reference's layout)
        with r.pubsub() as ps:
            ps.subscribe("news")
            ps.get_message(timeout=1)
            await invoke(gw, "pubsubB", "publish", {"topic": "news", "data": [1, "x"]})
            for _ in range(2):  # the loop must run for the publish to leave
                await gw.next(frames.INV, timeout=5)
            msg = ps.get_message(timeout=2)
            assert msg["type"] == "message" and orjson.loads(msg["data"]) == [1, "x"]


async def test_topics_follow_the_triggers(redis_server) -> None:
    async with hosts(redis_server) as (hub, router, gw, (a, b), r):
        bind(router, "pubsubA", "t1", "a::one", "t")
        bind(router, "pubsubA", "t2", "a::two", "t")
        await wait_numsub(r, "t", 1)  # one SUBSCRIBE per topic per host
        router.send("pubsubA", frames.down(None), wire.dumps(
            {"type": "unregistertrigger", "id": "t1", "trigger_type": "subscribe"}))
        await asyncio.sleep(0.1)
        await wait_numsub(r, "t", 1)  # t2 still wants it
        await invoke(gw, "pubsubB", "publish", {"topic": "t", "data": 5})
        _, header, _ = await gw.next(frames.INV, timeout=5)
        assert header["fn"] == "a::two"
        router.send("pubsubA", frames.down(None), wire.dumps(
            {"type": "unregistertrigger", "id": "t2", "trigger_type": "subscribe"}))
        await wait_numsub(r, "t", 0)
        # re-binding a trigger id to another topic moves its subscription
        bind(router, "pubsubA", "t3", "a::three", "x")
        await wait_numsub(r, "x", 1)
        bind(router, "pubsubA", "t3", "a::three", "y")
        await wait_numsub(r, "y", 1)
        await wait_numsub(r, "x", 0)


async def test_publish_order_and_input_errors(redis_server) -> None:
    async with hosts(redis_server) as (hub, router, gw, (a, b), r):
        bind(router, "pubsubB", "tb", "b::on", "seq")
        await wait_numsub(r, "seq", 1)
        for n in range(50):
            gw.send("pubsubA", frames.inv(f"i{n}", "publish", None, "gw", "C1"),
                    wire.invoke(f"i{n}", "publish", {"topic": "seq", "data": n}))
        seen = [orjson.loads((await gw.next(frames.INV, timeout=5))[2])["data"] for _ in range(50)]
        assert seen == list(range(50))
        bad = await invoke(gw, "pubsubA", "publish", {"topic": "", "data": 1})
        assert bad["error"] == {"code": "topic_not_set", "message": "Topic is not set"}
