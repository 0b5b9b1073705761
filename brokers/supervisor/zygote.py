"""The zygote's side of ``brokers.supervisor.spawn``: a pre-imported interpreter that forks
each engine process on the supervisor's request (the design is in spawn.py's docstring).
It never creates a zmq context, an event loop or a thread (checked before every fork)."""
from __future__ import annotations

import ctypes
import gc
import os
import pickle
import signal
import socket
import sys
import time
from typing import Any

READY = b"ready"
ARGV_ROOM = "#" + " " * 159
"""The zygote's last argument: room for a child's command line (``_set_cmdline``)."""
PRELOAD = (
    "brokers.supervisor.cli",  # the kit, the config schema, every unit's config module
    "asyncio", "uvloop", "zmq", "zmq.asyncio", "msgpack", "orjson",
    "concurrent.futures", "queue",
    "websockets.asyncio.server", "websockets.asyncio.client", "websockets.server",
    "lmdb", "lmdb._envid", "email.parser", "http.client", "aiohttp",
    "brokers.kit.broker", "brokers.kit.bus", "brokers.kit.commit", "brokers.kit.frames",
    "brokers.kit.inputs", "brokers.kit.lmdbenv", "brokers.kit.localbus", "brokers.kit.sink",
    "brokers.kit.telemetry", "brokers.kit.sampling", "brokers.kit.channels.hub",
    "brokers.kit.channels.link", "brokers.kit.channels.ends",
)
"""What every (or more than one) engine process imports: imported once, in the zygote;
``preload`` then imports every broker unit's entry module (``Unit.main``) too, even those
only one process runs: measured, each module a forked child imports costs that child
0.2-1 MB of private pages beyond the module's own objects (the import writes to pages
all over the shared heap and the interpreter's data), more than the module's share here."""

PR_SET_PDEATHSIG = 1
REPARENT_TIMEOUT = 5.0


def check_forkable() -> None:
    if len(os.listdir("/proc/self/task")) != 1:
        raise OSError("the zygote has more than one thread; it must not fork")
    zmq = sys.modules.get("zmq")
    if zmq is not None and getattr(zmq.Context, "_instance", None) is not None:
        raise OSError("the zygote has a zmq context; it must not fork")
    import asyncio.events
    if asyncio.events._get_running_loop() is not None:
        raise OSError("the zygote runs an event loop; it must not fork")


def fork_orphan() -> int:
    """Fork a child that the supervisor (the subreaper above us) adopts: 0 in the child,
    its pid here, once it is the supervisor's (its intermediate parent is reaped)."""
    check_forkable()
    r, w = os.pipe()
    mid = os.fork()
    if mid == 0:  # the intermediate: fork the child, say its pid, go
        os.close(r)
        try:
            pid = os.fork()
        except OSError:
            os._exit(1)
        if pid == 0:
            os.close(w)
            return 0
        os.write(w, str(pid).encode())
        os._exit(0)
    os.close(w)
    try:
        with os.fdopen(r, "rb") as fh:
            data = fh.read()
    finally:
        os.waitpid(mid, 0)  # the child is reparented before this exit is reported
    if not data:
        raise OSError("the intermediate process could not fork")
    return int(data)


def _set_cmdline(args: list[str], module: str = "brokers.supervisor.cli") -> None:
    """Show ``python -m brokers.supervisor.cli ARGS`` in /proc/PID/cmdline (ps, psutil),
    written over our own argument area: the fresh zygote's command line leaves room for it
    (``ARGV_ROOM``); in one forked from ``start`` the area is the supervisor's command line,
    so the interpreter's path is shortened to its name if it does not fit (the kernel shows
    nothing past the area as separate arguments)."""
    try:
        with open("/proc/self/stat", "rb") as fh:
            fields = fh.read().rpartition(b")")[2].split()
        start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end (fields 48, 49)
    except (OSError, ValueError, IndexError):
        return
    size = end - start
    if size <= 0:
        return
    for exe in (sys.executable, os.path.basename(sys.executable) or "python"):
        data = b"\0".join(a.encode() for a in [exe, "-m", module, *args]) + b"\0"
        if len(data) <= size:
            break
    data = data[:size - 1] + b"\0" if len(data) > size else data.ljust(size, b"\0")
    ctypes.memmove(start, data, size)


def _reset_signals() -> None:
    """Signal dispositions and mask as a fresh interpreter starts with."""
    signal.set_wakeup_fd(-1)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    for sig in signal.valid_signals():
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        want = (signal.default_int_handler if sig == signal.SIGINT
                else signal.SIG_IGN if sig in (signal.SIGPIPE, signal.SIGXFSZ) else signal.SIG_DFL)
        try:
            if signal.getsignal(sig) is not want:
                signal.signal(sig, want)
        except (OSError, ValueError, TypeError):
            pass


