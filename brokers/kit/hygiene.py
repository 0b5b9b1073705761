"""Process hygiene, for every entry point (the supervisor's ``start`` and each ``run``):
``harden()`` once, first thing: umask 077 (whatever the engine creates, ipc sockets
included, is its owner's alone) and the soft ``RLIMIT_NOFILE`` raised to the hard limit
(a gateway holds one descriptor per connection; 1024 stopped it at ~995). Stores make
their directories with ``private_dir`` and their files with ``private_file``: 0700 and
0600 whatever the umask, and a looser one found on disk (a store from before, a copied
tree) is tightened and logged once, at its open.

Its own module (``kit.process`` re-exports it) so that the supervisor, which needs these
and nothing of a bus process, does not import asyncio, the bus and the sink with them.
"""
from __future__ import annotations

import logging
import os
import resource
import stat

log = logging.getLogger("brokers.kit.process")


def harden() -> None:
    """umask 077 and the descriptor limit at its ceiling; once, in the entry point."""
    os.umask(0o077)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:  # not settable as a soft limit on Linux
        hard = _nr_open(soft)
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:  # a sandbox may refuse; run on what we have
            log.debug("RLIMIT_NOFILE stays at %d (raising to %d refused: %s)", soft, hard, exc)
            return
        log.debug("RLIMIT_NOFILE raised from %d to %d", soft, hard)


def _nr_open(fallback: int) -> int:
    """The kernel's per-process ceiling, for an unlimited hard limit."""
    try:
        with open("/proc/sys/fs/nr_open") as fh:
            return int(fh.read())
    except (OSError, ValueError):
        return fallback


def tighten(path: str, what: str) -> None:
    """Take the group/other bits off an existing ``path``, saying so once (the next open
    finds nothing to do); a path we may not chmod is logged and left as it is."""
    try:
        now = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return
    if not now & 0o077:
        return
    try:
        os.chmod(path, now & ~0o077)
    except OSError as exc:
        log.warning("%s %s is mode %04o (other users may read it) and cannot be made "
                    "private: %s", what, path, now, exc.strerror)
        return
    log.warning("%s %s was mode %04o (other users could read it); now %04o", what, path,
                now, now & ~0o077)


def private_dir(path: str, what: str) -> str:
    """``path`` as a directory only its owner can enter: each missing part is made 0700
    (not the umask's mode: this may run in a test or a tool), an existing one tightened."""
    path = os.path.abspath(path)
    missing: list[str] = []
    part = path
    while not os.path.isdir(part) and os.path.dirname(part) != part:
        missing.append(part)
        part = os.path.dirname(part)
    for part in reversed(missing):
        try:
            os.mkdir(part, 0o700)
        except FileExistsError:  # made meanwhile (another process of the engine)
            pass
    if not missing:
        tighten(path, what)
    return path


def private_file(path: str, what: str) -> None:
    """An existing file readable by its owner only; see ``tighten``."""
    tighten(path, what)
