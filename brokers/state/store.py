"""Storage of the state broker: LMDB on disk, and a dict store for unit tests.

Both stores implement ``Store``: ``apply_batch(writes) -> outcomes`` (one batch of the group
commit), and the reads ``get``, ``list``, ``list_groups``. ``MemoryStore`` serves
``store_method: in_memory`` and unit tests.

LMDB layout (one unnamed database):

    key   = esc(scope) + b"\\x00" + key        (UTF-8; esc: 0x01 -> 01 02, 0x00 -> 01 01)
    value = orjson bytes of the stored JSON value (so JSON null is stored, and exists)

``esc(scope)`` contains no 0x00, so ``esc(scope) + 0x00`` is a prefix of exactly that scope's
keys: ``list(scope)`` is one range scan, and ``list_groups`` walks distinct scopes by jumping
to ``esc(scope) + 0x01``. A key too long for LMDB (511 bytes with the scope) is stored under
``0xFF + sha256(key)`` instead (0xFF never occurs in UTF-8, so it cannot meet a real key);
``list`` returns values only, so it is unaffected. Values come back in key byte order: the
Rust kv adapter keeps insertion order, Redis none; clients cannot rely on either.

A write with an ``idempotency_key`` leaves a record under ``0xFE + sha256(scope, key,
idempotency key)`` (0xFE never starts a UTF-8 scope, and sorts after every one, so scans
of scopes never meet it) holding the write's outcome, in the same transaction as the
write: a retry finds it and is answered with that outcome, writing and firing nothing. A
record older than ``IDEM_TTL_MS`` no longer counts and is pruned as the store writes.

Invariants: ``apply_batch`` applies its writes in order in ONE write transaction (a later
write sees an earlier one), commits once with fsync, and only then returns; an exception
means nothing of the batch is stored. Opening, map growth (double on a full map, up to
``MAX_MAP_SIZE``, then ``BatchFailed``), a full disk (``BatchFailed``: ``no space left on
device``) and the resize lock readers take are the kit's ``LmdbEnv``; ``batch_failure``
gives each caller of a failed batch its own write's code (workers-a §2: ``SET_ERROR``,
``UPDATE_ERROR``, ``DELETE_ERROR``; "Failed to set value: ..."). Reads use their own read
transactions, so they never wait for a writer (LMDB MVCC). ``apply_batch`` may run in a writer thread while reads run on the event loop; the
group commit around it is the kit's ``GroupCommitter`` (service.py).
"""
from __future__ import annotations

import hashlib
import logging
import re
import time
from typing import Any, Callable, Iterable, Protocol, Sequence

import lmdb
import orjson

from brokers.kit.commit import GroupCommitter
from brokers.state.core import Outcome, Write, apply_write, write_result
from brokers.kit.errors import EngineError
from brokers.kit.lmdbenv import (DEFAULT_MAP_SIZE, MAX_MAP_SIZE, LmdbEnv, MapLimitError,
                                 StorageFull, caller_reason)
from brokers.kit.ops import MISSING


log = logging.getLogger(__name__)

_FAIL = {"set": ("SET_ERROR", "Failed to set value"),
         "update": ("UPDATE_ERROR", "Failed to update value"),
         "delete": ("DELETE_ERROR", "Failed to delete value")}

_UNESC = re.compile(rb"\x01([\x01\x02])")


class BatchFailed(EngineError):
    """A batch the store could not commit (nothing of it stored). ``message`` and ``reason``
    are for callers (``batch_failure`` words it for each caller's kind of write); ``str()``
    is for the log and may name the store (``kit.lmdbenv.StorageFull``)."""

    def __init__(self, exc: BaseException) -> None:
        self.reason = caller_reason(exc)
        super().__init__("SET_ERROR", f"Failed to set value: {self.reason}")
        self.detail = str(exc)

    def __str__(self) -> str:
        return f"Failed to set value: {self.detail}"


def batch_failure(write: Write, exc: BaseException) -> EngineError:
    """What the caller of ``write`` gets when its batch failed with ``exc``."""
    code, text = _FAIL[write.kind]
    reason = exc.reason if isinstance(exc, BatchFailed) else caller_reason(exc)
    return EngineError(code, f"{text}: {reason}")


