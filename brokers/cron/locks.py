"""Job locks (workers-a §6.5): who may run a job's tick. Pure: time comes in as ``now_ms``.

The scheduler asks for the locks of every job due in one tick at once
(``acquire_many``), so that an adapter with a round trip per call (``redis_lock.py``: one
lock per job and tick, never released early) can take them all in one pipeline; such an
adapter returns an awaitable of the same list and the shell awaits it. ``release`` is
fire-and-forget.

``KvLocks`` is the reference's ``kv`` adapter: entries ``{owner, expires_at_ms}`` in an
in-memory index (``lock_index``, default ``cron_locks``), keyed by job id; a lock is free
when it has no entry or its entry has expired; only its owner releases it. It is
process-local: with one cron process per engine that is exactly "a job never overlaps
itself within one engine"; two engines sharing trigger ids would both fire (the reference
warns about the same).

Invariants: an unexpired entry belongs to one owner; ``release`` by a non-owner does
nothing; ``acquire_many`` answers one bool per job id, in order.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Awaitable, Protocol, Sequence

DEFAULT_TTL_MS = 30_000
DEFAULT_INDEX = "cron_locks"


class Locks(Protocol):
    """What the scheduler needs of a lock adapter."""

    name: str

    def acquire_many(self, job_ids: Sequence[str], now_ms: int,
                     ticks: Sequence[int] | None = None) -> list[bool] | Awaitable[list[bool]]:
        """One answer per job: True if this instance now holds its lock (``ticks``: each
        job's scheduled second, for an adapter that locks per tick)."""

    def release(self, job_id: str) -> None:
        """Give the lock back (only if we hold it)."""


@dataclass(slots=True)
class Entry:
    owner: str
    expires_at_ms: int


class KvLocks:
    """The ``kv`` adapter: locks in this process's memory."""

    name = "kv"

    def __init__(self, ttl_ms: int = DEFAULT_TTL_MS, index: str = DEFAULT_INDEX,
                 owner: str | None = None) -> None:
        self.ttl_ms = ttl_ms
        self.index = index
        self.owner = owner or str(uuid.uuid4())
        self.entries: dict[str, Entry] = {}
        """job id -> entry, the ``lock_index`` of the reference's kv store."""

    def acquire(self, job_id: str, now_ms: int, owner: str | None = None) -> bool:
        entry = self.entries.get(job_id)
        if entry is not None and entry.expires_at_ms > now_ms:
            return False  # held, by another instance or by a run of ours that is not over
        self.entries[job_id] = Entry(owner or self.owner, now_ms + self.ttl_ms)
        return True

    def acquire_many(self, job_ids: Sequence[str], now_ms: int,
                     ticks: Sequence[int] | None = None) -> list[bool]:
        return [self.acquire(job_id, now_ms) for job_id in job_ids]

    def release(self, job_id: str, owner: str | None = None) -> None:
        entry = self.entries.get(job_id)
        if entry is not None and entry.owner == (owner or self.owner):
            del self.entries[job_id]

    def held(self, now_ms: int) -> list[str]:
        """Job ids whose lock is held now (for tests and status)."""
        return [job_id for job_id, e in self.entries.items() if e.expires_at_ms > now_ms]
