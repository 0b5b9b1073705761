"""The cron process's one durable fact: the latest tick it has fired (``core.Scheduler.floor``).

Stored before the ticks it covers are invoked, so that after a crash or a restart (of this
process or of the whole engine) no tick fires twice even if the wall clock is then behind
it. One number for every job, not one per job: every tick at or before it is in the past for
every job (``due`` takes all of them), so a per-job record would say nothing more and cost
one write per job per tick (10,000 per second at ``* * * * * *``), where this is one
``fdatasync`` per second at most.

The file is ``fired`` in the store directory (``<data_dir>/cron`` by default): 16 bytes, the
tick as a little-endian u64, its CRC-32, 4 zero bytes, written in place with ``pwrite`` and
``fdatasync``. A 16-byte write at offset 0 lies in one sector, so it is not torn in practice;
a file whose checksum does not hold is logged and read as "no mark" (the schedule then
relies on "strictly after now" alone, as the reference does).

Invariants: ``save`` returns only once the value is on disk; ``value`` never decreases;
the directory is 0700 and the file 0600 (``kit.process``).
"""
from __future__ import annotations

import logging
import os
import struct
import zlib

from brokers.kit.hygiene import private_dir, private_file

log = logging.getLogger(__name__)

FILENAME = "fired"
_FORMAT = struct.Struct("<QI4x")


def encode(tick: int) -> bytes:
    raw = struct.pack("<Q", tick)
    return _FORMAT.pack(tick, zlib.crc32(raw))


def decode(data: bytes) -> int | None:
    """The tick in ``data``, or None for an empty or damaged file."""
    if len(data) != _FORMAT.size:
        return None
    tick, crc = _FORMAT.unpack(data)
    return tick if zlib.crc32(struct.pack("<Q", tick)) == crc else None


class FiredMark:
    """The mark's file; ``value`` is what it holds (0 when new)."""

    def __init__(self, directory: str) -> None:
        self.directory = private_dir(directory, "cron store")
        self.path = os.path.join(self.directory, FILENAME)
        private_file(self.path, "cron store")
        created = not os.path.exists(self.path)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        if created:  # the new name must survive a power loss too
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        data = os.pread(self._fd, 64, 0)
        value = decode(data)
        if value is None and data:
            log.warning("cron store %s is damaged (%d bytes, bad checksum); starting without "
                        "a fired mark", self.path, len(data))
        self.value = value or 0

    def save(self, tick: int) -> None:
        """Store ``tick`` if it is later than the stored one; on disk when this returns.
        Blocking (one fdatasync): the shell calls it on its writer thread."""
        if tick <= self.value:
            return
        os.pwrite(self._fd, encode(tick), 0)
        os.fdatasync(self._fd)
        self.value = tick

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
