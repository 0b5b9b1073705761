"""How the supervisor starts its children: forked from a pre-imported "zygote" process,
each a direct child of the supervisor.

Why: a fresh interpreter per child imports the same base (asyncio, uvloop, zmq, msgpack,
orjson, websockets, lmdb, aiohttp, ``brokers.kit``, ...) again in every process, and none of
those pages are shared. A child forked from a process that imported them once shares them
copy-on-write, so the engine's proportional set size (PSS) counts them once.

Design (the simplest one that keeps the supervisor's view of its children unchanged):

- The zygote: ``Zygote.fork`` forks it from ``iii-supervisor start`` itself, first thing,
  before the config is read (``cli.cmd_start``): it then shares the pages of the
  supervisor's own imports too (the units' config modules among them; ``gc.freeze`` first,
  so that neither process's collector writes to them), and holds no secret of the config, no descriptor but stdio
  (stdin becomes /dev/null, anything else is closed), no thread, no zmq context. With
  ``--daemon`` (the process that detaches is not the supervisor) or when that fork was not
  possible, ``Zygote.start`` runs ``python -m brokers.supervisor.zygote FD`` from ``Runner``
  instead, a fresh interpreter. Either way (the zygote's side: ``brokers.supervisor.zygote``)
  it imports the common base (``PRELOAD``) and every broker unit's entry module, runs once what every child runs first (``warm_up``), fills pymalloc's partly used pools
  (``fill_pools``), freezes the garbage collector's view of all that (``gc.freeze``: a
  collection in a child would otherwise write to every page of it), says ``ready`` and
  waits on one end of a ``SOCK_SEQPACKET`` pair for spawn requests. It never creates a zmq
  context, an event loop or a thread (checked before every fork), so what it forks is a
  plain single-threaded interpreter; it dies with the supervisor (PR_SET_PDEATHSIG,
  SIGKILL) and exits when the supervisor closes its end.
- A request carries what ``subprocess.Popen`` gave a child before: its argv (``run NAME
  --plan-fd FD``), its environment, the working directory and, as SCM_RIGHTS descriptors,
  the supervisor's current stdout/stderr (a reopened log file is followed), the plan fd and
  the listening sockets named by ``III_LISTEN_FDS`` (rewritten to the numbers they get).
- The zygote forks each child as an orphan of the supervisor: it forks, the intermediate
  forks the child and exits at once, and the supervisor, a child subreaper
  (PR_SET_CHILD_SUBREAPER, set by ``Zygote.fork``/``start``), adopts the child. The zygote
  answers only after it reaped the intermediate, and the kernel reparents before that
  exit is reported, so the supervisor gets the pid of its own child: it reaps it with
  ``waitpid`` (``Forked``, a ``Popen``-like handle: pid, ``poll``, ``returncode``,
  ``send_signal``), and the child, once ``getppid()`` is the supervisor (it waits for that),
  sets PR_SET_PDEATHSIG in ``cli run`` as before, so it dies with the supervisor, not with
  the zygote: a zygote crash leaves every running child alone. Plain ``os.fork`` of a
  single-threaded interpreter both times, with CPython's own fork hooks.
- The child then becomes what ``python -m brokers.supervisor.cli run NAME --plan-fd FD`` was:
  own process group (the supervisor calls ``setpgid`` too, so a signal sent at once reaches
  the group), stdio and descriptors in place and nothing else open, signal handlers and mask
  as a fresh interpreter has them, the request's environment, ``sys.argv`` and
  ``/proc/PID/cmdline`` rewritten to that command line, then ``cli.main``; it leaves with
  ``os._exit`` after the interpreter's own exit steps (non-daemon threads, atexit, flush).
- Anything unexpected (no zygote, a zygote that died or cannot fork, not Linux,
  ``III_SPAWN=exec``) falls back to the fresh interpreter of before, per spawn; a
  zygote that died is replaced at the next spawn (``runner.ZYGOTE_RESTARTS`` times).
"""
from __future__ import annotations

import ctypes
import gc
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from typing import Mapping

from brokers.supervisor import zygote
from brokers.supervisor.zygote import ARGV_ROOM, READY

SPAWN_ENV = "III_SPAWN"
"""``exec`` = start every child as a fresh interpreter (the zygote is not used)."""
START_TIMEOUT = 20.0
REPLY_TIMEOUT = 10.0

PR_SET_CHILD_SUBREAPER = 36


class ZygoteError(OSError):
    """The zygote could not start a child (the caller falls back to a fresh interpreter)."""


