"""``iii-supervisor start --daemon`` / ``--log-file``: the engine detached, its output in a file.

    start(serve, runtime_dir, detach=True, log_file=None, pid_file=None)

``serve`` is the foreground ``start`` (``Runner(plan).run()`` and its error handling): it
returns the engine's exit code. With ``detach``, the calling process forks, the child
calls ``setsid`` and forks again (the grandchild is the daemon: no controlling terminal,
not a session leader, so it can never acquire one), the middle process exits at once, and
the daemon runs ``serve``. The foreground process waits on a pipe and exits only once the
engine is ready (every planned process RUNNING, as ``status`` reports it: exit 0, after
printing the daemon's pid and log file) or failed (``serve`` returned before that: its exit
code, with the lines the daemon logged meanwhile copied to stderr), or the wait timed out
(exit 1; the daemon keeps starting). Without ``detach`` only the output is redirected and
``serve`` runs here.

Files:
- the log file (``--log-file``, default ``<runtime_dir>/iii.log``): opened in the
  foreground before any fork (a bad path is an error on the terminal, exit 1), mode 0600,
  ``O_APPEND``; the daemon's stdin is /dev/null, its stdout and stderr the log file, which
  every child inherits; ``$III_LOG_FILE`` names it, for SIGUSR2 (``kit.signals``);
- the pid file: the runtime dir's ``supervisor.pid`` (``rundir.PidLock``, written by
  ``serve``, locked while the daemon lives: ``stop`` and ``status`` find it there); with
  ``--pid-file`` also that file, written once the engine is ready (so a second start that
  is refused never overwrites the first's), removed at exit if it still names the daemon.

Invariants: the foreground never returns 0 unless the engine was ready; nothing forks
while a thread runs (``serve`` starts none before we fork); the daemon keeps the working
directory (children run ``python -m brokers.supervisor.cli`` and relative paths of the
config are resolved already).
"""
from __future__ import annotations

import errno
import logging
import os
import sys
import threading
import time
from typing import Callable

from brokers.kit import signals
from brokers.supervisor import control, rundir

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_ERROR = 1
READY_TIMEOUT = 60.0
"""Seconds the foreground waits for the engine to be ready before it gives up (exit 1)."""
_POLL = 0.1
LOG_NAME = "iii.log"


def default_log_file(runtime_dir: str) -> str:
    return os.path.join(runtime_dir, LOG_NAME)


def open_log(path: str) -> int:
    """The log file, opened for appending (made 0600); raises OSError."""
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise OSError(errno.ENOENT, f"directory {parent} does not exist", path)
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)


