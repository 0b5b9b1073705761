"""Persistence of queue jobs: LMDB on disk, a dict in memory, and group commit.

Data model: one LMDB database ``jobs``, key = job id, value = ``Job.to_record()``. A job in
the DLQ is the same record with ``failed_at`` set, so moving to and from the DLQ is one
put. Leases are never stored (core.py): after a crash every record is a ready, delayed or
DLQ job, which is how a job in flight at the crash gets delivered again: recovery on
open is ``QueueCore.restore(store.load())``, which makes every live job ready (or waiting
for its retry time).

Durability: ``commit`` applies a whole batch in one write transaction, fsync'd by LMDB on
commit (``sync=True``). ``GroupCommitter`` turns many concurrent ``commit`` calls into
one transaction on a dedicated thread (a write transaction must stay on its thread), and
resolves each caller only after the transaction holding its writes is on disk, so an
enqueue is acknowledged only once it is durable. A full map (``MapFullError``) doubles
the map size and retries the batch.
"""
from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Protocol

import lmdb

from brokers.queue.jobs import Job

log = logging.getLogger(__name__)

Op = tuple[bytes, "bytes | None"]
"""(job id, record to put) or (job id, None) to delete."""

INITIAL_MAP_SIZE = 64 * 1024 * 1024


def encode(writes: Iterable[tuple[str, Job | None]]) -> list[Op]:
    """Snapshot core writes as bytes (the core mutates its Job objects later)."""
    return [(jid.encode(), job.to_record() if job is not None else None) for jid, job in writes]


class Store(Protocol):
    def load(self) -> list[Job]: ...
    def commit(self, ops: list[Op]) -> None: ...
    def close(self) -> None: ...


class MemoryStore:
    """The same interface over a dict: for unit tests and ``store_method: in_memory``."""

    def __init__(self) -> None:
        self.records: dict[bytes, bytes] = {}
        self.commits = 0

    def load(self) -> list[Job]:
        return [Job.from_record(raw) for raw in self.records.values()]

    def commit(self, ops: list[Op]) -> None:
        for key, value in ops:
            if value is None:
                self.records.pop(key, None)
            else:
                self.records[key] = value
        self.commits += 1

    def close(self) -> None:
        pass


class LmdbStore:
    """Jobs in an LMDB environment at ``path`` (a directory, created if missing)."""

    def __init__(self, path: str, map_size: int = INITIAL_MAP_SIZE) -> None:
        os.makedirs(path, exist_ok=True)
        self.path = path
        # max_readers is small: one process, one writer thread, the loop thread reads at boot.
        self.env = lmdb.open(path, map_size=map_size, max_dbs=2, sync=True, metasync=True,
                             max_readers=16)
        self.db = self.env.open_db(b"jobs")
        self.commits = 0

    def load(self) -> list[Job]:
        """Every stored job; a record that does not decode is logged and skipped."""
        out = []
        with self.env.begin(db=self.db) as txn:
            for key, raw in txn.cursor():
                try:
                    out.append(Job.from_record(raw))
                except Exception:  # a damaged record must not stop the broker
                    log.error("skipping undecodable queue record %r", bytes(key))
        return out

    def commit(self, ops: list[Op]) -> None:
        """Apply ``ops`` in one fsync'd transaction; grows the map when it is full."""
        while True:
            try:
                with self.env.begin(write=True, db=self.db) as txn:
                    for key, value in ops:
                        if value is None:
                            txn.delete(key)
                        else:
                            txn.put(key, value)
                self.commits += 1
                return
            except lmdb.MapFullError:
                size = self.env.info()["map_size"] * 2
                log.warning("queue store %s is full; growing the map to %d MiB",
                            self.path, size >> 20)
                self.env.set_mapsize(size)

    def map_size(self) -> int:
        return self.env.info()["map_size"]

    def close(self) -> None:
        self.env.close()


class GroupCommitter:
    """Batches the writes of concurrent callers into one transaction (asyncio side).

    At most one transaction runs at a time; writes arriving meanwhile form the next one.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="queue-commit")
        self._ops: list[Op] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._task: asyncio.Task[None] | None = None

    async def commit(self, ops: list[Op]) -> None:
        """Returns once ``ops`` are durable; raises if their transaction failed.

        With no ops it is a barrier: it returns once every earlier call's ops are durable
        (at once when nothing is in progress), without a transaction of its own.
        """
        if not ops and self._task is None:
            return
        await self.submit(ops)

    def submit(self, ops: list[Op]) -> asyncio.Future[None]:
        """``commit`` without a coroutine: a future resolved once ``ops`` are durable.

        For the hot path (one enqueue = one callback, no task); futures resolve in
        submission order.
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._ops.extend(ops)
        self._waiters.append(fut)
        if self._task is None:
            self._task = loop.create_task(self._drain())
        return fut

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._waiters:
                ops, waiters = self._ops, self._waiters
                self._ops, self._waiters = [], []
                try:
                    if ops:
                        await loop.run_in_executor(self._pool, self.store.commit, ops)
                except Exception as exc:
                    log.error("queue commit of %d writes failed: %s", len(ops), exc)
                    for w in waiters:
                        if not w.done():
                            w.set_exception(exc)
                else:
                    for w in waiters:
                        if not w.done():
                            w.set_result(None)
        finally:
            self._task = None

    def close(self) -> None:
        self._pool.shutdown(wait=True)
