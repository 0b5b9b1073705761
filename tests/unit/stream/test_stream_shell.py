"""The stream broker shell on the in-memory bus (in-memory store, subscriber socket on a
free port): functions answer over the bus, a stream trigger gets the wrapper with the
writer's trace in commit order, a custom provider's route takes a stream over, and a
subscriber's push is the same bytes as the event."""
from __future__ import annotations

import asyncio
import json

import orjson
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.asyncio.client import connect

from brokers.kit import frames, wire
from brokers.kit.localbus import LocalHub
from brokers.stream.service import StreamBroker
from brokers.stream.unit import UNIT
from tests.localshell import answer, context, invoke, registrations, route, running

CONFIG = {"host": "127.0.0.1", "port": 0, "adapter": {"name": "kv", "config": {"store_method": "in_memory"}}}
AT = {"stream_name": "chat", "group_id": "room", "item_id": "m1"}


async def test_functions_and_trigger_types_over_the_bus() -> None:
    hub = LocalHub()
    router, gw = hub.peer(frames.ROUTER), hub.peer("gw")
    async with running(StreamBroker, context(UNIT, CONFIG, peers=("gw",)), hub):
        regs = registrations(router)
        assert {m["id"] for m in regs["registerfunction"]} == {
            f"stream::{op}" for op in ("set", "get", "delete", "update", "list", "list_groups", "list_all", "send")}
        assert {m["id"] for m in regs["registertriggertype"]} == {"stream", "stream:join", "stream:leave"}
        out = await invoke(gw, "stream", "stream::set", {**AT, "data": {"t": "hi"}})
        assert out["result"] == {"old_value": None, "new_value": {"t": "hi"}}
        assert (await invoke(gw, "stream", "stream::get", AT))["result"] == {"t": "hi"}
        assert (await invoke(gw, "stream", "stream::list_all", {}))["result"] == {
            "stream": [{"id": "chat", "groups": ["room"]}], "count": 1}
        assert (await invoke(gw, "stream", "stream::delete", AT))["result"] == {"old_value": {"t": "hi"}}
        bad = await invoke(gw, "stream", "stream::get", {"stream_name": "chat"})
        assert bad["error"]["code"] == "deserialization_error"


async def test_a_stream_trigger_gets_the_wrapper_with_the_writers_trace_in_order() -> None:
    hub = LocalHub()
    router, gw = hub.peer(frames.ROUTER), hub.peer("gw")
    async with running(StreamBroker, context(UNIT, CONFIG, peers=("gw",)), hub):
        route(router, ["stream"], "audit::on", "gw", "W1")
        router.send("stream", frames.down(None), wire.dumps(
            {"type": "registertrigger", "id": "t1", "trigger_type": "stream",
             "function_id": "audit::on", "config": {"stream_name": "chat", "item_id": "m1"}}))
        _, _, body = await router.next(frames.UP, where=lambda h: True)
        tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        for n in (1, 2):
            assert "error" not in await invoke(gw, "stream", "stream::set", {**AT, "data": n}, traceparent=tp)
        await invoke(gw, "stream", "stream::set", {**AT, "item_id": "m2", "data": 0})
        seen = []
        for _ in range(2):
            _, header, body = await gw.next(frames.INV, where=lambda h: h["fn"] == "audit::on")
            msg = orjson.loads(body)
            assert msg["traceparent"] == tp
            seen.append((msg["data"]["id"], msg["data"]["event"]))
            answer(gw, header, None)
        assert seen == [("m1", {"type": "create", "data": 1}), ("m1", {"type": "update", "data": 2})]


async def test_a_custom_provider_takes_its_stream_over() -> None:
    hub = LocalHub()
    router, gw = hub.peer(frames.ROUTER), hub.peer("gw")
    async with running(StreamBroker, context(UNIT, CONFIG, peers=("gw",)), hub):
        route(router, ["stream"], "stream::set(chat)", "gw", "P1")
        await asyncio.sleep(0.01)
        call = asyncio.ensure_future(invoke(gw, "stream", "stream::set", {**AT, "data": 5}))
        _, header, body = await gw.next(frames.INV, where=lambda h: h["fn"] == "stream::set(chat)")
        assert orjson.loads(body)["data"]["data"] == 5
        answer(gw, header, {"old_value": 4, "new_value": 5, "extra": True})
        assert (await call)["result"] == {"old_value": 4, "new_value": 5}
        call = asyncio.ensure_future(invoke(gw, "stream", "stream::set", {**AT, "data": 6}))
        _, header, _ = await gw.next(frames.INV, where=lambda h: h["fn"] == "stream::set(chat)")
        answer(gw, header, None)
        assert (await call)["error"] == {"code": "STREAM_SET_ERROR", "message": "Failed to set value: Function returned no result"}
        # other streams stay the engine's
        assert (await invoke(gw, "stream", "stream::set", {**AT, "stream_name": "x", "data": 1}))["result"]["new_value"] == 1


async def test_a_subscriber_gets_sync_then_the_push() -> None:
    hub = LocalHub()
    gw = hub.peer("gw")
    hub.peer(frames.ROUTER)
    async with running(StreamBroker, context(UNIT, CONFIG, peers=("gw",)), hub) as broker:
        port = broker._listener.getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}/", compression=None) as ws:
            await ws.send(json.dumps({"type": "join", "data": {"subscriptionId": "s", "streamName": "chat",
                                                               "groupId": "room"}}))
            assert json.loads(await ws.recv())["event"] == {"type": "sync", "data": []}
            await invoke(gw, "stream", "stream::send", {"stream_name": "chat", "group_id": "room",
                                                        "type": "t", "data": [1]})
            msg = json.loads(await ws.recv())
            assert msg["event"] == {"type": "event", "event": {"type": "t", "data": [1]}}
        await asyncio.sleep(0.05)
        assert broker.socket.subs.by_conn == {}


async def test_one_message_larger_than_the_bound_passes_and_the_next_one_behind_it_closes() -> None:
    hub = LocalHub()
    gw = hub.peer("gw")
    hub.peer(frames.ROUTER)
    cfg = {**CONFIG, "max_send_queue_bytes": 1024, "close_timeout_ms": 5000}
    async with running(StreamBroker, context(UNIT, cfg, peers=("gw",)), hub) as broker:
        port = broker._listener.getsockname()[1]
        big = "x" * 8_000_000  # more than the kernel's buffers on loopback take
        await invoke(gw, "stream", "stream::set", {**AT, "data": big})
        async with connect(f"ws://127.0.0.1:{port}/", compression=None, max_size=None, max_queue=1) as ws:
            await ws.send(json.dumps({"type": "join", "data": {"subscriptionId": "s", "streamName": "chat",
                                                               "groupId": "room"}}))
            ws.transport.pause_reading()  # a reader that stalls: the sync is written all the same
            await asyncio.sleep(0.2)
            for _ in range(3):  # each finds far more than the bound waiting: the first closes
                await invoke(gw, "stream", "stream::send", {"stream_name": "chat", "group_id": "room",
                                                            "type": "t", "data": 1})
            ws.transport.resume_reading()
            assert json.loads(await ws.recv())["event"] == {"type": "sync", "data": [big]}
            with pytest.raises(ConnectionClosed) as exc:
                while True:
                    await asyncio.wait_for(ws.recv(), 5)
            assert (exc.value.rcvd.code, exc.value.rcvd.reason) == (1008, "subscriber too slow")
        assert broker.socket.closed_slow == 1
