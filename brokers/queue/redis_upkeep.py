"""The Redis queue's timers: due retries promoted, this process's heartbeat, the reaper of
dead hosts' and expired leases, the sweep that backs up lost notifications, and the notify
listener: a part of ``RedisQueueBroker`` (redis_service.py), whose state it uses."""
from __future__ import annotations

import asyncio
import logging
import time

from brokers.queue.redis_keys import ORPHAN_SWEEPS, PREFIX, SEP, _s, now_ms, parse_ready_key

log = logging.getLogger(__name__)


class RedisUpkeep:
    """Timers and sweeps of ``RedisQueueBroker``."""

    # -- timers: retries, heartbeat, reaper, sweep ---------------------------------
    def _arm_promote(self, at: int) -> None:
        if self._closing or (self._promote_at is not None and self._promote_at <= at):
            return
        if self._promote_handle is not None:
            self._promote_handle.cancel()
        self._promote_at = at
        loop = asyncio.get_running_loop()
        self._promote_handle = loop.call_later(max(0.0, (at - now_ms()) / 1000),
                                               lambda: self._tasks.append(asyncio.ensure_future(self._promote())))

    async def _promote(self) -> None:
        self._promote_at, self._promote_handle = None, None
        try:
            nxt = int(await self._run("PROMOTE", now_ms()))
        except Exception as exc:
            log.warning("queue: promoting due retries failed (%s)", exc)
            nxt = now_ms() + 200
        if nxt > 0:
            self._arm_promote(nxt)

    async def _sweeper(self) -> None:
        beat_every = self.heartbeat_ms / 1000
        last_beat = 0.0
        while True:
            try:
                if time.monotonic() - last_beat >= beat_every:
                    current = await self._run("HEARTBEAT", self.inc, self.host, self.lease_ms,
                                              now_ms() + self.lease_ms, self._fns, *self._held)
                    last_beat = time.monotonic()
                    if not current:
                        log.warning("queue: host %s has a newer queue process; this one keeps "
                                    "its leases until it stops", self.host)
                await self._sweep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("queue: sweep failed (%s)", exc)
            await asyncio.sleep(beat_every / 2)

    async def _sweep(self) -> None:
        now = now_ms()
        returned = await self._run("REAP", now)
        if returned:
            log.info("queue: %d leases of stopped hosts or expired returned", returned)
        nxt = int(await self._run("PROMOTE", now))
        if nxt > 0:
            self._arm_promote(nxt)
        await self._refresh_lanes()
        pipe = self.r.pipeline(transaction=False)
        pipe.smembers(PREFIX + "ne")
        pipe.hgetall(PREFIX + "fns")
        pipe.hgetall(PREFIX + "depth")
        ne, fns, depth = await pipe.execute()
        nonempty = {_s(k) for k in ne}
        self._depth = {_s(k): int(v) for k, v in depth.items()}
        served: set[str] = set()
        for text in fns.values():
            served.update(_s(text).split("\n"))
        self.known |= nonempty
        orphans = set()
        for rk in nonempty:
            try:
                _, ns, fid = parse_ready_key(rk)
            except ValueError:
                continue
            if not self._has_route(ns, fid) and f"{ns}{SEP}{fid}" not in served:
                self._orphan_seen[rk] += 1
                if self._orphan_seen[rk] >= ORPHAN_SWEEPS:
                    orphans.add(rk)
            else:
                self._orphan_seen.pop(rk, None)
        for rk in list(self._orphan_seen):
            if rk not in nonempty and rk not in self.orphans:
                del self._orphan_seen[rk]
        self.orphans = orphans | {rk for rk in self.orphans if rk in nonempty and rk in self._orphan_seen}
        self._kick()

    async def _listen(self) -> None:
        """Wake-ups: ready keys that became non-empty (and "L": subscriber lanes changed)."""
        while True:
            pubsub = self.r.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(PREFIX + "n")
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if msg is None or msg.get("type") != "message":
                        continue
                    data = _s(msg["data"])
                    if data == "L":
                        await self._refresh_lanes()
                    else:
                        self.known.add(data)
                    self._kick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("queue: Redis notifications lost (%s); resubscribing", exc)
                await asyncio.sleep(0.2)
            finally:
                try:
                    await pubsub.aclose()
                except Exception:
                    pass