def group_committer(store: Store, committed: Callable[[list, Sequence[Outcome]], None]
                    ) -> GroupCommitter[tuple[Write, Any], Outcome]:
    """The group commit of ``store`` (items ``(write, trace)``; kit.commit): one batch at a
    time in one transaction, on the ``state-writer`` thread for LMDB (its commit blocks on
    fsync and releases the GIL), inline for the dict store. Each caller gets its write's
    result (``write_result``) or its own kind of error for a failed batch; ``committed``
    runs on the loop after the batch's callers were answered. The state process and a
    gateway serving writes in place (inplace.py) commit through this one."""
    thread = "state-writer" if isinstance(store, LmdbStore) else None
    return GroupCommitter(lambda batch: store.apply_batch([w for w, _ in batch]), name="state",
                          thread=thread, settle=write_result, committed=committed,
                          failed=lambda item, exc: batch_failure(item[0], exc))


def esc_scope(scope: str) -> bytes:
    return scope.encode("utf-8", "surrogatepass").replace(b"\x01", b"\x01\x02").replace(b"\x00", b"\x01\x01")


def unesc_scope(raw: bytes) -> str:
    return _UNESC.sub(lambda m: b"\x00" if m.group(1) == b"\x01" else b"\x01", raw).decode("utf-8", "surrogatepass")


def encode_key(scope: str, key: str, limit: int = 511) -> bytes:
    """The LMDB key of (scope, key); raises ``ValueError`` when even the digest form is too long."""
    prefix = esc_scope(scope) + b"\x00"
    raw = key.encode("utf-8", "surrogatepass")
    if len(prefix) + len(raw) <= limit:
        return prefix + raw
    hashed = prefix + b"\xff" + hashlib.sha256(raw).digest()
    if len(hashed) > limit:
        raise ValueError(f"scope of {len(prefix) - 1} bytes is too long for the store (limit {limit - 34})")
    return hashed


class KeyIO:
    """The three primitive operations a write needs, bound to one transaction."""

    def __init__(self, get: Callable[[bytes], bytes | None], put: Callable[[bytes, bytes], Any],
                 delete: Callable[[bytes], Any]) -> None:
        self.get, self.put, self.delete = get, put, delete


IDEM = b"\xfe"
IDEM_TTL_MS = 24 * 3600 * 1000
"""How long an idempotency key is remembered: a day, longer than any client's retries."""
SWEEP = 32
"""Idempotency records looked at per committed batch, to prune the expired ones: the
sweep walks them in key order, a few per commit, so no commit pays for all of them."""
PREFIX_CACHE = 1024
"""Scopes whose escaped key prefix ``LmdbStore`` keeps (cleared when full)."""
READERS_CHECK_S = 10.0
"""How often the writer frees the reader slots of dead processes (``clear_stale_readers``)."""


def idem_key(write: Write) -> bytes:
    digest = hashlib.sha256(b"\x00".join(s.encode("utf-8", "surrogatepass") for s in (
        write.scope, write.key, write.idempotency_key or ""))).digest()
    return IDEM + digest


def _replay(io: KeyIO, write: Write, now_ms: int) -> Outcome | None:
    raw = io.get(idem_key(write))
    if raw is None:
        return None
    rec = orjson.loads(raw)
    if now_ms - rec["at"] > IDEM_TTL_MS:
        return None
    return Outcome(write, rec.get("old", MISSING) if "old" in rec else MISSING,
                   rec["new"] if "new" in rec else MISSING, rec.get("errors", []), replayed=True)


def _remember(io: KeyIO, out: Outcome, now_ms: int) -> None:
    rec: dict[str, Any] = {"at": now_ms, "errors": out.errors}
    if out.old is not MISSING:
        rec["old"] = out.old
    if out.new is not MISSING:
        rec["new"] = out.new
    io.put(idem_key(out.write), orjson.dumps(rec))


def apply_one(io: KeyIO, write: Write, key_of: Callable[[str, str], bytes],
              now_ms: int | None = None) -> Outcome:
    """Read-modify-write of one ``write``; an unusable key or value fails only this write.
    A write whose idempotency key was applied before gets that write's outcome back."""
    if write.idempotency_key is not None:
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        seen = _replay(io, write, now_ms)
        if seen is not None:
            return seen
        out = _apply(io, write, key_of)
        if out.failure is None:
            _remember(io, out, now_ms)
        return out
    return _apply(io, write, key_of)


