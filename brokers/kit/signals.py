"""The operator's signals, in every engine process (the supervisor and each ``run`` child).

    SIGUSR1   dump every thread's stack, and the asyncio tasks of the running loop, into
              this process's log: one record (one line in the json format), whatever the
              log level
    SIGUSR2   reopen the log file (logrotate's ``postrotate``: ``kill -USR2 $(cat PIDFILE)``):
              descriptors 1 and 2 are pointed at a fresh open of ``$III_LOG_FILE``; then
              the signal is passed on to each child process that handles it, so signalling
              the supervisor reopens the whole engine's log

``install(process)`` is called by ``kit.log.setup`` (every entry point configures logging
there, on its main thread). ``$III_LOG_FILE`` is set by ``supervisor.daemon`` when the
engine's output goes to a file (``start --daemon`` / ``--log-file``) and inherited by
every child; without it SIGUSR2 only passes the signal on.

Invariants: the handlers run on the main thread, between bytecodes (Python's signal
machinery; uvloop runs them from its loop too), so they may log and take locks; a child is
signalled only once its SigCgt mask shows it handles SIGUSR2 (the default action of an
unhandled SIGUSR2 is to die), and a child that installs its handlers after a rotation
reopens at ``install`` if ``$III_LOG_FILE`` no longer names the file it writes to; the log
file is opened ``O_APPEND`` (several processes write to it) with mode 0600.
"""
from __future__ import annotations

import io
import logging
import os
import signal
import stat
import sys
import threading
import traceback
from typing import Iterable

LOG_FILE_ENV = "III_LOG_FILE"

log = logging.getLogger(__name__)
_process = "?"


def install(process: str) -> None:
    """SIGUSR1 and SIGUSR2 handlers for this process (main thread only)."""
    global _process
    _process = process
    signal.signal(signal.SIGUSR1, _on_usr1)
    signal.signal(signal.SIGUSR2, _on_usr2)
    reopen_if_moved()


# ---- SIGUSR1 ---------------------------------------------------------------------------

def dump_stacks() -> str:
    """Every thread's stack, then every task of the running asyncio loop (if any)."""
    out = io.StringIO()
    names = {t.ident: t for t in threading.enumerate()}
    frames = sys._current_frames()
    out.write(f"{len(frames)} thread(s)\n")
    for ident, frame in frames.items():
        thread = names.get(ident)
        label = thread.name if thread is not None else "?"
        extra = " (main)" if thread is threading.main_thread() else ""
        extra += " daemon" if thread is not None and thread.daemon else ""
        out.write(f"\nThread {label} [{ident}]{extra}:\n")
        out.write("".join(traceback.format_stack(frame)))
    asyncio = sys.modules.get("asyncio")  # not imported (the supervisor): no loop runs
    try:
        loop = asyncio.get_running_loop() if asyncio is not None else None
    except RuntimeError:
        loop = None
    if loop is not None:
        tasks = asyncio.all_tasks(loop)
        out.write(f"\n{len(tasks)} asyncio task(s)\n")
        for task in sorted(tasks, key=lambda t: t.get_name()):
            out.write(f"\nTask {task.get_name()} {task.get_coro()!r}:\n")
            buf = io.StringIO()
            try:
                task.print_stack(file=buf)
            except Exception as exc:  # a task finishing while we look
                buf.write(f"  (stack unavailable: {exc!r})\n")
            out.write(buf.getvalue())
    return out.getvalue()


def _on_usr1(signum: int, frame: object) -> None:
    try:
        text = dump_stacks()
    except Exception as exc:  # never let a dump kill the process
        text = f"stack dump failed: {exc!r}"
    record = log.makeRecord(log.name, logging.WARNING, __file__, 0,
                            "SIGUSR1: stack dump of %s (pid %d)\n%s",
                            (_process, os.getpid(), text), None)
    logging.getLogger().handle(record)  # whatever the level: the operator asked for it


# ---- SIGUSR2 ---------------------------------------------------------------------------

def log_file() -> str | None:
    return os.environ.get(LOG_FILE_ENV) or None


def reopen_log(path: str | None = None) -> bool:
    """Point descriptors 1 and 2 at a fresh open of ``path`` (default ``$III_LOG_FILE``);
    False if there is none or it cannot be opened (then the old file stays)."""
    path = path or log_file()
    if not path:
        return False
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        log.error("cannot reopen log file %s: %s (still writing to the old one)", path,
                  exc.strerror)
        return False
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
    finally:
        os.close(fd)
    return True


def reopen_if_moved() -> bool:
    """Reopen if ``$III_LOG_FILE`` is set, descriptor 2 is a regular file and the path no
    longer names it (rotated before this process could handle SIGUSR2)."""
    path = log_file()
    if not path:
        return False
    try:
        mine = os.fstat(2)
    except OSError:
        return False
    if not stat.S_ISREG(mine.st_mode):
        return False
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return reopen_log(path)
    except OSError:
        return False
    if (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino):
        return False
    return reopen_log(path)


def children(parent: int | None = None) -> list[int]:
    """Pids whose parent is ``parent`` (default: us), from /proc."""
    parent = os.getpid() if parent is None else parent
    found: list[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                raw = fh.read()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parens, split after the last ')'
        rest = raw[raw.rfind(b")") + 2:].split()
        if len(rest) > 1 and int(rest[1]) == parent:
            found.append(int(entry))
    return found


def handles(pid: int, signum: int) -> bool:
    """Whether process ``pid`` catches ``signum`` (its SigCgt mask in /proc)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    except (OSError, ValueError):
        pass
    return False


def forward(signum: int, pids: Iterable[int] | None = None) -> list[int]:
    """Send ``signum`` to each of ``pids`` (default: our children) that handles it."""
    sent: list[int] = []
    for pid in children() if pids is None else pids:
        if handles(pid, signum):
            try:
                os.kill(pid, signum)
            except OSError:
                continue
            sent.append(pid)
    return sent


def _on_usr2(signum: int, frame: object) -> None:
    try:
        reopened = reopen_log()
        sent = forward(signal.SIGUSR2)
        if reopened:
            log.info("SIGUSR2: %s reopened log file %s%s", _process, log_file(),
                     f" (passed on to {len(sent)} child process(es))" if sent else "")
        elif sent:
            log.info("SIGUSR2: no log file of %s to reopen; passed on to %d child process(es)",
                     _process, len(sent))
    except Exception:  # never let a rotation kill the process
        log.exception("SIGUSR2 handling failed")
