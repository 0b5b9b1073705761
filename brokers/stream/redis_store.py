"""The stream broker's ``redis`` adapter (issue 19): items, events and cluster-wide triggers
in one Redis shared by every engine host.

Key layout (the reference's, so a reference engine on the same Redis reads the same items):

    stream:<stream>:<group>        hash: item id -> the item's JSON
    stream::events                 pub/sub channel: every change event (the §3.4 wrapper JSON)

Ours, beside it (keys outside ``stream:*``, so the reference's ``SCAN stream:*`` never sees them):

    iii:stream-groups:<stream>     set of the stream's groups that hold an item
    iii:streams                    set of the streams that hold a group
    iii:stream-changes             capped Redis stream (``MAXLEN ~ CHANGES_MAXLEN``): one entry
                                   per event, ``m`` = the wrapper JSON, ``tp``/``bg`` = the
                                   writer's traceparent/baggage ("" for none)

Every write is one Lua script: the item change, the group indexes, the PUBLISH on
``stream::events`` and the XADD to ``iii:stream-changes`` happen together or not at all, so an
acknowledged write has announced its event to every host. ``stream::update`` is read, apply
the ops here (``kit.ops``, the same code as the LMDB path), then a compare-and-set script that
writes only if the item is still what was read; a lost race is retried (up to ``UPDATE_TRIES``,
with a growing random pause), so updates through any number of hosts are atomic and none is
lost. Within one process the updates of one item wait for each other (``_item_lock``): a race
is lost only to another host, so the tries of one update are about the number of hosts
updating that item at once, not the number of its callers.

The event JSON is built here once (``event_parts``): a head and a tail around the item's JSON,
so a script joins ``head .. value .. tail`` without a JSON library; a set passes both heads
(``create`` and ``update``) and the script picks by whether the item existed.

Who consumes what: every host's stream process SUBSCRIBEs ``stream::events`` and pushes each
event to its own subscriber sockets (the local write path pushes nothing itself, so a
subscriber gets each event once, whichever host wrote); every host's stream process reads
``iii:stream-changes`` with a consumer group of its own (``kit.redisconn.host_id()``) and fires
the ``stream`` triggers bound on it: each host sees each event once, so a trigger fires once
per write, on the host its worker is connected to.
"""
from __future__ import annotations

import asyncio
import random
import sys
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import orjson

from brokers.kit.ops import MISSING, apply_update_ops
from brokers.state.core import Outcome, Write
from brokers.stream import core

EVENTS_CHANNEL = "stream::events"
CHANGES = "iii:stream-changes"
STREAMS = "iii:streams"
GROUPS_PREFIX = "iii:stream-groups:"
CHANGES_MAXLEN = 100_000
UPDATE_TRIES = 64


def hash_key(stream: str, group: str) -> str:
    return f"stream:{stream}:{group}"


def groups_key(stream: str) -> str:
    return GROUPS_PREFIX + stream


# KEYS: hash, groups set, streams set, changes stream.
# ARGV: field, value, check ('any' | 'absent' | 'eq'), expected, group, stream,
#       create head, update head, tail, channel, maxlen, traceparent, baggage.
# Returns {1, old|nil} when written, {0, current|nil} when the check failed.
_SET = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[3] == 'absent' then
  if old then return {0, old} end
elseif ARGV[3] == 'eq' then
  if old ~= ARGV[4] then return {0, old} end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if not old then
  redis.call('SADD', KEYS[2], ARGV[5])
  redis.call('SADD', KEYS[3], ARGV[6])
end
local head = ARGV[7]
if old then head = ARGV[8] end
local ev = head .. ARGV[2] .. ARGV[9]
redis.call('PUBLISH', ARGV[10], ev)
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[11], '*', 'm', ev, 'tp', ARGV[12], 'bg', ARGV[13])
return {1, old}
"""

# KEYS: hash, groups set, streams set, changes stream.
# ARGV: field, group, stream, delete head, tail, channel, maxlen, traceparent, baggage.
# Returns the old item's JSON, or nil when there was none (nothing written, no event).
_DELETE = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then return false end
redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[2], ARGV[2])
  if redis.call('SCARD', KEYS[2]) == 0 then redis.call('SREM', KEYS[3], ARGV[3]) end
end
local ev = ARGV[4] .. old .. ARGV[5]
redis.call('PUBLISH', ARGV[6], ev)
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[7], '*', 'm', ev, 'tp', ARGV[8], 'bg', ARGV[9])
return old
"""

# KEYS: changes stream. ARGV: event, channel, maxlen, traceparent, baggage.
_EMIT = """
redis.call('PUBLISH', ARGV[2], ARGV[1])
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'm', ARGV[1], 'tp', ARGV[4], 'bg', ARGV[5])
return 1
"""


def event_parts(stream: str, group: str, item: str | None, kind: str, now_ms: int) -> tuple[bytes, bytes]:
    """The head and tail of the §3.4 wrapper of a ``kind`` event, around its data's JSON:
    ``head + data + tail`` is ``orjson.dumps(core.wrapper(..., {"type": kind, "data": data}))``."""
    head = orjson.dumps({"type": "stream", "timestamp": now_ms, "streamName": stream, "groupId": group,
                         "id": item})[:-1]
    return head + b',"event":{"type":' + orjson.dumps(kind) + b',"data":', b"}}"


def _trace(trace: tuple[str | None, str | None]) -> tuple[str, str]:
    return trace[0] or "", trace[1] or ""