class Forked:
    """The supervisor's handle on a child the zygote forked for it (it is our child):
    the part of ``subprocess.Popen`` the runner uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: its status is lost
                self.returncode = 255
            else:
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0)
            time.sleep(0.01)
        return self.returncode  # type: ignore[return-value]

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def supported() -> bool:
    return sys.platform.startswith("linux")


def become_subreaper() -> None:
    """This process adopts its descendants' orphans: the zygote's children become ours."""
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise ZygoteError(f"PR_SET_CHILD_SUBREAPER failed: {os.strerror(ctypes.get_errno())}")


class Zygote:
    """The supervisor's side: start the zygote, ask it for children, stop it."""

    def __init__(self, proc: "subprocess.Popen[bytes] | Forked", sock: socket.socket) -> None:
        self.proc = proc
        self.sock = sock
        self.ready = False

    @classmethod
    def fork(cls) -> "Zygote":
        """Fork the zygote from this process — the supervisor's ``start``, before it reads
        its config (so no secret, descriptor, thread or zmq context of the engine is in what
        it copies): the pages of the supervisor's own imports are then shared too. It is
        ready once ``wait_ready`` (or the first ``spawn``) has seen it say so."""
        if not supported():
            raise ZygoteError("forking children needs Linux")
        try:
            zygote.check_forkable()
        except OSError as exc:
            raise ZygoteError(str(exc)) from None
        become_subreaper()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        parent = os.getpid()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        # our imports' objects leave the collector's view in both processes: a collection
        # here or in the zygote would write to every page holding them and unshare it
        gc.freeze()
        pid = os.fork()
        if pid == 0:  # the zygote
            code = 1
            try:
                ours.close()
                code = zygote.serve_forked(theirs, parent)
            except BaseException:  # noqa: BLE001
                import traceback
                traceback.print_exc()
            finally:
                os._exit(code)
        theirs.close()
        return cls(Forked(pid), ours)

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        if self.ready:
            return
        self.sock.settimeout(timeout)
        try:
            got = self.sock.recv(64)
        except (OSError, socket.timeout) as exc:
            raise ZygoteError(f"the zygote did not get ready: {exc}") from None
        if got != READY:
            raise ZygoteError("the zygote exited before it was ready")
        self.ready = True

    @classmethod
    def start(cls, env: Mapping[str, str], timeout: float = START_TIMEOUT) -> "Zygote":
        """A ready zygote, or ``ZygoteError``. ``env``: the environment children get
        (without their own variables), so what the base reads at import is theirs."""
        if not supported():
            raise ZygoteError("forking children needs Linux")
        become_subreaper()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            proc = subprocess.Popen([sys.executable, "-m", "brokers.supervisor.zygote",
                                     str(theirs.fileno()), ARGV_ROOM], env=dict(env), process_group=0,
                                    stdin=subprocess.DEVNULL, pass_fds=[theirs.fileno()])
        except OSError as exc:
            ours.close()
            raise ZygoteError(f"cannot start the zygote: {exc}") from None
        finally:
            theirs.close()
        zyg = cls(proc, ours)
        try:
            zyg.wait_ready(timeout)
        except ZygoteError:
            zyg.close()
            raise
        return zyg

    def alive(self) -> bool:
        return self.proc.poll() is None

    def spawn(self, args: list[str], env: Mapping[str, str], fds: Mapping[str, int],
              listen: Mapping[str, int]) -> Forked:
        """Fork ``cli.main(args)`` with ``env``; ``fds``: named descriptors the child gets
        (``plan``), ``listen``: ``III_LISTEN_FDS`` keys and their descriptors. The child's
        stdout/stderr are ours as they are now."""
        if not self.alive():
            raise ZygoteError(f"the zygote exited ({self.proc.returncode})")
        self.wait_ready()
        names = ["stdout", "stderr", *fds, *(f"listen:{k}" for k in listen)]
        send = [1, 2, *fds.values(), *listen.values()]
        req = pickle.dumps({"args": list(args), "env": dict(env), "cwd": os.getcwd(),
                            "fds": names})
        try:
            self.sock.settimeout(REPLY_TIMEOUT)
            socket.send_fds(self.sock, [req], send)
            reply = self.sock.recv(4096)
        except (OSError, socket.timeout) as exc:
            raise ZygoteError(f"the zygote did not answer: {exc}") from None
        if not reply:
            raise ZygoteError("the zygote exited")
        answer = pickle.loads(reply)
        if "error" in answer:
            raise ZygoteError(answer["error"])
        pid = answer["pid"]
        try:  # the child does it too; whoever is first, a killpg at once reaches it
            os.setpgid(pid, pid)
        except OSError:
            pass
        return Forked(pid)

    def close(self) -> None:
        """Stop it (it exits when our end closes; one still importing is killed) and reap
        it; again: nothing."""
        try:
            self.sock.close()
        except OSError:
            pass
        if not self.ready:
            self.proc.kill()
        try:
            self.proc.wait(2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
