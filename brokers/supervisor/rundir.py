"""The runtime dir, and the lock a running supervisor holds on it.

Owns: making and checking ``<runtime_dir>`` (the ipc sockets of every process, the control
sockets and ``supervisor.pid`` live there), the pid file and its lock, and ``read_pid``,
the one answer to "does a supervisor run here" (``status``, ``stop``, ``start``).

Invariants:
- the runtime dir is ours alone: made 0700; an existing one must be owned by this uid and
  writable by nobody else, else ``UnsafeRuntimeDir`` and nothing starts (whoever can write
  there can plant or replace sockets: a 0777 ``/tmp/iii-run`` made by another user is the
  case); one that others may only read or enter is tightened to 0700. The sockets inside
  are then private whatever their own modes.
- liveness is a lock, never ``kill(pid, 0)``: a running supervisor holds an exclusive
  ``flock`` on ``supervisor.pid`` for its whole life. The kernel lets go of it when the
  process exits, however it exits (``kill -9`` too), and a zombie holds no descriptors, so
  a stale file, a recycled pid or a planted ``1`` never block a start; ``read_pid`` names
  a pid only while the lock is held.
- the pid file is unlinked before the lock is let go; a starter that locked the inode
  just unlinked sees that the path now names another file (or none) and tries again, so
  two supervisors never both believe they hold the dir.
- the lock's descriptor is close-on-exec: children never hold it, a child outliving us
  (it should not: PDEATHSIG) cannot keep the dir locked.
"""
from __future__ import annotations

import fcntl
import os
import stat
import time

from brokers.kit.hygiene import private_dir, tighten

PIDFILE = "supervisor.pid"
_CONTENDED = 0.3
"""Seconds a starter retries a held lock before it refuses: ``read_pid`` of a ``status``
holds a shared lock for microseconds, which must not read as a running supervisor."""


class AlreadyRunning(Exception):
    """Another supervisor holds this runtime dir."""


class UnsafeRuntimeDir(Exception):
    """The runtime dir exists and is not ours alone."""


def prepare(path: str) -> None:
    """Make ``path`` (0700, and any missing parent) or check an existing one;
    ``UnsafeRuntimeDir`` if others could write there."""
    try:
        link = os.lstat(path)
    except FileNotFoundError:
        private_dir(path, "runtime dir")
        return
    try:
        st = os.stat(path)
    except OSError as exc:
        raise UnsafeRuntimeDir(f"runtime dir {path} cannot be used: {exc.strerror}") from None
    check(path, link, st, os.geteuid())
    tighten(path, "runtime dir")


def check(path: str, link: os.stat_result, st: os.stat_result, uid: int) -> None:
    """Refuse ``path`` unless it is a directory of ``uid`` that only ``uid`` may write
    (``link``: its lstat, so a symlink planted by someone else is refused too)."""
    fix = "remove it, or run with --runtime-dir / $III_RUNTIME_DIR elsewhere"
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeRuntimeDir(f"runtime dir {path} is not a directory; {fix}")
    for what, owner in (("runtime dir", st.st_uid), ("symlink", link.st_uid)):
        if owner != uid:
            raise UnsafeRuntimeDir(f"{what} {path} belongs to uid {owner}, not to us "
                                   f"(uid {uid}): refusing to use it; {fix}")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        raise UnsafeRuntimeDir(f"runtime dir {path} is writable by other users (mode "
                               f"{mode:04o}): refusing to use it; {fix}, or chmod 700 it")


def read_pid(runtime_dir: str) -> int | None:
    """The pid of the supervisor that holds ``runtime_dir``'s lock, else None."""
    try:
        fd = os.open(os.path.join(runtime_dir, PIDFILE), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:  # held: a supervisor runs
            pass
        else:
            return None  # nobody holds it (closing the fd lets our probe go)
        for _ in range(50):  # the lock is taken a moment before the pid is written
            raw = os.pread(fd, 32, 0).strip()
            if raw:
                try:
                    return int(raw)
                except ValueError:
                    return None
            time.sleep(0.002)
        return None
    finally:
        os.close(fd)


class PidLock:
    """``<runtime_dir>/supervisor.pid``, locked and naming us, from ``acquire`` to ``release``."""

    def __init__(self, runtime_dir: str) -> None:
        self.runtime_dir = runtime_dir
        self.path = os.path.join(runtime_dir, PIDFILE)
        self.fd: int | None = None

    def acquire(self) -> None:
        """Take the lock and write our pid; ``AlreadyRunning`` while another holds it."""
        deadline = time.monotonic() + _CONTENDED
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if time.monotonic() < deadline:
                    time.sleep(0.01)
                    continue
                other = read_pid(self.runtime_dir)
                raise AlreadyRunning(f"a supervisor (pid {other if other else '?'}) already "
                                     f"runs on {self.runtime_dir}") from None
            if not self._names(fd):  # locked a file its holder just unlinked: again
                os.close(fd)
                continue
            os.fchmod(fd, 0o600)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            self.fd = fd
            return

    def _names(self, fd: int) -> bool:
        """Whether the pid file's path still names the file open on ``fd``."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)

    def release(self) -> None:
        """Unlink the pid file, then let the lock go (in that order: see the module)."""
        if self.fd is None:
            return
        try:
            if self._names(self.fd):
                os.unlink(self.path)
        finally:
            os.close(self.fd)
            self.fd = None
