"""The state store on Redis (``adapter: {name: redis, config: {redis_url}}``), shared by
every engine host on that Redis.

Layout (the reference's): one hash per scope, ``state:<scope>``, field = key, value = the
orjson bytes of the stored JSON value (so a stored JSON null exists). Beside it:

    iii:state:events          capped stream of every change (redis_events.py reads it)
    iii:state:idem:<sha256>   hash {k, o?, n?, e}: the outcome of a write with an
                              idempotency key, expiring after ``IDEM_TTL_MS``

Every write is ONE Lua script (``WRITE_SCRIPT``): it reads the old value, writes or deletes
the field and XADDs the change event (scope, key, type, old and new value, the write's
trace context) in the same atomic step, so an event exists exactly when its write does, in
commit order. ``state::update`` computes the new value here, with the same ops code as the
LMDB store (``core.apply_write``), and the script stores it only if the field still holds
the value it was computed from (compare-and-set on the raw bytes); on a conflict the script
answers the current value and the update is computed again from it. So an update is atomic
across hosts without a second implementation of the ops language in Lua.
Acknowledged means the script returned: Redis's own durability (``appendfsync`` as the
server is configured) is the store's.

Group commit, Redis style: writes submitted while a round runs form the next round, sent as
ONE pipeline on the connection (one round trip; Redis runs the scripts in submission order,
so pipelined writes of one caller keep their order). A round with updates first fetches
their current values in one pipelined round trip. An update that conflicts (another host
wrote between) goes into the next round; a script missing from Redis's cache (a restarted
server) is loaded and its writes go into the next round too (NOSCRIPT means it did not run).

Results are the LMDB store's for the same calls, with two differences of the adapters
(workers-a §2.1): ``list_groups`` names scopes that have a hash, so a scope whose keys were
all deleted is gone at once (the reference's Redis adapter; LMDB remembers it until
restart); no key or scope is too long. ``list`` returns values in key byte order, as LMDB.
The keys of one write (scope hash, event stream, idempotency record) are in different hash
slots: a single Redis (or a primary with replicas), not Redis Cluster.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

import orjson

from brokers.state.core import Outcome, Write, apply_write
from brokers.state.store import IDEM_TTL_MS, _FAIL
from brokers.kit.errors import EngineError
from brokers.kit.ops import MISSING

log = logging.getLogger(__name__)

PREFIX = b"state:"
EVENTS_KEY = b"iii:state:events"
IDEM_PREFIX = b"iii:state:idem:"
DEFAULT_EVENTS_MAXLEN = 100_000
"""Entries the event stream keeps (approximately: ``MAXLEN ~``); a host's state process
that is down longer than it takes to write this many changes misses the oldest ones."""
MAX_ROUND = 512
"""Writes per pipeline at most (bounds the reply a round waits for)."""

WRITE_SCRIPT = b"""
-- KEYS: scope hash, event stream, idempotency record
-- ARGV: field, mode (set|del|cas), new value, expect present (0|1), expected raw,
--       maxlen, scope, traceparent, baggage, use idempotency (0|1), ttl ms, errors json
local h, stream, idem = KEYS[1], KEYS[2], KEYS[3]
local field, mode, new = ARGV[1], ARGV[2], ARGV[3]
if ARGV[10] == '1' then
  local rec = redis.call('HMGET', idem, 'k', 'o', 'n', 'e')
  if rec[1] then return {'replay', rec[2], rec[3], rec[4]} end
end
local old = redis.call('HGET', h, field)
if mode == 'cas' then
  if ARGV[4] == '1' then
    if old ~= ARGV[5] then return {'conflict', old} end
  elseif old then
    return {'conflict', old}
  end
end
local etype
if mode == 'del' then
  if old then redis.call('HDEL', h, field) end
  etype = 'deleted'
else
  redis.call('HSET', h, field, new)
  if old then etype = 'updated' else etype = 'created' end
