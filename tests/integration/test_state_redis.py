"""The state store on a real private redis-server (tests/redisserver.py): the same results as
the LMDB store for the same calls, ``state::update`` atomic between two clients, one change
event per write in the capped stream, and the event reader's consumer groups (each host gets
every event once; what a crashed reader took but did not hand on comes again)."""
from __future__ import annotations

import asyncio
import random

import orjson
import pytest

from brokers.kit.ops import MISSING
from brokers.kit.schema import ConfigError
from brokers.state import config, core
from brokers.state.core import Write, decode_call
from brokers.state.redis_events import EventReader, decode
from brokers.state.redis_store import EVENTS_KEY, RedisStore, describe
from brokers.state.store import LmdbStore


@pytest.fixture
async def redis_store(redis_server):
    store = RedisStore(redis_server.url(redis_server.fresh_db()))
    await store.ping()
    yield store
    await store.close()


def _result(fn):
    """A store call's caller-visible result, or its error (code, message)."""
    try:
        return ("ok", fn())
    except core.EngineError as exc:
        return ("error", exc.code)


CALLS = []
_rng = random.Random(19)
_SCOPES = ["a", "b", "s p", "ünï", ""]
_KEYS = ["k1", "k2", "x.y", "ключ"]
_OPS = [
    [{"type": "increment", "path": "n", "by": 2}],
    [{"type": "set", "path": "v", "value": {"deep": [1, None]}}],
    [{"type": "append", "path": "log", "value": "x"}, {"type": "append", "path": "n", "value": 1}],
    [{"type": "merge", "path": ["m", "q"], "value": {"z": 1}}],
    [{"type": "increment", "path": "", "by": 1}],
    [{"type": "remove", "path": "v"}],
    [],
]
_VALUES = [None, 0, 1.5, "s", [1, 2], {"n": 1}, {"n": "bad"}, True, {"a": {"b": [None]}}]
for i in range(400):
    scope, key = _rng.choice(_SCOPES), _rng.choice(_KEYS)
    kind = _rng.choice(["set", "set", "update", "update", "delete", "get", "list", "list_groups"])
    idem = f"i{_rng.randrange(5)}" if kind in ("set", "update", "delete") and _rng.random() < 0.2 else None
    if kind == "set":
        data = {"scope": scope, "key": key, "value": _rng.choice(_VALUES)}
    elif kind == "update":
        data = {"scope": scope, "key": key, "ops": _rng.choice(_OPS)}
    elif kind == "delete":
        data = {"scope": scope, "key": key}
    elif kind == "get":
        data = {"scope": scope, "key": key}
    elif kind == "list":
        data = {"scope": scope}
    else:
        data = {}
    if idem:
        data["idempotency_key"] = idem
    CALLS.append((f"state::{kind}", data))


async def _run_redis(store: RedisStore, fn: str, data: dict):
    req = decode_call(fn, data)
    try:
        if isinstance(req, Write):
            return ("ok", core.write_result(await store.apply(req)))
        if req.kind == "get":
            return ("ok", core.get_result(await store.get(req.scope, req.key)))
        if req.kind == "list":
            return ("ok", await store.list(req.scope))
        return ("ok", core.list_groups_result(await store.list_groups()))
    except core.EngineError as exc:
        return ("error", exc.code)


def _run_lmdb(store: LmdbStore, fn: str, data: dict):
    req = decode_call(fn, data)
    if isinstance(req, Write):
        return _result(lambda: core.write_result(store.apply_batch([req])[0]))
    if req.kind == "get":
        return _result(lambda: core.get_result(store.get(req.scope, req.key)))
    if req.kind == "list":
        return _result(lambda: store.list(req.scope))
    # LMDB keeps scopes emptied in this process until restart; Redis (like the reference's
    # adapter) names only scopes with a hash: compare the scopes that hold values.
    return _result(lambda: core.list_groups_result(g for g in store.list_groups() if store.list(g)))


async def test_same_results_as_lmdb_for_the_same_calls(redis_store, tmp_path):
    lmdb_store = LmdbStore(str(tmp_path / "state"))
    try:
        for i, (fn, data) in enumerate(CALLS):
            want = _run_lmdb(lmdb_store, fn, data)
            got = await _run_redis(redis_store, fn, data)
            assert orjson.dumps(got) == orjson.dumps(want), (i, fn, data, got, want)
        for scope in _SCOPES:
            assert await redis_store.list(scope) == lmdb_store.list(scope)
    finally:
        lmdb_store.close()


async def test_pipelined_writes_keep_their_order_and_see_each_other(redis_store):
    """One round: set, updates and a delete of one key in submission order."""
    futs = [redis_store.submit(Write("set", "o", "k", value={"n": 1}))]
    futs += [redis_store.submit(decode_call(core.UPDATE, {"scope": "o", "key": "k", "ops": [
        {"type": "increment", "path": "n", "by": 1}]})) for _ in range(5)]
    futs.append(redis_store.submit(Write("delete", "o", "k")))
    futs.append(redis_store.submit(decode_call(core.UPDATE, {"scope": "o", "key": "k", "ops": []})))
    outs = [await f for f in futs]
    assert [core.write_result(o) for o in outs] == [
        {"old_value": None, "new_value": {"n": 1}},
        *({"old_value": {"n": i}, "new_value": {"n": i + 1}} for i in range(1, 6)),
        {"n": 6},
        {"old_value": None, "new_value": {}},
    ]
    assert [core.event_type(o) for o in outs] == [core.CREATED] + [core.UPDATED] * 5 + [core.DELETED, core.CREATED]


