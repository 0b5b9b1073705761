"""One LMDB environment of this process: the durable open, the one map-growth policy, and
the resize lock every reader takes. Both stores (state, queue jobs) sit on it.

Open: the directory is created; ``sync=True, metasync=True``, so a committed write
transaction is on disk (data pages, then the meta page) before ``write`` returns. The
store is private: its directory 0700 and ``data.mdb``/``lock.mdb`` 0600 (LMDB's ``mode``),
and an existing store with looser modes is tightened at open (``kit.hygiene.private_dir``).

Disk full: a commit the filesystem cannot take raises ``StorageFull`` (nothing of that
transaction is stored), however LMDB words it: ``ENOSPC``, or ``EIO``, which is what LMDB
reports for a short write, i.e. a disk that filled up during the write (so an ``EIO`` counts
as full only when the filesystem then has less than ``FULL_BELOW`` bytes free).

Growth: a write transaction that hits ``MapFullError`` is aborted, the map doubled and the
whole body run again in a fresh transaction, until it fits or the next size would pass
``max_map_size`` (``MapLimitError``; nothing of that transaction is stored). LMDB's
``set_mapsize`` must not run while this process has a live transaction, so it runs under
``_resize``, which every reader holds for the life of its read transaction. The lock is
uncontended except during a resize: readers never wait for writers (LMDB MVCC), only for a
growth in progress; the writer's own transaction is already aborted when it grows.

Several processes: LMDB serves readers and writers of one environment in many processes
(one write transaction at a time, under LMDB's own lock; a reader sees every transaction
committed before it began). A map another process has grown since this one last looked
makes LMDB refuse the next transaction (``MapResizedError``); the new size is adopted
(``set_mapsize(0)``, which must not run while a transaction of this process is live) and
the transaction begun again: by ``write`` under ``_resize`` (its own transaction is gone,
readers wait), by a reader under ``_writing`` (it waits for a running commit to end).

Threads: ``write`` runs on the caller's thread and keeps its transaction there (an LMDB
write transaction must stay on its thread); reads may run on any other thread meanwhile.
"""
from __future__ import annotations

import errno
import logging
import os
import threading
from typing import Any, Callable, TypeVar

import lmdb

from brokers.kit.hygiene import private_dir, private_file

log = logging.getLogger(__name__)

R = TypeVar("R")

DEFAULT_MAP_SIZE = 64 * 1024 * 1024
MAX_MAP_SIZE = 1 << 40
_RESIZED, _FULL = object(), object()
"""Why a write transaction must be tried again (``LmdbEnv._attempt``)."""
FULL_BELOW = 1 << 20
"""Free bytes under which an ``EIO`` from a commit is taken for a full disk."""


class MapLimitError(Exception):
    """The map would have to grow past its cap; the transaction was aborted."""


class StorageFull(Exception):
    """The filesystem holding the store is full; the transaction was aborted.

    ``str()`` names the store, for the log; callers are told ``caller_reason``, no path."""

    REASON = "no space left on device"

    def __init__(self, path: str) -> None:
        super().__init__(f"{self.REASON} (the filesystem holding {path} is full)")
        self.path = path


def caller_reason(exc: BaseException) -> str:
    """What the caller of a failed write is told: a full disk in the spec's plain words, no
    server path; anything else as it reads."""
    return StorageFull.REASON if isinstance(exc, StorageFull) else str(exc)


def disk_full(exc: BaseException, path: str) -> bool:
    """Whether ``exc``, from a write under ``path``, means the disk is full."""
    code = getattr(exc, "errno", None)
    text = str(exc)
    if code == errno.ENOSPC or "No space left" in text:
        return True
    if code != errno.EIO and "Input/output error" not in text:
        return False
    try:
        st = os.statvfs(path)
    except OSError:
        return False
    # root may write into the reserved blocks, others stop at f_bavail
    free = st.f_bfree if os.geteuid() == 0 else st.f_bavail
    return free * st.f_frsize < FULL_BELOW


class _Read:
    """A read transaction under the resize lock (a class, not a generator: it is on the
    hot path of every ``state::get``)."""

    __slots__ = ("_owner", "_db", "_txn")

    def __init__(self, owner: LmdbEnv, db: Any) -> None:
        self._owner, self._db = owner, db

    def __enter__(self) -> lmdb.Transaction:
        self._owner._resize.acquire()
        try:
            self._txn = self._owner.begin_read(self._db)
        except BaseException:
            self._owner._resize.release()
            raise
        return self._txn

    def __exit__(self, *exc: object) -> None:
        try:
            self._txn.abort()
        finally:
            self._owner._resize.release()


