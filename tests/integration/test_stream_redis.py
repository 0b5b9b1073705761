"""The stream broker on the ``redis`` adapter against the session's real redis-server: two
stream processes (hosts A and B, consumer groups of their own) on one Redis database, on the
in-memory bus. The reference's key layout, atomic ``stream::update`` across hosts, a
subscriber on B's socket seeing a write through A, and a trigger bound on B firing once for
a write through A."""
from __future__ import annotations

import asyncio
import os
from contextlib import AsyncExitStack, asynccontextmanager

import orjson
import pytest
import redis as redis_sync
from websockets.asyncio.client import connect

from brokers.kit import frames, redisconn, wire
from brokers.kit.ops import MISSING, parse_ops
from brokers.state.core import Write
from brokers.stream.redis_store import RedisStreams
from brokers.kit.localbus import LocalHub
from brokers.stream.service import StreamBroker
from brokers.stream.unit import UNIT
from tests.localshell import answer, context, invoke, route, running

AT = {"stream_name": "chat", "group_id": "room", "item_id": "m1"}


@asynccontextmanager
async def hosts(redis_server, names=("A", "B")):
    """Stream processes ``stream<name>`` with host ids ``<name>`` on one fresh database."""
    url = redis_server.url(redis_server.fresh_db())
    hub = LocalHub()
    router, gw = hub.peer(frames.ROUTER), hub.peer("gw")
    cfg = {"host": "127.0.0.1", "port": 0, "adapter": {"name": "redis", "config": {"redis_url": url}}}
    procs = []
    async with AsyncExitStack() as stack:
        for name in names:
            os.environ["III_HOST_ID"] = name  # read at setup
            try:
                procs.append(await stack.enter_async_context(
                    running(StreamBroker, context(UNIT, cfg, process=f"stream{name}", peers=("gw",)), hub)))
            finally:
                os.environ.pop("III_HOST_ID", None)
        for name in names:  # an empty route table: bindings may fire
            router.send(f"stream{name}", frames.routes([]))
        await asyncio.sleep(0.05)
        yield hub, router, gw, procs, redis_sync.Redis.from_url(url)


async def test_functions_and_the_reference_layout(redis_server) -> None:
    async with hosts(redis_server, ("A",)) as (hub, router, gw, (a,), r):
        out = await invoke(gw, "streamA", "stream::set", {**AT, "data": {"t": "hi"}})
        assert out["result"] == {"old_value": None, "new_value": {"t": "hi"}}
        assert orjson.loads(r.hget("stream:chat:room", "m1")) == {"t": "hi"}
        out = await invoke(gw, "streamA", "stream::set", {**AT, "data": {"t": "ho"}})
        assert out["result"] == {"old_value": {"t": "hi"}, "new_value": {"t": "ho"}}
        await invoke(gw, "streamA", "stream::set", {**AT, "item_id": "m0", "data": 0})
        await invoke(gw, "streamA", "stream::set", {**AT, "group_id": "lobby", "data": 1})
        await invoke(gw, "streamA", "stream::set", {"stream_name": "a:b", "group_id": "c", "item_id": "x", "data": 2})
        assert (await invoke(gw, "streamA", "stream::get", AT))["result"] == {"t": "ho"}
        assert "error" not in (out := await invoke(gw, "streamA", "stream::get", {**AT, "item_id": "nope"})) and out.get("result") is None
        assert (await invoke(gw, "streamA", "stream::list", AT))["result"] == [0, {"t": "ho"}]
        assert (await invoke(gw, "streamA", "stream::list_groups", AT))["result"] == ["lobby", "room"]
        assert (await invoke(gw, "streamA", "stream::list_all", {}))["result"] == {
            "stream": [{"id": "a:b", "groups": ["c"]}, {"id": "chat", "groups": ["lobby", "room"]}], "count": 2}
        out = await invoke(gw, "streamA", "stream::update", {**AT, "ops": [
            {"type": "set", "path": "n", "value": 1}, {"type": "increment", "path": "n", "by": 2}]})
        assert out["result"] == {"old_value": {"t": "ho"}, "new_value": {"t": "ho", "n": 3}}
        assert (await invoke(gw, "streamA", "stream::delete", {**AT, "group_id": "lobby"}))["result"] == {
            "old_value": 1}
        assert (await invoke(gw, "streamA", "stream::delete", {**AT, "group_id": "lobby"}))["result"] == {
            "old_value": None}
        assert (await invoke(gw, "streamA", "stream::list_groups", AT))["result"] == ["room"]
        assert not r.exists("stream:chat:lobby")
        bad = await invoke(gw, "streamA", "stream::update", {**AT, "ops": [{"type": "bogus"}]})
        assert "error" in bad