async def test_update_is_atomic_between_two_clients(redis_server):
    """Two stores (two hosts' clients) increment one counter concurrently: no update lost,
    every old value seen exactly once."""
    url = redis_server.url(redis_server.fresh_db())
    a, b = RedisStore(url), RedisStore(url)
    await a.ping()
    n = 300
    inc = decode_call(core.UPDATE, {"scope": "c", "key": "ctr", "ops": [
        {"type": "increment", "path": "n", "by": 1}]})
    try:
        async def hammer(store):
            outs = []
            for _ in range(n // 10):  # ten in flight per client
                outs += await asyncio.gather(*(store.apply(inc) for _ in range(10)))
            return outs
        outs_a, outs_b = await asyncio.gather(hammer(a), hammer(b))
        olds = sorted(-1 if o.old is MISSING else o.old["n"] for o in outs_a + outs_b)
        assert olds == [-1] + list(range(1, 2 * n))
        assert await a.get("c", "ctr") == {"n": 2 * n}
    finally:
        await a.close()
        await b.close()


async def test_an_update_that_lost_a_race_is_computed_again_from_the_winners_value(redis_server):
    """Whether two hammering clients race is up to the scheduler; here the other host's
    write lands exactly between the update's fetch and its compare-and-set."""
    url = redis_server.url(redis_server.fresh_db())
    a, b = RedisStore(url), RedisStore(url)
    await a.ping()
    await a.apply(Write("set", "c", "race", value={"n": 1}))
    inc = decode_call(core.UPDATE, {"scope": "c", "key": "race", "ops": [
        {"type": "increment", "path": "n", "by": 1}]})
    pipeline, made = a.client.pipeline, []

    def interleaving_pipeline(*args, **kwargs):
        pipe = pipeline(*args, **kwargs)
        made.append(pipe)
        if len(made) == 1:  # the update's fetch of the current value
            execute = pipe.execute

            async def fetch_then_other_host_writes(*eargs, **ekwargs):
                fetched = await execute(*eargs, **ekwargs)
                await b.apply(Write("set", "c", "race", value={"n": 100}))
                return fetched
            pipe.execute = fetch_then_other_host_writes
        return pipe
    a.client.pipeline = interleaving_pipeline
    try:
        out = await a.apply(inc)
        assert a.conflicts == 1
        assert (out.old, out.new) == ({"n": 100}, {"n": 101})
        assert await b.get("c", "race") == {"n": 101}
    finally:
        await a.close()
        await b.close()


async def test_every_write_appends_its_event(redis_store):
    client = redis_store.client
    start = (await client.xinfo_stream(EVENTS_KEY))["last-generated-id"] if await client.exists(EVENTS_KEY) else b"0"
    trace = ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tenant=a")
    outs = [await redis_store.apply(Write("set", "ev", "k", value=None), trace),
            await redis_store.apply(Write("set", "ev", "k", value=[1])),
            await redis_store.apply(decode_call(core.UPDATE, {"scope": "ev", "key": "k", "ops": [
                {"type": "append", "path": "", "value": 2}]})),
            await redis_store.apply(Write("delete", "ev", "k")),
            await redis_store.apply(Write("delete", "ev", "k"))]
    entries = await client.xrange(EVENTS_KEY, min=b"(" + start)
    decoded = [decode(fields) for _, fields in entries]
    assert [d[2] for d in decoded] == [core.event_for(o) for o in outs]
    assert decoded[0][3] == trace and decoded[1][3] == (None, None)
    # a stored JSON null exists: the next set is an update with old_value null
    assert decoded[1][2]["event_type"] == core.UPDATED and decoded[1][2]["old_value"] is None


async def test_idempotent_retry_answers_the_first_outcome_and_fires_nothing(redis_store):
    client = redis_store.client
    w = decode_call(core.UPDATE, {"scope": "id", "key": "k", "idempotency_key": "r1",
                                  "ops": [{"type": "increment", "path": "n", "by": 1}]})
    first = await redis_store.apply(w)
    length = await client.xlen(EVENTS_KEY)
    again = await redis_store.apply(w)
    assert again.replayed and core.write_result(again) == core.write_result(first)
    assert await client.xlen(EVENTS_KEY) == length
    assert await redis_store.get("id", "k") == {"n": 1}
    d = Write("delete", "id", "k", idempotency_key="r2")
    assert core.write_result(await redis_store.apply(d)) == {"n": 1}
    assert core.write_result(await redis_store.apply(d)) == {"n": 1}  # as the first time
    ttl = await client.pttl(next(iter(await client.keys(b"iii:state:idem:*"))))
    assert 0 < ttl <= 24 * 3600 * 1000


async def test_stream_is_capped(redis_server):
    store = RedisStore(redis_server.url(redis_server.fresh_db()), events_maxlen=100)
    await store.ping()
    try:
        await asyncio.gather(*(store.apply(Write("set", "cap", f"k{i}", value=i)) for i in range(2000)))
        assert await store.client.xlen(EVENTS_KEY) < 400  # MAXLEN ~ trims whole nodes
    finally:
        await store.close()


async def test_values_redis_cannot_hold_fail_alone(redis_store):
    out = await redis_store.apply(Write("set", "big", "k", value=2 ** 70))
    with pytest.raises(core.EngineError) as err:
        core.write_result(out)
    assert err.value.code == "SET_ERROR"
    assert await redis_store.get("big", "k") is MISSING


async def test_noscript_after_script_flush_is_loaded_again(redis_store):
    await redis_store.client.script_flush()
    out = await redis_store.apply(Write("set", "ns", "k", value=1))
    assert core.write_result(out) == {"old_value": None, "new_value": 1}


async def test_consumer_groups_each_host_every_event_once(redis_server):
    store = RedisStore(redis_server.url(redis_server.fresh_db()))
    await store.ping()
    seen: dict[str, list] = {"A": [], "B": []}
    readers = {h: EventReader(store.client, h, lambda *e, h=h: seen[h].append(e[2]), stream=EVENTS_KEY)
               for h in seen}
    for r in readers.values():
        await r.ensure_group()
    tasks = [asyncio.ensure_future(r.run()) for r in readers.values()]
    try:
        for i in range(20):
            await store.apply(Write("set", "g", "k", value=i))
        for _ in range(100):
            if all(len(v) >= 20 for v in seen.values()):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        assert [e["new_value"] for e in seen["A"]] == list(range(20))
        assert seen["B"] == seen["A"]
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await store.close()


async def test_entries_taken_but_not_handed_on_come_again(redis_server):
    """A reader that died between XREADGROUP and XACK: its successor reads those first."""
    store = RedisStore(redis_server.url(redis_server.fresh_db()))
    await store.ping()
    try:
        reader = EventReader(store.client, "H", lambda *e: None, stream=EVENTS_KEY)
        await reader.ensure_group()
        for i in range(3):
            await store.apply(Write("set", "p", "k", value=i))
        await store.client.xreadgroup("H", "H", {EVENTS_KEY: ">"}, count=10)  # taken, never acked
        await store.apply(Write("set", "p", "k", value=3))
        seen = []
        reader = EventReader(store.client, "H", lambda *e: seen.append(e[2]["new_value"]), stream=EVENTS_KEY)
        task = asyncio.ensure_future(reader.run())
        for _ in range(100):
            if len(seen) >= 4:
                break
            await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert seen == [0, 1, 2, 3]
        assert (await store.client.xpending(EVENTS_KEY, "H"))["pending"] == 0
    finally:
        await store.close()


def test_config_accepts_the_redis_adapter():
    cfg = config.parse({"adapter": {"name": "redis", "config": {"redis_url": "redis://h:6380/2"}}}, "iii-state")
    assert cfg["store"] == "redis" and cfg["redis_url"] == "redis://h:6380/2"
    assert cfg["events_maxlen"] == 100_000 and cfg["path"] is None and cfg["triggers_enabled"] is True
    assert config.parse({"adapter": {"name": "redis"}}, "s")["redis_url"] == "redis://localhost:6379"
    assert config.stores(config.parse({"adapter": {"name": "redis", "config": {
        "redis_url": "redis://u:secret@h:1/0"}}}, "s"), "/d") == {"state": "redis://u:***@h:1/0"}
    with pytest.raises(ConfigError):
        config.parse({"adapter": {"name": "redis", "config": {"redis_url": "http://x"}}}, "s")
    with pytest.raises(ConfigError):
        config.parse({"adapter": {"name": "redis", "config": {"nope": 1}}}, "s")
    with pytest.raises(ConfigError):
        config.parse({"adapter": {"name": "bridge"}}, "s")
    assert config.parse({}, "s")["store"] == "lmdb"
    assert describe("redis://127.0.0.1:1/0") == "redis://127.0.0.1:1/0"


async def test_groups_of_hosts_gone_for_good_are_dropped(redis_server):
    from brokers.state.redis_events import READERS_KEY
    store = RedisStore(redis_server.url(redis_server.fresh_db()))
    await store.ping()
    try:
        for name in ("gone", "alive"):
            r = EventReader(store.client, name, lambda *e: None, stream=EVENTS_KEY)
            await r.ensure_group()
            await r.heartbeat()
        await store.client.hset(READERS_KEY, "gone", 1)  # last seen in 1970
        live = EventReader(store.client, "live", lambda *e: None, stream=EVENTS_KEY, stale_group_ms=60_000)
        await live.ensure_group()
        assert await live.drop_stale_groups() == ["gone"]
        names = sorted(g["name"] for g in await store.client.xinfo_groups(EVENTS_KEY))
        assert names == [b"alive", b"live"]
        assert sorted(await store.client.hkeys(READERS_KEY)) == [b"alive"]
    finally:
        await store.close()