class LmdbEnv:
    """An LMDB environment at ``path`` (a directory) with growth up to ``max_map_size``."""

    def __init__(self, path: str, *, map_size: int = DEFAULT_MAP_SIZE, max_map_size: int = MAX_MAP_SIZE,
                 max_dbs: int = 0, max_readers: int = 126, readahead: bool = True) -> None:
        self.path = path
        self.max_map_size = max_map_size
        self._resize = threading.Lock()
        self._writing = threading.Lock()
        """Held for the life of this process's write transaction."""
        private_dir(path, "store")
        self.env = lmdb.open(path, map_size=map_size, subdir=True, sync=True, metasync=True,
                             max_dbs=max_dbs, max_readers=max_readers, readahead=readahead,
                             lock=True, mode=0o600)
        for name in ("data.mdb", "lock.mdb"):  # ``mode`` applies to new files only
            private_file(os.path.join(path, name), "store file")

    def open_db(self, name: bytes) -> Any:
        return self.env.open_db(name)

    def write(self, body: Callable[[lmdb.Transaction], R], db: Any = None) -> R:
        """Run ``body(txn)`` in one write transaction and commit it (fsync'd).

        On a full map the transaction is aborted, the map grown and ``body`` run again, so
        ``body`` must compute everything from ``txn`` (it may run more than once). Any
        other exception aborts the transaction and propagates (``StorageFull`` for a full
        disk): nothing is stored.
        """
        while True:
            with self._writing:
                done, out = self._attempt(body, db)
            if done:
                return out
            # outside _writing (a reader that adopts a size holds _resize, then takes it)
            if out is _RESIZED:  # another process grew the map: adopt its size
                with self._resize:
                    self.env.set_mapsize(0)
            else:
                self.grow()

    def _attempt(self, body: Callable[[lmdb.Transaction], R], db: Any) -> tuple[bool, Any]:
        """One try of ``write``: ``(True, result)`` once committed, ``(False, _RESIZED)``
        when another process grew the map, ``(False, _FULL)`` when the map is full."""
        try:
            txn = self.env.begin(write=True, db=db)
        except lmdb.MapResizedError:
            return False, _RESIZED
        try:
            out = body(txn)
            txn.commit()
            return True, out
        except lmdb.MapFullError:
            txn.abort()
            return False, _FULL
        except (lmdb.Error, OSError) as exc:
            txn.abort()
            if disk_full(exc, self.path):
                raise StorageFull(self.path) from None
            raise
        except BaseException:
            txn.abort()
            raise

    def read(self, db: Any = None) -> _Read:
        """``with env.read() as txn:`` a read transaction a resize waits for."""
        return _Read(self, db)

    def begin_read(self, db: Any = None) -> lmdb.Transaction:
        """A read transaction (the caller holds ``_resize``). After another process grew
        the map LMDB refuses it once: the size is adopted when no write transaction of
        this process is live (``_writing``; lock order ``_resize`` then ``_writing``)."""
        try:
            return self.env.begin(db=db)
        except lmdb.MapResizedError:
            with self._writing:
                self.env.set_mapsize(0)
            return self.env.begin(db=db)

    def get(self, key: bytes, db: Any = None) -> bytes | None:
        """One point read in its own read transaction."""
        with self._resize, self.begin_read(db) as txn:
            return txn.get(key)

    def grow(self) -> int:
        """Double the map (``MapLimitError`` past the cap); returns the new size."""
        size = self.env.info()["map_size"] * 2
        if size > self.max_map_size:
            raise MapLimitError(f"LMDB map would exceed {self.max_map_size} bytes")
        with self._resize:
            self.env.set_mapsize(size)
        log.warning("LMDB map of %s was full; grown to %d MiB", self.path, size >> 20)
        return size

    def clear_stale_readers(self) -> int:
        """Free the reader slots of processes that died inside a read transaction (a
        gateway killed while serving the state store in place): until then LMDB keeps every
        page their snapshot could see, and the file grows under writes. Returns how many."""
        return self.env.reader_check()

    def map_size(self) -> int:
        return self.env.info()["map_size"]

    def max_key_size(self) -> int:
        return self.env.max_key_size()

    def close(self) -> None:
        self.env.close()