async def test_update_is_atomic_across_hosts(redis_server) -> None:
    """Two hosts' stores (a client each), 2 x 100 increments at once: none is lost."""
    url = redis_server.url(redis_server.fresh_db())
    stores = [RedisStreams(redisconn.connect(url)) for _ in range(2)]
    write = Write("update", "", "m1", ops=tuple(parse_ops([{"type": "increment", "path": "n", "by": 1}])))
    try:
        outcomes = await asyncio.gather(*(stores[i % 2].write(write, "chat", "room", (None, None), 0)
                                          for i in range(200)))
        assert all(o.failure is None for o in outcomes)
        assert await stores[0].get("chat", "room", "m1") == {"n": 200}
        olds = sorted(0 if o.old is MISSING else o.old["n"] for o in outcomes)
        assert olds == list(range(200))  # each update saw the one before it
    finally:
        for store in stores:
            await store.r.aclose()


async def test_a_subscriber_on_b_sees_a_write_through_a_once(redis_server) -> None:
    async with hosts(redis_server) as (hub, router, gw, (a, b), r):
        port = b._listener.getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}/", compression=None) as ws:
            await ws.send(orjson.dumps({"type": "join", "data": {
                "subscriptionId": "s1", "streamName": "chat", "groupId": "room"}}).decode())
            sync = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
            assert sync["event"] == {"type": "sync", "data": []}
            await invoke(gw, "streamA", "stream::set", {**AT, "data": 1})
            await invoke(gw, "streamA", "stream::delete", AT)
            await invoke(gw, "streamA", "stream::send", {**AT, "type": "typing", "data": {"who": "x"}})
            got = [orjson.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(3)]
            assert [m["event"] for m in got] == [
                {"type": "create", "data": 1}, {"type": "delete", "data": 1},
                {"type": "event", "event": {"type": "typing", "data": {"who": "x"}}}]
            assert got[0]["streamName"] == "chat" and got[0]["groupId"] == "room" and got[0]["id"] == "m1"
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(ws.recv(), 0.3)  # once each
            await invoke(gw, "streamB", "stream::set", {**AT, "item_id": "m2", "data": 7})
            later = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
            assert later["event"] == {"type": "create", "data": 7}


async def test_a_trigger_bound_on_b_fires_once_for_a_write_through_a(redis_server) -> None:
    async with hosts(redis_server) as (hub, router, gw, (a, b), r):
        route(router, ["streamB"], "audit::on", "gw", "W1")
        router.send("streamB", frames.down(None), wire.dumps(
            {"type": "registertrigger", "id": "t1", "trigger_type": "stream",
             "function_id": "audit::on", "config": {"stream_name": "chat"}}))
        await asyncio.sleep(0.05)
        tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        for n in (1, 2):
            assert "error" not in await invoke(gw, "streamA", "stream::set", {**AT, "data": n}, traceparent=tp)
        seen = []
        for _ in range(2):
            _, header, body = await asyncio.wait_for(
                gw.next(frames.INV, where=lambda h: h["fn"] == "audit::on"), 5)
            msg = orjson.loads(body)
            assert msg["traceparent"] == tp
            seen.append(msg["data"]["event"])
            answer(gw, header, None)
        assert seen == [{"type": "create", "data": 1}, {"type": "update", "data": 2}]
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(gw.next(frames.INV, where=lambda h: h["fn"] == "audit::on"), 0.5)
        info = {g["name"].decode(): g for g in r.xinfo_groups("iii:stream-changes")}
        assert set(info) == {"A", "B"} and info["B"]["pending"] == 0


async def test_no_redis_fails_the_call_with_the_functions_code() -> None:
    hub = LocalHub()
    router, gw = hub.peer(frames.ROUTER), hub.peer("gw")
    cfg = {"host": "127.0.0.1", "port": 0, "adapter": {"name": "redis", "config": {"redis_url": "redis://127.0.0.1:1/0"}}}
    async with running(StreamBroker, context(UNIT, cfg, peers=("gw",)), hub):
        out = await invoke(gw, "stream", "stream::set", {**AT, "data": 1})
        assert out["error"]["code"] == "STREAM_SET_ERROR" and "redis" in out["error"]["message"]
        out = await invoke(gw, "stream", "stream::list_all", {})
        assert out["error"]["code"] == "STREAM_LIST_ALL_ERROR"