def _apply(io: KeyIO, write: Write, key_of: Callable[[str, str], bytes]) -> Outcome:
    code, text = _FAIL[write.kind]
    try:
        key = key_of(write.scope, write.key)
    except ValueError as exc:
        return Outcome(write, MISSING, MISSING, failure=EngineError(code, f"{text}: {exc}"))
    raw = io.get(key)
    old = MISSING if raw is None else orjson.loads(raw)
    new, errors = apply_write(write, old)
    if new is MISSING:
        if raw is not None:
            io.delete(key)
    else:
        try:
            data = orjson.dumps(new)
        except TypeError as exc:  # e.g. an integer beyond 64 bits
            return Outcome(write, old, MISSING, failure=EngineError(code, f"{text}: {exc}"))
        io.put(key, data)
    return Outcome(write, old, new, errors)


class Store(Protocol):
    """What the state broker needs of a store; ``commits`` counts committed batches."""

    commits: int

    def apply_batch(self, writes: Sequence[Write]) -> list[Outcome]: ...
    def note_scopes(self, scopes: Iterable[str]) -> None: ...
    def get(self, scope: str, key: str) -> Any: ...
    def get_raw(self, scope: str, key: str) -> bytes | None: ...
    def list(self, scope: str) -> list[Any]: ...
    def list_groups(self) -> list[str]: ...
    def close(self) -> None: ...


def open_store(path: str | None) -> Store:
    """LMDB at ``path`` (created if missing), or the in-memory store when ``path`` is None."""
    return MemoryStore() if path is None else LmdbStore(path)


class LmdbStore:
    """The durable store: one LMDB environment under ``path`` (a directory)."""

    def __init__(self, path: str, map_size: int = DEFAULT_MAP_SIZE, max_map_size: int = MAX_MAP_SIZE) -> None:
        self.path = path
        self.lmdbenv = LmdbEnv(path, map_size=map_size, max_map_size=max_map_size, readahead=False)
        self.env = self.lmdbenv.env
        self._limit = self.lmdbenv.max_key_size()
        self._touched: set[str] = set()
        self._prefixes: dict[str, bytes] = {}
        self._sweep_at = IDEM
        self.commits = 0
        self._readers_at = 0.0
        """When (monotonic) the writer last looked for dead readers' slots."""
        self._check_readers()

    def _key(self, scope: str, key: str) -> bytes:
        # Hot path: the escaped prefix of a scope is computed once (a bounded cache).
        prefix = self._prefixes.get(scope)
        if prefix is None:
            if len(self._prefixes) >= PREFIX_CACHE:
                self._prefixes.clear()
            prefix = self._prefixes[scope] = esc_scope(scope) + b"\x00"
        raw = key.encode("utf-8", "surrogatepass")
        if len(prefix) + len(raw) <= self._limit:
            return prefix + raw
        return encode_key(scope, key, self._limit)

    # ------------------------------------------------------------ writes

    def apply_batch(self, writes: Sequence[Write]) -> list[Outcome]:
        """Apply ``writes`` in order in one transaction, fsync, and return their outcomes."""
        if not writes:
            return []

        now_ms = int(time.time() * 1000)
        if time.monotonic() - self._readers_at > READERS_CHECK_S:
            self._check_readers()

        def body(txn: lmdb.Transaction) -> list[Outcome]:
            io = KeyIO(txn.get, txn.put, txn.delete)
            outcomes = [apply_one(io, w, self._key, now_ms) for w in writes]
            self._sweep(txn, now_ms)
            return outcomes

        try:
            outcomes = self.lmdbenv.write(body)
        except (MapLimitError, StorageFull) as exc:
            raise BatchFailed(exc) from exc
        self.commits += 1
        touched = self._touched
        for w in writes:
            if w.scope not in touched:
                touched.add(w.scope)
        return outcomes

    def _check_readers(self) -> None:
        """Gateways serve this store in place too (inplace.py); one that died in a read
        leaves its slot taken: freed here, at open and every ``READERS_CHECK_S``."""
        self._readers_at = time.monotonic()
        freed = self.lmdbenv.clear_stale_readers()
        if freed:
            log.warning("state store at %s: freed %d reader slots of processes that died reading it",
                        self.path, freed)

    def _sweep(self, txn: lmdb.Transaction, now_ms: int) -> None:
        """Delete expired idempotency records among the next ``SWEEP`` ones."""
        cur = txn.cursor()
        if not cur.set_range(self._sweep_at):
            self._sweep_at = IDEM
            return
        for _ in range(SWEEP):
            key = cur.key()
            if not key.startswith(IDEM):
                self._sweep_at = IDEM
                return
            if now_ms - orjson.loads(cur.value())["at"] > IDEM_TTL_MS:
                if not cur.delete():  # the cursor now stands on the next record
                    self._sweep_at = IDEM
                    return
                continue
            if not cur.next():
                self._sweep_at = IDEM
                return
        self._sweep_at = cur.key()

    # ------------------------------------------------------------ reads

    def note_scopes(self, scopes: Iterable[str]) -> None:
        """Scopes another process wrote (a gateway in place): ``list_groups`` counts them
        as this process's own writes."""
        self._touched.update(scopes)

    def get(self, scope: str, key: str) -> Any:
        raw = self.get_raw(scope, key)
        return MISSING if raw is None else orjson.loads(raw)

    def get_raw(self, scope: str, key: str) -> bytes | None:
        """The stored orjson bytes of (scope, key), None when absent: ``state::get`` answers
        with them as they are (no decode and re-encode of the value)."""
        try:
            k = self._key(scope, key)
        except ValueError:
            return None
        return self.lmdbenv.get(k)

    def list(self, scope: str) -> list[Any]:
        prefix = esc_scope(scope) + b"\x00"
        out: list[Any] = []
        with self.lmdbenv.read() as txn:
            cur = txn.cursor()
            if cur.set_range(prefix):
                for k, v in cur:
                    if not k.startswith(prefix):
                        break
                    out.append(orjson.loads(v))
        return out

    def list_groups(self) -> list[str]:
        scopes = set(self._touched)
        with self.lmdbenv.read() as txn:
            cur = txn.cursor()
            found = cur.first()
            while found and not cur.key().startswith(IDEM):  # idempotency records sort last
                raw_scope = cur.key().split(b"\x00", 1)[0]
                scopes.add(unesc_scope(raw_scope))
                found = cur.set_range(raw_scope + b"\x01")
        return sorted(scopes)

    def close(self) -> None:
        self.lmdbenv.close()


