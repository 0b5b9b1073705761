"""The cron broker on the ``redis`` lock adapter against the session's real redis-server: two
cron processes (hosts A and B) on one Redis database, each with the same ``* * * * * *`` job
(one trigger id): every tick fires once across the two, counted by its scheduled time; each
tick's lock ``cron_lock:<job>:<tick>`` names its winner and is left to expire."""
from __future__ import annotations

import asyncio
import os
from collections import Counter
from contextlib import AsyncExitStack

import orjson
import redis as redis_sync

from brokers.cron.redis_lock import RedisLocks, lock_key
from brokers.cron.service import CronBroker
from brokers.cron.unit import UNIT
from brokers.kit import frames, redisconn, wire
from brokers.kit.localbus import LocalHub
from tests.localshell import answer, context, route, running


async def test_every_second_job_on_two_hosts_fires_once_per_tick(redis_server, tmp_path) -> None:
    url = redis_server.url(redis_server.fresh_db())
    r = redis_sync.Redis.from_url(url)
    hub = LocalHub()
    router, gw = hub.peer(frames.ROUTER), hub.peer("gw")
    cfg = {"adapter": {"name": "redis", "config": {"redis_url": url, "lock_ttl_ms": 8000}}}
    fired: list[tuple[str, str]] = []
    async with AsyncExitStack() as stack:
        for name in "AB":
            os.environ["III_HOST_ID"] = name  # read when the locks are made
            try:
                ctx = context(UNIT, cfg, process=f"cron{name}", data_dir=str(tmp_path / name), peers=("gw",))
                await stack.enter_async_context(running(CronBroker, ctx, hub))
            finally:
                os.environ.pop("III_HOST_ID", None)
            route(router, [f"cron{name}"], "tick::on", "gw", "W1")
            router.send(f"cron{name}", frames.down(None), wire.dumps(
                {"type": "registertrigger", "id": "job1", "trigger_type": "cron", "function_id": "tick::on",
                 "config": {"expression": "* * * * * *"}}))
        loop = asyncio.get_running_loop()
        end = loop.time() + 5.2
        while loop.time() < end:
            try:
                sender, header, body = await gw.next(frames.INV, timeout=max(0.01, end - loop.time()),
                                                     where=lambda h: h["fn"] == "tick::on")
            except asyncio.TimeoutError:
                break
            data = orjson.loads(body)["data"]
            assert data["trigger"] == "cron" and data["job_id"] == "job1"
            fired.append((sender, data["scheduled_time"]))
            answer(gw, header, None)
    per_tick = Counter(t for _, t in fired)
    assert len(per_tick) >= 4, fired
    assert all(n == 1 for n in per_tick.values()), per_tick  # once per tick across the hosts
    keys = sorted(k.decode() for k in r.scan_iter("cron_lock:job1:*"))
    assert len(keys) >= len(per_tick)
    winners = {r.get(k).decode() for k in keys}
    assert winners <= {"A", "B"}
    assert all(0 < r.pttl(k) <= 8000 for k in keys)  # not released: expires by itself


async def test_a_tick_is_taken_once_whenever_the_other_host_comes(redis_server) -> None:
    url = redis_server.url(redis_server.fresh_db())
    a = RedisLocks(redisconn.connect(url), "A", 1000)
    b = RedisLocks(redisconn.connect(url), "B", 1000)
    try:
        assert a.ttl_ms == 5000  # floored: a tick's lock outlives every host's late timer
        assert await a.acquire_many(["j1", "j2"], 0, [100, 100]) == [True, True]
        a.release("j1")  # a finished run gives nothing back: the tick stays taken
        assert await b.acquire_many(["j1", "j2", "j3"], 0, [100, 100, 100]) == [False, False, True]
        assert await b.acquire_many(["j1"], 0, [101]) == [True]
        r = redis_sync.Redis.from_url(url)
        assert r.get(lock_key("j1", 100)) == b"A" and r.get(lock_key("j1", 101)) == b"B"
    finally:
        await a.close()
        await b.close()


async def test_no_redis_means_no_tick() -> None:
    locks = RedisLocks(redisconn.connect("redis://127.0.0.1:1/0"), "A", 30000)
    try:
        assert await locks.acquire_many(["j1"], 0, [1]) == [False]
    finally:
        await locks.close()
