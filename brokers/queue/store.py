"""Persistence of queue jobs: LMDB on disk, a dict in memory, and group commit.

Data model: one LMDB database ``jobs``, key = job id, value = ``Job.to_record()``. A job in
the DLQ is the same record with ``failed_at`` set, so moving to and from the DLQ is one
put. Leases are never stored (core.py): after a crash every record is a ready, delayed or
DLQ job, which is how a job in flight at the crash gets delivered again: recovery on
open is ``QueueCore.restore(store.load())``, which makes every live job ready (or waiting
for its retry time).

Durability: ``commit`` applies a whole batch in one write transaction, fsync'd by LMDB on
commit (the kit's ``LmdbEnv``: ``sync=True, metasync=True``; a full map doubles, up to its
cap, and the batch is retried). ``open_committer`` puts the kit's ``GroupCommitter`` in
front of it: many concurrent callers' ops become one ``commit`` on the ``queue-commit``
thread, and each caller is resolved only after the transaction holding its writes is on
disk, so an enqueue is acknowledged only once it is durable.
"""
from __future__ import annotations

import logging
from typing import Iterable, Protocol

from brokers.kit.commit import GroupCommitter
from brokers.kit.lmdbenv import DEFAULT_MAP_SIZE, MAX_MAP_SIZE, LmdbEnv
from brokers.queue.jobs import Job

log = logging.getLogger(__name__)

Op = tuple[bytes, "bytes | None"]
"""(job id, record to put) or (job id, None) to delete."""

INITIAL_MAP_SIZE = DEFAULT_MAP_SIZE


def encode(writes: Iterable[tuple[str, Job | None]]) -> list[Op]:
    """Snapshot core writes as bytes (the core mutates its Job objects later)."""
    return [(jid.encode(), job.to_record() if job is not None else None) for jid, job in writes]


class Store(Protocol):
    """What the queue broker needs of a job store; ``commits`` counts transactions."""

    commits: int

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


def open_store(path: str | None) -> Store:
    """LMDB at ``path`` (created if missing), or the in-memory store when ``path`` is None."""
    return MemoryStore() if path is None else LmdbStore(path)


class LmdbStore:
    """Jobs in an LMDB environment at ``path`` (a directory, created if missing)."""

    def __init__(self, path: str, map_size: int = INITIAL_MAP_SIZE, max_map_size: int = MAX_MAP_SIZE) -> None:
        self.path = path
        # max_readers is small: one process, one writer thread, the loop thread reads at boot.
        self.lmdbenv = LmdbEnv(path, map_size=map_size, max_map_size=max_map_size, max_dbs=2, max_readers=16)
        self.env = self.lmdbenv.env
        self.db = self.lmdbenv.open_db(b"jobs")
        self.commits = 0

    def load(self) -> list[Job]:
        """Every stored job; a record that does not decode is logged and skipped."""
        out = []
        with self.lmdbenv.read(self.db) as txn:
            for key, raw in txn.cursor():
                try:
                    out.append(Job.from_record(raw))
                except Exception:  # a damaged record must not stop the broker
                    log.error("skipping undecodable queue record %r", bytes(key))
        return out

    def commit(self, ops: list[Op]) -> None:
        """Apply ``ops`` in one fsync'd transaction (grown and retried on a full map)."""

        def body(txn) -> None:
            for key, value in ops:
                if value is None:
                    txn.delete(key)
                else:
                    txn.put(key, value)

        self.lmdbenv.write(body, self.db)
        self.commits += 1

    def map_size(self) -> int:
        return self.lmdbenv.map_size()

    def close(self) -> None:
        self.lmdbenv.close()


def open_committer(store: Store) -> GroupCommitter[list[Op], None]:
    """The queue's group commit: an item is one caller's ops, a batch one ``store.commit``.

    Callers with nothing to write take ``barrier()`` instead of submitting ``[]``, so a batch
    of only those needs no transaction.
    """

    def apply(items: list[list[Op]]) -> list[None]:
        ops = [op for item in items for op in item]
        if ops:
            store.commit(ops)
        return [None] * len(items)

    return GroupCommitter(apply, name="queue", thread="queue-commit")