end
local ev = {'XADD', stream, 'MAXLEN', '~', ARGV[6], '*', 's', ARGV[7], 'k', field, 't', etype}
if old then ev[#ev + 1] = 'o'; ev[#ev + 1] = old end
if mode ~= 'del' then ev[#ev + 1] = 'n'; ev[#ev + 1] = new end
if ARGV[8] ~= '' then ev[#ev + 1] = 'tp'; ev[#ev + 1] = ARGV[8] end
if ARGV[9] ~= '' then ev[#ev + 1] = 'bg'; ev[#ev + 1] = ARGV[9] end
redis.call(unpack(ev))
if ARGV[10] == '1' then
  local rec = {'HSET', idem, 'k', '1', 'e', ARGV[12]}
  if old then rec[#rec + 1] = 'o'; rec[#rec + 1] = old end
  if mode ~= 'del' then rec[#rec + 1] = 'n'; rec[#rec + 1] = new end
  redis.call(unpack(rec))
  redis.call('PEXPIRE', idem, ARGV[11])
end
return {'ok', old}
"""
WRITE_SHA = hashlib.sha1(WRITE_SCRIPT).hexdigest()

Trace = tuple[str | None, str | None]


def scope_key(scope: str) -> bytes:
    return PREFIX + scope.encode("utf-8", "surrogatepass")


def _field(key: str) -> bytes:
    return key.encode("utf-8", "surrogatepass")


def idem_key(write: Write) -> bytes:
    digest = hashlib.sha256(b"\x00".join(s.encode("utf-8", "surrogatepass") for s in (
        write.scope, write.key, write.idempotency_key or ""))).hexdigest()
    return IDEM_PREFIX + digest.encode()


def _loads(raw: bytes | None) -> Any:
    return MISSING if raw is None else orjson.loads(raw)


def _failure(write: Write, reason: Any) -> Outcome:
    code, text = _FAIL[write.kind]
    return Outcome(write, MISSING, MISSING, failure=EngineError(code, f"{text}: {reason}"))


class _Pending:
    """One submitted write: its future, and for an update the raw value it was last
    computed from (``known``: fetched, or answered by a conflict)."""

    __slots__ = ("write", "trace", "fut", "known", "have")

    def __init__(self, write: Write, trace: Trace, fut: asyncio.Future) -> None:
        self.write, self.trace, self.fut = write, trace, fut
        self.known: bytes | None = None
        self.have = False


class RedisStore:
    """``state::*`` storage on Redis; the async counterpart of ``store.LmdbStore``."""

    def __init__(self, url: str, *, events_maxlen: int = DEFAULT_EVENTS_MAXLEN,
                 client: Any = None) -> None:
        from brokers.kit.redisconn import connect
        self.url = url
        self.client = client if client is not None else connect(url)
        self.events_maxlen = events_maxlen
        self._queue: list[_Pending] = []
        self._busy = False
        self._task: asyncio.Task | None = None
        self.commits = 0
        """Rounds sent (pipelines that returned)."""
        self.conflicts = 0
        """Update computations thrown away because another writer came first."""

    # ------------------------------------------------------------ writes

    def submit(self, write: Write, trace: Trace = (None, None)) -> asyncio.Future:
        """A future of ``write``'s ``Outcome``, resolved when its script returned."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._queue.append(_Pending(write, trace, fut))
        if not self._busy:
            self._busy = True
            self._task = loop.create_task(self._run())
        return fut

    async def apply(self, write: Write, trace: Trace = (None, None)) -> Outcome:
        return await self.submit(write, trace)

    async def apply_batch(self, writes: list[Write]) -> list[Outcome]:
        """Every write of ``writes`` in order (not one transaction: each write is atomic)."""
        return list(await asyncio.gather(*(self.submit(w) for w in writes)))

    async def flush(self) -> None:
        while self._busy and self._task is not None:
            await asyncio.shield(self._task)

    async def _run(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[:MAX_ROUND], self._queue[MAX_ROUND:]
                try:
                    again = await self._round(batch)
                except Exception as exc:  # the connection: none of this round is known to be stored
                    log.error("state on redis: write round of %d failed: %s", len(batch), exc)
                    for p in batch:
                        if not p.fut.done():
                            p.fut.set_result(_failure(p.write, exc))
                    continue
                self._queue[:0] = again  # conflicts and reloads first: they came first
        finally:
            self._busy = False

    async def _round(self, batch: list[_Pending]) -> list[_Pending]:
        """Send one round; returns the writes that must go again (conflict, NOSCRIPT)."""
        fetch = [p for p in batch if p.write.kind == "update" and not p.have]
        if fetch:
            pipe = self.client.pipeline(transaction=False)
            for p in fetch:
                pipe.hget(scope_key(p.write.scope), _field(p.write.key))
            for p, raw in zip(fetch, await pipe.execute()):
                p.known, p.have = raw, True
        # Updates after an earlier write of the same key in this round are computed from
        # what that write stores (if it does not, their compare-and-set fails and they go again).
        overlay: dict[tuple[str, str], bytes | None] = {}
        pipe = self.client.pipeline(transaction=False)
        sent: list[tuple[_Pending, Any]] = []
        for p in batch:
            w = p.write
            slot = (w.scope, w.key)
            errors: list = []
            expect: bytes | None = None
            if w.kind == "delete":
                mode, data = b"del", b""
                overlay[slot] = None
            else:
                if w.kind == "update":
                    mode = b"cas"
                    expect = overlay[slot] if slot in overlay else p.known
                    new, errors = apply_write(w, _loads(expect))
                    try:
                        data = orjson.dumps(new)
                    except TypeError as exc:  # e.g. an integer beyond 64 bits
                        p.fut.set_result(_failure(w, exc))
                        continue
                    sent_new: Any = new
                else:
                    mode = b"set"
                    try:
                        data = orjson.dumps(w.value)
                    except TypeError as exc:
                        p.fut.set_result(_failure(w, exc))
                        continue
                    sent_new = w.value
                overlay[slot] = data
            tp, bg = p.trace
            use_idem = w.idempotency_key is not None
            pipe.execute_command(
                "EVALSHA", WRITE_SHA, 3, scope_key(w.scope), EVENTS_KEY,
                idem_key(w) if use_idem else IDEM_PREFIX,
                _field(w.key), mode, data, b"0" if expect is None else b"1", expect or b"",
                self.events_maxlen, w.scope.encode("utf-8", "surrogatepass"), tp or "", bg or "",
                b"1" if use_idem else b"0", IDEM_TTL_MS, orjson.dumps(errors))
            sent.append((p, (errors, sent_new if w.kind != "delete" else MISSING)))
        if not sent:
            return []
        from redis.exceptions import NoScriptError
        replies = await pipe.execute(raise_on_error=False)
        self.commits += 1
        again: list[_Pending] = []
        loaded = False
        for (p, (errors, new)), reply in zip(sent, replies):
            if isinstance(reply, Exception):
                if isinstance(reply, NoScriptError) or "NOSCRIPT" in str(reply):
                    if not loaded:
                        await self.client.execute_command("SCRIPT", "LOAD", WRITE_SCRIPT)
                        loaded = True
                    again.append(p)
                else:
                    p.fut.set_result(_failure(p.write, reply))
                continue
            tag = reply[0]
            if tag == b"ok":
                p.fut.set_result(Outcome(p.write, _loads(reply[1]), new, errors))
            elif tag == b"conflict":
                self.conflicts += 1
                p.known, p.have = reply[1], True
                again.append(p)
            else:  # replay: the outcome this idempotency key had
                p.fut.set_result(Outcome(p.write, _loads(reply[1]), _loads(reply[2]),
                                         orjson.loads(reply[3]) if reply[3] else [], replayed=True))
        if again:
            await asyncio.sleep(0)  # let other callers' writes join the next round
        return again

    # ------------------------------------------------------------ reads

    async def get(self, scope: str, key: str) -> Any:
        return _loads(await self.client.hget(scope_key(scope), _field(key)))

    async def list(self, scope: str) -> list[Any]:
        items = await self.client.hgetall(scope_key(scope))
        return [orjson.loads(items[k]) for k in sorted(items)]

    async def list_groups(self) -> list[str]:
        groups: set[str] = set()
        async for key in self.client.scan_iter(match=PREFIX + b"*", count=1000):
            groups.add(key[len(PREFIX):].decode("utf-8", "surrogatepass"))
        return sorted(groups)

    async def ping(self) -> None:
        await self.client.execute_command("SCRIPT", "LOAD", WRITE_SCRIPT)

    async def close(self) -> None:
        await self.flush()
        await self.client.aclose()


def describe(url: str) -> str:
    """``url`` without its password, for ``status`` and logs."""
    from urllib.parse import urlsplit, urlunsplit
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))
