"""Durable trigger bindings on disk: the ones made through ``engine::register_trigger``.

Such bindings belong to no connection (protocol.md §6.4, workers-a §5.10), so no HELLO
replay brings them back after the router restarts; this module keeps them in one small
JSON file, ``<data_dir>/router/triggers.json``, and hands them back at start.

The pure parts (``record``, ``encode``, ``decode``, ``store_path``) are plain functions;
``DurableBindings`` is the thin file shell around them.

Invariants:
- the file always holds a whole, valid snapshot: it is written to a temp file, fsync'd,
  renamed over the old one with ``os.replace`` and the directory fsync'd, so a crash at any
  point leaves either the old or the new snapshot;
- ``DurableBindings.records`` changes only after the write that reflects it succeeded, so
  memory never claims more (or less) durability than the disk has;
- the bindings are private: ``<data_dir>/router`` 0700, the file 0600, a looser one found
  at ``load`` tightened (``kit.hygiene.private_dir``);
- a file that cannot be read or parsed never stops the router: it is logged, moved aside
  as ``<file>.corrupt`` and the router starts with no durable bindings.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Iterable

import orjson

from brokers.kit.hygiene import private_dir, private_file

log = logging.getLogger(__name__)

SUBDIR = "router"
FILENAME = "triggers.json"
VERSION = 1
FIELDS = ("id", "trigger_type", "function_id", "config", "metadata", "trigger_namespace")
"""What a binding needs to be re-registered as it was (owner None, target ``default``)."""
_REQUIRED = ("id", "trigger_type", "function_id")


class CorruptFile(ValueError):
    """The file's bytes are not a snapshot this module wrote."""


def store_path(data_dir: str) -> str:
    """The file's path: the router's own subdirectory of the data dir, as the queue has."""
    return os.path.join(data_dir, SUBDIR, FILENAME)


def record(bid: str, data: dict) -> dict:
    """The stored form of one ``engine::register_trigger`` call that got id ``bid``; also
    the exact message given to ``Registry.register_trigger``."""
    out = {key: data.get(key) for key in FIELDS}
    out["id"] = bid
    return out


def encode(records: Iterable[dict]) -> bytes:
    """A snapshot of every durable binding, sorted by id so equal sets give equal bytes."""
    rows = sorted(({key: r.get(key) for key in FIELDS} for r in records), key=lambda r: r["id"])
    return orjson.dumps({"version": VERSION, "bindings": rows}, option=orjson.OPT_INDENT_2)


def decode(raw: bytes) -> dict[str, dict]:
    """The bindings of a snapshot by id; ``CorruptFile`` naming what is wrong otherwise.

    All or nothing: one bad entry rejects the file, since a half-trusted file could be
    one whose bytes were damaged anywhere."""
    try:
        doc: Any = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise CorruptFile(f"not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("version") != VERSION or not isinstance(doc.get("bindings"), list):
        raise CorruptFile(f"expected {{version: {VERSION}, bindings: [...]}}")
    out: dict[str, dict] = {}
    for i, row in enumerate(doc["bindings"]):
        if not isinstance(row, dict) or not all(isinstance(row.get(k), str) and row[k] for k in _REQUIRED):
            raise CorruptFile(f"bindings[{i}]: id, trigger_type and function_id must be non-empty strings")
        tns = row.get("trigger_namespace")
        if tns is not None and not isinstance(tns, str):
            raise CorruptFile(f"bindings[{i}].trigger_namespace: expected a string or null")
        if row["id"] in out:
            raise CorruptFile(f"bindings[{i}]: duplicate id {row['id']!r}")
        out[row["id"]] = {key: row.get(key) for key in FIELDS}
    return out


class DurableBindings:
    """The file shell: ``load`` once at start, then ``add`` / ``remove`` per call.

    Writes are synchronous on the caller's loop: bindings change rarely (CLIs, agents) and
    the answer to the caller must wait for the fsync anyway."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.records: dict[str, dict] = {}

    def __contains__(self, bid: object) -> bool:
        return bid in self.records

    def load(self) -> list[dict]:
        """The stored bindings (none if there is no file yet, or it is unusable)."""
        self._drop_stale_temp()
        if os.path.isdir(os.path.dirname(self.path)):  # only ours may read the bindings
            private_dir(os.path.dirname(self.path), "router store")
            private_file(self.path, "router store file")
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return []
        except OSError as exc:
            self._set_aside(f"cannot be read: {exc}")
            return []
        try:
            self.records = decode(raw)
        except CorruptFile as exc:
            self._set_aside(str(exc))
            return []
        log.info("loaded %d durable trigger binding(s) from %s", len(self.records), self.path)
        return list(self.records.values())

    def add(self, rec: dict) -> None:
        """Store one more binding; on return it is on disk (OSError otherwise, nothing kept)."""
        records = {**self.records, rec["id"]: rec}
        self._write(records)
        self.records = records

    def remove(self, bid: str) -> bool:
        """Forget a binding; on return the file no longer has it. False if it was not stored."""
        if bid not in self.records:
            return False
        records = {k: v for k, v in self.records.items() if k != bid}
        self._write(records)
        self.records = records
        return True

    # ---- file mechanics -----------------------------------------------------------------

    def _write(self, records: dict[str, dict]) -> None:
        folder = os.path.dirname(self.path)
        private_dir(folder, "router store")
        tmp = self.path + ".tmp"
        with open(tmp, "wb", opener=lambda p, flags: os.open(p, flags, 0o600)) as f:
            os.fchmod(f.fileno(), 0o600)  # the replace keeps this mode: 0600 whatever the umask
            f.write(encode(records.values()))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        # The rename itself is durable only once the directory entry is.
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _drop_stale_temp(self) -> None:
        # A temp file is left only by a crash before its rename: the old snapshot is the truth.
        try:
            os.unlink(self.path + ".tmp")
        except OSError:
            pass

    def _set_aside(self, reason: str) -> None:
        aside = self.path + ".corrupt"
        try:
            os.replace(self.path, aside)
            where = f"moved to {aside}"
        except OSError as exc:
            where = f"could not be moved aside ({exc}); the next binding change overwrites it"
        log.error("durable trigger bindings file %s is unusable (%s); starting with no durable "
                  "bindings, the file %s", self.path, reason, where)