def redirect(log_fd: int, path: str) -> None:
    """stdin from /dev/null, stdout and stderr to ``log_fd``; ``$III_LOG_FILE`` = ``path``."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.environ[signals.LOG_FILE_ENV] = os.path.abspath(path)


def engine_ready(runtime_dir: str) -> bool:
    """Every process of the supervisor on ``runtime_dir`` RUNNING (its own ``status``)."""
    try:
        result = control.call(runtime_dir, "status", timeout=1.0)
    except (ConnectionError, RuntimeError):
        return False
    procs = result.get("processes") or []
    return bool(procs) and not result.get("stopping") and all(
        p.get("state") == "RUNNING" for p in procs)


def write_pid_file(path: str, pid: int) -> None:
    tmp = f"{path}.{pid}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, f"{pid}\n".encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def remove_pid_file(path: str, pid: int) -> None:
    try:
        with open(path) as fh:
            if fh.read().strip() != str(pid):
                return  # another daemon's now
        os.unlink(path)
    except (OSError, ValueError):
        pass


def start(serve: Callable[[], int], runtime_dir: str, *, detach: bool = True,
          log_file: str | None = None, pid_file: str | None = None,
          ready_timeout: float = READY_TIMEOUT,
          ready: Callable[[str], bool] = engine_ready) -> int:
    """Run ``serve`` detached (or in the foreground with its output in ``log_file``);
    returns the exit code of this process (see the module)."""
    if detach:
        if rundir.read_pid(runtime_dir):  # the clear error, here, before anything detaches
            print(f"iii-supervisor: a supervisor (pid {rundir.read_pid(runtime_dir)}) already "
                  f"runs on {runtime_dir}", file=sys.stderr)
            return EXIT_ERROR
        try:
            rundir.prepare(runtime_dir)  # the default log file lives there
        except rundir.UnsafeRuntimeDir as exc:
            print(f"iii-supervisor: {exc}", file=sys.stderr)
            return EXIT_ERROR
    path = os.path.abspath(log_file or default_log_file(runtime_dir))
    try:
        log_fd = open_log(path)
    except OSError as exc:
        print(f"iii-supervisor: cannot open log file {path}: {exc.strerror}", file=sys.stderr)
        return EXIT_ERROR
    pid_file = os.path.abspath(pid_file) if pid_file else None
    if not detach:
        redirect(log_fd, path)
        os.close(log_fd)
        return serve()
    offset = os.lseek(log_fd, 0, os.SEEK_END)
    read_end, write_end = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    first = os.fork()
    if first:  # the foreground
        os.close(write_end)
        os.close(log_fd)
        try:
            os.waitpid(first, 0)  # the middle process exits at once
        except ChildProcessError:
            pass
        return _wait(read_end, path, offset, ready_timeout)
    # the middle process: a new session, then fork the daemon and leave
    try:
        os.close(read_end)
        os.setsid()
        if os.fork():
            os._exit(0)
    except BaseException:
        os._exit(EXIT_ERROR)
    return _daemon(serve, runtime_dir, log_fd, path, pid_file, write_end, ready)


def _wait(read_end: int, log_path: str, offset: int, timeout: float) -> int:
    """The foreground: the daemon's word on the pipe, or its end, or the timeout."""
    import select
    deadline = time.monotonic() + timeout
    buf = b""
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                print(f"iii-supervisor: engine not ready after {timeout:g} s; it keeps "
                      f"starting in the background (see {log_path})", file=sys.stderr)
                return EXIT_ERROR
            rlist, _, _ = select.select([read_end], [], [], left)
            if not rlist:
                continue
            chunk = os.read(read_end, 64)
            if chunk:
                buf += chunk
                if b"\n" not in buf:
                    continue
            word = buf.split(b"\n", 1)[0].decode(errors="replace")
            kind, _, rest = word.partition(" ")
            if kind == "ready":
                print(f"iii-supervisor: engine started (pid {rest}); log file {log_path}")
                return EXIT_OK
            code = int(rest) if kind == "failed" and rest.lstrip("-").isdigit() else EXIT_ERROR
            _copy_log(log_path, offset)
            print(f"iii-supervisor: engine did not start (exit {code}); log file {log_path}",
                  file=sys.stderr)
            return code or EXIT_ERROR
    finally:
        os.close(read_end)


def _copy_log(path: str, offset: int, limit: int = 20000) -> None:
    """What the daemon logged since we forked, to our stderr (why it failed)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except OSError:
        return
    if data:
        sys.stderr.write(data[-limit:].decode("utf-8", "replace"))
        sys.stderr.flush()


def _daemon(serve: Callable[[], int], runtime_dir: str, log_fd: int, path: str,
            pid_file: str | None, write_end: int, ready: Callable[[str], bool]) -> int:
    """The daemon: output to the log, a watcher for readiness, then the engine."""
    redirect(log_fd, path)
    os.close(log_fd)
    pid = os.getpid()
    told = threading.Event()
    lock = threading.Lock()
    done = threading.Event()

    def tell(word: str) -> None:
        with lock:
            if told.is_set():
                return
            told.set()
            try:
                os.write(write_end, (word + "\n").encode())
            except OSError:
                pass
            os.close(write_end)

    def watch() -> None:
        while not done.wait(_POLL):
            if ready(runtime_dir):
                if pid_file:
                    try:
                        write_pid_file(pid_file, pid)
                    except OSError as exc:
                        log.error("cannot write pid file %s: %s", pid_file, exc.strerror)
                log.info("engine ready: supervisor pid %d detached, log file %s%s", pid, path,
                         f", pid file {pid_file}" if pid_file else "")
                tell(f"ready {pid}")
                return

    watcher = threading.Thread(target=watch, name="daemon-ready", daemon=True)
    watcher.start()
    code = EXIT_ERROR
    try:
        code = serve()
    finally:
        done.set()
        watcher.join(2.0)
        tell(f"failed {code if code else EXIT_ERROR}")
        if pid_file:
            remove_pid_file(pid_file, pid)
    return code