def _become_child(sock: socket.socket, req: dict, fds: list[int]) -> None:
    """In the forked child: turn into ``cli run`` as the supervisor asked, run it, exit."""
    code = 1
    try:
        sock.close()
        _wait_adopted(int(req["env"].get("III_SUPERVISOR_PID") or 0))
        os.setpgid(0, 0)
        named = dict(zip(req["fds"], fds))
        for std, name in ((1, "stdout"), (2, "stderr")):
            os.dup2(named[name], std)
            os.close(named.pop(name))
        keep = {0, 1, 2, *named.values()}
        for fd in named.values():
            os.set_inheritable(fd, True)  # as Popen's pass_fds left them
        for entry in os.listdir("/proc/self/fd"):
            fd = int(entry)
            if fd not in keep:
                try:
                    os.close(fd)
                except OSError:
                    pass  # the directory's own descriptor
        _reset_signals()
        env = dict(req["env"])
        listens = [f"{n[len('listen:'):]}={fd}" for n, fd in named.items() if n.startswith("listen:")]
        env["III_LISTEN_FDS"] = ",".join(listens)
        os.environ.clear()
        os.environ.update(env)
        if req["cwd"] != os.getcwd():
            os.chdir(req["cwd"])
        args = [a.replace("{plan}", str(named.get("plan", -1))) for a in req["args"]]
        from brokers.supervisor import cli
        sys.argv = [cli.__file__, *args]
        _set_cmdline(args)
        # the base stays frozen (gc.freeze in the zygote): a collection that walked it would
        # write to every page holding it and so unshare them all
        try:
            code = cli.main(args)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if not isinstance(exc.code, (int, type(None))):
                print(exc.code, file=sys.stderr)
        except KeyboardInterrupt:
            _finish()
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        except BaseException:
            import traceback
            traceback.print_exc()
            code = 1
        _finish()
    finally:
        os._exit(code if isinstance(code, int) else 1)


def _wait_adopted(supervisor: int) -> None:
    """Until our parent is the supervisor (the intermediate exits right after our fork)."""
    deadline = time.monotonic() + REPARENT_TIMEOUT
    while supervisor and os.getppid() != supervisor:
        if time.monotonic() > deadline:
            os._exit(1)
        time.sleep(0.0005)


def _finish() -> None:
    """What the interpreter does on its way out: wait for non-daemon threads, run atexit
    functions, flush stdio."""
    import atexit
    import threading
    try:
        threading._shutdown()  # type: ignore[attr-defined]
    except Exception:
        pass
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


def _die_with_parent(parent: int | None = None) -> None:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    expected = parent or int(os.environ.get("III_SUPERVISOR_PID") or 0)
    if expected and os.getppid() != expected:
        os._exit(1)


def preload() -> None:
    import importlib
    from brokers.supervisor import units
    entries = [u.main.partition(":")[0] for u in units.discover().values()]
    for name in [*PRELOAD, *entries]:  # not III_TEST_UNITS': only the brokers' are ours
        try:
            importlib.import_module(name)
        except ImportError:
            pass  # an optional dependency: the child that needs it reports it
    warm_up()


def warm_up() -> None:
    """Run once here what every child runs first (unit discovery, the command line, the
    log set-up and formatters): the caches those fill and the interpreter's first-run
    writes to their code are then shared pages, not each child's own copy."""
    import logging
    from brokers.kit import log as logsetup
    from brokers.supervisor import cli, units
    units.available()
    cli.shared_parser()
    logsetup.setup("warning", "text", "zygote", signals=False)  # the child's setup replaces it
    record = logging.LogRecord("brokers", logging.INFO, __file__, 0, "warm %s", ("up",), None)
    for formatter in (logsetup.TextFormatter("zygote"), logsetup.JsonFormatter("zygote")):
        formatter.format(record)


_FILLERS: list = []


def fill_pools() -> int:
    """Use up the free blocks of pymalloc's partly used pools: a child's first small
    objects would otherwise land there, among the base's, and unshare every such 16 KiB
    pool; with them full, a child allocates from pools of its own. Returns blocks filled."""
    import tempfile
    with tempfile.TemporaryFile() as tmp:
        saved = os.dup(2)
        try:
            sys.stderr.flush()
            os.dup2(tmp.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read().decode(errors="replace")
    filled = 0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 5 or not all(p.isdigit() for p in parts):
            continue
        size, avail = int(parts[1]), int(parts[4])
        if size <= 16:
            make: Any = object
        elif size <= 32:
            make = lambda i=0.5: i * 1.5  # a float: 24 bytes
        else:
            n = size - sys.getsizeof(b"")
            make = lambda n=n: bytes(n) if n else object()
        _FILLERS.append([make() for _ in range(avail)])
        filled += avail
    return filled


def serve_forked(sock: socket.socket, parent: int) -> int:
    """The zygote forked from the supervisor (``Zygote.fork``): made as clean as a fresh
    one (own process group, stdin from /dev/null, no other descriptor, default signal
    handlers), then ``serve``."""
    os.setpgid(0, 0)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    for entry in os.listdir("/proc/self/fd"):
        fd = int(entry)
        if fd > 2 and fd != sock.fileno():
            try:
                os.close(fd)
            except OSError:
                pass
    _reset_signals()
    _set_cmdline([], "brokers.supervisor.zygote")  # ps shows the zygote as a zygote
    return serve(sock, parent)


def serve(sock: socket.socket, parent: int | None = None) -> int:
    """The zygote: preload, then fork one child per request until the supervisor goes."""
    _die_with_parent(parent)
    preload()
    gc.collect()
    fill_pools()
    gc.freeze()  # the base's objects stay out of the collector's way: their pages stay shared
    try:
        sock.sendall(READY)
    except OSError:  # the supervisor is gone already (e.g. its config did not validate)
        return 0
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(sock, 1 << 20, 64)
        except InterruptedError:
            continue
        except OSError:
            return 0
        if not msg:
            return 0
        try:
            req = pickle.loads(msg)
            pid = fork_orphan()
            if pid == 0:
                _become_child(sock, req, fds)  # never returns
            answer: dict = {"pid": pid}
        except Exception as exc:  # noqa: BLE001 - the supervisor falls back, and says why
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            for f in fds:
                try:
                    os.close(f)
                except OSError:
                    pass
        sock.sendall(pickle.dumps(answer))


if __name__ == "__main__":
    sys.exit(serve(socket.socket(fileno=int(sys.argv[1]))))
