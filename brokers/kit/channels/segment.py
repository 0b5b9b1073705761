"""The shared-memory segments that hold channel rings: names, create, open, unlink, sweep.

A segment is a file in ``/dev/shm`` (tmpfs: memory, no disk), mapped by the process that
creates it (the ring's producer) and by the one process that reads it. Its name says whose
it is: ``iii-<tag>-<pid>-<n>``, where ``tag`` is this engine's (eight hex digits of a hash
of its runtime dir, so that two engines on one machine never touch each other's), ``pid``
the creating process and ``n`` a counter of that process.

No name outlives its use, even after a crash: the reader unlinks a segment as soon as it has
mapped it (the mapping stays; nothing else ever opens it), the producer unlinks one whose
reader never came (its process died), and the supervisor unlinks every segment of a child
that exited and, at start, every segment of its engine (``sweep``): a process killed with
SIGKILL between creating a segment and its reader opening it leaves nothing behind.

Invariants: segments are created ``O_EXCL`` and mode 0600 (only the engine's user maps
them); ``sweep`` touches only names of the given tag (and pid).
"""
from __future__ import annotations

import hashlib
import mmap
import os
from dataclasses import dataclass

SHM_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else "/tmp"
PREFIX = "iii-"


def engine_tag(runtime_dir: str) -> str:
    """The tag of the engine whose runtime dir is ``runtime_dir``."""
    real = os.path.realpath(runtime_dir).encode()
    return hashlib.blake2s(real, digest_size=4).hexdigest()


def segment_name(tag: str, pid: int, n: int) -> str:
    return f"{PREFIX}{tag}-{pid}-{n}"


@dataclass
class Segment:
    """One mapped segment."""

    name: str
    map: mmap.mmap

    def close(self) -> None:
        """Unmap (the caller has released every view of ``map``)."""
        try:
            self.map.close()
        except BufferError:  # a view is still out: the mapping goes with the last of them
            pass


def create(name: str, size: int) -> Segment:
    """A new zeroed segment of ``size`` bytes; raises ``FileExistsError`` on a clash."""
    path = os.path.join(SHM_DIR, name)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.ftruncate(fd, size)
        return Segment(name, mmap.mmap(fd, size))
    except BaseException:
        os.unlink(path)
        raise
    finally:
        os.close(fd)


def attach(name: str) -> Segment:
    """Map an existing segment and unlink its name (it has one reader: us). Raises
    ``OSError`` when it is gone (its producer died) and ``ValueError`` for a bad name."""
    if "/" in name or not name.startswith(PREFIX):
        raise ValueError(f"not a segment name: {name!r}")
    path = os.path.join(SHM_DIR, name)
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        seg = Segment(name, mmap.mmap(fd, os.fstat(fd).st_size))
    finally:
        os.close(fd)
    unlink(name)
    return seg


def unlink(name: str) -> bool:
    """Remove a segment's name; False when it was already gone."""
    try:
        os.unlink(os.path.join(SHM_DIR, name))
        return True
    except FileNotFoundError:
        return False


def sweep(tag: str, pid: int | None = None) -> list[str]:
    """Unlink every segment of engine ``tag`` (of process ``pid`` only, when given)."""
    head = f"{PREFIX}{tag}-" if pid is None else f"{PREFIX}{tag}-{pid}-"
    gone = []
    try:
        names = os.listdir(SHM_DIR)
    except OSError:
        return gone
    for name in names:
        if name.startswith(head) and unlink(name):
            gone.append(name)
    return gone
