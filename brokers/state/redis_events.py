"""Cluster-wide ``state`` triggers: every host's state process reads the change events the
write scripts append to ``iii:state:events`` (redis_store.py) and fires the triggers bound
on that host.

Each host reads with a consumer group of its own (group = consumer = the host id,
``kit.redisconn.host_id()``), so every host sees every event once, whichever host wrote it;
a binding lives on the host whose worker registered it, so each bound trigger fires once per
write. The writer fires nothing itself: with the redis adapter this stream is the only
firing path, for local writes too.

Reading: XREADGROUP ... BLOCK in one task; an entry is XACKed once its triggers were handed
on (queued for delivery, service.py), so entries read but not handed on when the process
died (kill -9) are read again after the restart (their ids stay pending in the group: the
reader starts with its pending entries, id 0, then new ones, ``>``). A group created for the
first time starts at the stream's end (``$``): a new host fires nothing for older writes.
The stream is capped by the writers (``MAXLEN ~``); a host down for longer than the cap
lasts misses what was trimmed. A connection error is logged and retried after a pause.
Host ids change (the default one names the supervisor's pid): each reader notes when it
last read in the hash ``iii:state:readers`` (field = its group, value = ms since the epoch,
every ``HEARTBEAT_S``), and a host that starts destroys the groups whose reader was last
seen more than ``STALE_GROUP_MS`` ago (hosts gone for good).

Entry fields: ``s`` scope, ``k`` key, ``t`` created|updated|deleted, ``o`` old value and
``n`` new value (JSON, absent = none), ``tp``/``bg`` the write's traceparent and baggage.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

import orjson

from brokers.state import core

log = logging.getLogger(__name__)

BLOCK_MS = 1000
COUNT = 256
RETRY_S = 1.0
STALE_GROUP_MS = 24 * 3600 * 1000
HEARTBEAT_S = 10.0
READERS_KEY = b"iii:state:readers"

_TYPES = {b"created": core.CREATED, b"updated": core.UPDATED, b"deleted": core.DELETED}

Handler = Callable[[str, str, dict, tuple[str | None, str | None]], None]
"""``(scope, key, event payload, trace)``: hand one event on (must not block)."""


def decode(fields: dict[bytes, bytes]) -> tuple[str, str, dict, tuple[str | None, str | None]]:
    """The trigger payload (workers-a §2.3) and trace context of one stream entry."""
    scope = fields[b"s"].decode("utf-8", "surrogatepass")
    key = fields[b"k"].decode("utf-8", "surrogatepass")
    old, new = fields.get(b"o"), fields.get(b"n")
    event = {
        "type": "state",
        "event_type": _TYPES[fields[b"t"]],
        "scope": scope,
        "key": key,
        "old_value": None if old is None else orjson.loads(old),
        "new_value": None if new is None else orjson.loads(new),
    }
    tp, bg = fields.get(b"tp"), fields.get(b"bg")
    return scope, key, event, (tp.decode() if tp else None, bg.decode() if bg else None)


class EventReader:
    """Reads the event stream with this host's consumer group and hands entries on."""

    def __init__(self, client: Any, group: str, handler: Handler, *, stream: bytes,
                 stale_group_ms: int = STALE_GROUP_MS) -> None:
        self.client = client
        self.stale_group_ms = stale_group_ms
        self.group = group
        self.handler = handler
        self.stream = stream
        self.read = 0
        """Entries handed on since start."""

    async def ensure_group(self) -> None:
        from redis.exceptions import ResponseError
        try:
            await self.client.xgroup_create(self.stream, self.group, id="$", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def heartbeat(self) -> None:
        await self.client.hset(READERS_KEY, self.group, int(time.time() * 1000))

    async def drop_stale_groups(self) -> list[str]:
        """Destroy the groups of hosts whose reader was last seen ``stale_group_ms`` ago."""
        dropped = []
        now = int(time.time() * 1000)
        for raw, seen in (await self.client.hgetall(READERS_KEY)).items():
            name = raw.decode("utf-8", "replace")
            if name == self.group or now - int(seen) < self.stale_group_ms:
                continue
            try:
                await self.client.xgroup_destroy(self.stream, raw)
            except Exception:  # the stream is gone: nothing to destroy
                pass
            await self.client.hdel(READERS_KEY, raw)
            dropped.append(name)
            log.info("state events: dropped the consumer group of host %s (not seen for %d s)",
                     name, (now - int(seen)) // 1000)
        return dropped

    async def run(self) -> None:
        pending = True  # first the entries this group got before a crash, then new ones
        first = True
        beat = 0.0
        while True:
            try:
                if pending:
                    await self.ensure_group()
                    if first:
                        first = False
                        await self.drop_stale_groups()
                if time.monotonic() >= beat:
                    await self.heartbeat()
                    beat = time.monotonic() + HEARTBEAT_S
                reply = await self.client.xreadgroup(
                    self.group, self.group, {self.stream: "0" if pending else ">"},
                    count=COUNT, block=None if pending else BLOCK_MS)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("state events: reading %s failed (retrying): %s", self.stream.decode(), exc)
                pending = True
                await asyncio.sleep(RETRY_S)
                continue
            entries = reply[0][1] if reply else []
            if pending and not entries:
                pending = False
                continue
            ids = []
            for entry_id, fields in entries:
                ids.append(entry_id)
                if not fields:  # pending, but trimmed away meanwhile
                    continue
                try:
                    self.handler(*decode(fields))
                except Exception:
                    log.exception("state events: entry %s not handed on", entry_id)
                self.read += 1
            if ids:
                try:
                    await self.client.xack(self.stream, self.group, *ids)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # read again after a restart: at least once
                    log.warning("state events: XACK failed: %s", exc)