class MemoryStore:
    """The same interface on dicts of orjson bytes, for unit tests; no durability."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self._touched: set[str] = set()
        self.commits = 0

    def apply_batch(self, writes: Sequence[Write]) -> list[Outcome]:
        # All or nothing, like a transaction: changes go to an overlay (None = deleted)
        # that is folded into ``data`` only when every write of the batch has run.
        overlay: dict[bytes, bytes | None] = {}

        def get(key: bytes) -> bytes | None:
            return overlay[key] if key in overlay else self.data.get(key)

        io = KeyIO(get, overlay.__setitem__, lambda key: overlay.__setitem__(key, None))
        now_ms = int(time.time() * 1000)
        outcomes = [apply_one(io, w, encode_key, now_ms) for w in writes]
        if self.commits % 1024 == 0:  # nothing persists here: prune now and then, all at once
            for key in [k for k, v in self.data.items()
                        if k.startswith(IDEM) and now_ms - orjson.loads(v)["at"] > IDEM_TTL_MS]:
                del self.data[key]
        for key, raw in overlay.items():
            if raw is None:
                self.data.pop(key, None)
            else:
                self.data[key] = raw
        self.commits += 1
        self._touched.update(w.scope for w in writes)
        return outcomes

    def note_scopes(self, scopes: Iterable[str]) -> None:
        self._touched.update(scopes)

    def get(self, scope: str, key: str) -> Any:
        raw = self.get_raw(scope, key)
        return MISSING if raw is None else orjson.loads(raw)

    def get_raw(self, scope: str, key: str) -> bytes | None:
        try:
            return self.data.get(encode_key(scope, key))
        except ValueError:
            return None

    def list(self, scope: str) -> list[Any]:
        prefix = esc_scope(scope) + b"\x00"
        return [orjson.loads(v) for k, v in sorted(self.data.items()) if k.startswith(prefix)]

    def list_groups(self) -> list[str]:
        return sorted(self._touched | {unesc_scope(k.split(b"\x00", 1)[0]) for k in self.data
                                       if not k.startswith(IDEM)})

    def close(self) -> None:
        pass
