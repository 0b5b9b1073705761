"""The cron broker's ``redis`` lock adapter (issue 19): each tick of a job fires once across
every engine host sharing the Redis and the trigger id.

One lock per job and tick: ``SET cron_lock:<job_id>:<tick> <host id> NX PX <ttl>``, where
``<tick>`` is the tick's scheduled time in epoch seconds. The host whose SET succeeds runs that
tick; the others skip it. The lock is never released: it expires ``ttl`` after it was taken
(``lock_ttl_ms``, at least ``MIN_TTL_MS``), long after every host has passed that tick. The
reference keys the lock by job alone (``cron_lock:<job_id>``) and deletes it when the run
ends, so a host whose timer wakes a little later than the winner's finished run takes the
free lock and fires the same tick again; keyed by tick and never released, a tick cannot be
taken twice, however long or short the run and however far apart the hosts' timers.

What it does not promise: that a job never overlaps itself across hosts (the next tick's
lock is another key; within one host the scheduler still never overlaps a job), nor a tick
when Redis cannot be reached (the tick is skipped and logged: firing it would risk firing it
on every host).

The locks of one tick's jobs are taken in one pipeline (``acquire_many``).
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

log = logging.getLogger(__name__)

PREFIX = "cron_lock:"
MIN_TTL_MS = 5_000


def lock_key(job_id: str, tick: int) -> str:
    return f"{PREFIX}{job_id}:{tick}"


class RedisLocks:
    """Locks per job and tick on one Redis client (``kit.redisconn.connect``)."""

    name = "redis"

    def __init__(self, client: Any, owner: str, ttl_ms: int) -> None:
        self.r = client
        self.owner = owner
        self.ttl_ms = max(ttl_ms, MIN_TTL_MS)
        self._failing = False

    async def acquire_many(self, job_ids: Sequence[str], now_ms: int,
                           ticks: Sequence[int] | None = None) -> list[bool]:
        """One answer per job: True if this host took the lock of that job's tick."""
        if not job_ids:
            return []
        if ticks is None:  # no tick known: the second it is now
            ticks = [now_ms // 1000] * len(job_ids)
        pipe = self.r.pipeline(transaction=False)
        for job_id, tick in zip(job_ids, ticks):
            pipe.set(lock_key(job_id, tick), self.owner, nx=True, px=self.ttl_ms)
        try:
            answers = await pipe.execute()
        except Exception as exc:
            if not self._failing:
                log.error("cron: cannot take tick locks on Redis (%s); ticks are skipped until it answers", exc)
            self._failing = True
            return [False] * len(job_ids)
        if self._failing:
            log.info("cron: Redis answers again; ticks fire")
            self._failing = False
        return [bool(a) for a in answers]

    def release(self, job_id: str) -> None:
        """Nothing: a tick's lock expires by itself, so that tick is never taken again."""

    async def close(self) -> None:
        await self.r.aclose()