class RedisStreams:
    """The stream store and event bus on one Redis client (``kit.redisconn.connect``)."""

    def __init__(self, client: Any) -> None:
        self.r = client
        self._set = client.register_script(_SET)
        self._delete = client.register_script(_DELETE)
        self._emit = client.register_script(_EMIT)
        self._locks: dict[tuple[str, str, str], list] = {}

    @asynccontextmanager
    async def _item_lock(self, item: tuple[str, str, str]) -> AsyncIterator[None]:
        """This process's updates of one item, one at a time (in arrival order)."""
        held = self._locks.get(item)
        if held is None:
            held = self._locks[item] = [asyncio.Lock(), 0]
        held[1] += 1
        try:
            async with held[0]:
                yield
        finally:
            held[1] -= 1
            if not held[1]:
                del self._locks[item]

    @staticmethod
    def _keys(stream: str, group: str) -> list[str]:
        return [hash_key(stream, group), groups_key(stream), STREAMS, CHANGES]

    # ------------------------------------------------------------ writes

    async def write(self, write: Write, stream: str, group: str, trace: Any, now_ms: int) -> Outcome:
        """Perform one decoded ``stream::set|delete|update`` and announce its event."""
        if write.kind == "delete":
            return await self._del(write, stream, group, trace, now_ms)
        if write.kind == "set":
            try:
                data = orjson.dumps(write.value)
            except TypeError as exc:
                return _failed(write, exc)
            _, old = await self._put(write, stream, group, data, "any", b"", trace, now_ms)
            return Outcome(write, _load(old), write.value)
        async with self._item_lock((stream, group, write.key)):
            return await self._update(write, stream, group, trace, now_ms)

    async def _update(self, write: Write, stream: str, group: str, trace: Any, now_ms: int) -> Outcome:
        for attempt in range(UPDATE_TRIES):
            if attempt > 1:  # another host keeps winning: let it pass
                await asyncio.sleep(random.uniform(0, min(0.05, 0.001 * attempt)))
            raw = await self.r.hget(hash_key(stream, group), write.key)
            old = _load(raw)
            new, errors = apply_update_ops(old, write.ops)
            try:
                data = orjson.dumps(new)
            except TypeError as exc:
                return _failed(write, exc)
            done, _ = await self._put(write, stream, group, data, "absent" if raw is None else "eq",
                                      raw or b"", trace, now_ms)
            if done:
                return Outcome(write, old, new, errors)
        return _failed(write, RuntimeError(f"the item changed under {UPDATE_TRIES} tries in a row"))

    async def _put(self, write: Write, stream: str, group: str, data: bytes, check: str,
                   expected: bytes, trace: Any, now_ms: int) -> tuple[bool, bytes | None]:
        create, tail = event_parts(stream, group, write.key, "create", now_ms)
        update, _ = event_parts(stream, group, write.key, "update", now_ms)
        tp, bg = _trace(trace)
        done, old = await self._set(keys=self._keys(stream, group), args=[
            write.key, data, check, expected, group, stream, create, update, tail,
            EVENTS_CHANNEL, CHANGES_MAXLEN, tp, bg])
        return bool(done), old

    async def _del(self, write: Write, stream: str, group: str, trace: Any, now_ms: int) -> Outcome:
        head, tail = event_parts(stream, group, write.key, "delete", now_ms)
        tp, bg = _trace(trace)
        old = await self._delete(keys=self._keys(stream, group), args=[
            write.key, group, stream, head, tail, EVENTS_CHANNEL, CHANGES_MAXLEN, tp, bg])
        return Outcome(write, _load(old), MISSING)

    async def emit(self, message: dict[str, Any], trace: Any) -> None:
        """Announce an event that stores nothing (``stream::send``, a custom provider's write)."""
        tp, bg = _trace(trace)
        await self._emit(keys=[CHANGES], args=[orjson.dumps(message), EVENTS_CHANNEL, CHANGES_MAXLEN, tp, bg])

    # ------------------------------------------------------------ reads

    async def get(self, stream: str, group: str, item: str) -> Any:
        raw = await self.r.hget(hash_key(stream, group), item)
        return None if raw is None else orjson.loads(raw)

    async def list(self, stream: str, group: str) -> list[Any]:
        """The group's items in item-id order (as the LMDB store lists them)."""
        items = await self.r.hgetall(hash_key(stream, group))
        return [orjson.loads(items[k]) for k in sorted(items)]

    async def list_groups(self, stream: str) -> list[str]:
        return sorted(m.decode() for m in await self.r.smembers(groups_key(stream)))

    async def list_all(self) -> dict[str, Any]:
        streams = sorted(m.decode() for m in await self.r.smembers(STREAMS))
        pipe = self.r.pipeline(transaction=False)
        for name in streams:
            pipe.smembers(groups_key(name))
        scopes = []
        for name, groups in zip(streams, await pipe.execute() if streams else []):
            scopes.extend(core.scope_of(name, g.decode()) for g in groups)
        return core.list_all_result(scopes)


def is_redis_error(exc: BaseException, kind: str = "RedisError") -> bool:
    """Whether ``exc`` is redis-py's ``kind`` error (redis-py is loaded only by a process on
    the redis adapter, so it is looked up, not imported)."""
    mod = sys.modules.get("redis.exceptions")
    return mod is not None and isinstance(exc, getattr(mod, kind))


def _load(raw: bytes | None) -> Any:
    return MISSING if raw is None else orjson.loads(raw)


def _failed(write: Write, exc: BaseException) -> Outcome:
    fn = core.FUNCTION_OF[write.kind]
    return Outcome(write, MISSING, MISSING, failure=core.failure(fn, str(exc)))
