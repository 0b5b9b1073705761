"""Children forked from the zygote (``brokers.supervisor.spawn``), seen from outside.

The real supervisor (``iii-supervisor start``) runs trivial units injected with
``III_TEST_UNITS`` (``III_TEST_UNITS_ONLY=1``: no real broker). Each child writes what it
found at its start to ``<runtime>/<name>.json`` (its pid, parent, process group, open
descriptors, signal dispositions, parent-death signal, threads, zmq/asyncio state, argv),
then sleeps; ``<runtime>/<name>.exit`` holding a number makes it exit with that code. The
``tnet`` unit serves a listening address of the plan through the inherited descriptor.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import orjson
import psutil
import pytest

from brokers.kit import listen
from brokers.kit.schema import Field, validate
from brokers.kit.units import RunContext, Unit
from brokers.supervisor import control

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")


def _dispositions() -> dict[str, str]:
    out = {}
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD, signal.SIGUSR1,
                signal.SIGUSR2, signal.SIGPIPE):
        h = signal.getsignal(sig)
        out[sig.name] = ("default_int_handler" if h is signal.default_int_handler else
                         "SIG_DFL" if h == signal.SIG_DFL else "SIG_IGN" if h == signal.SIG_IGN else "python")
    return out


def _report(ctx: RunContext, extra: dict | None = None) -> None:
    import threading
    zmq = sys.modules.get("zmq")
    libc = ctypes.CDLL(None, use_errno=True)
    pdeath = ctypes.c_int()
    libc.prctl(2, ctypes.byref(pdeath), 0, 0, 0)  # PR_GET_PDEATHSIG
    try:  # glibc's own record of our thread id (the thread CPU clock is made from it): the
        # child's, not the zygote's (an other process's thread id gives EINVAL)
        time.clock_gettime(time.pthread_getcpuclockid(threading.get_ident()))
        pthread_ok = True
    except OSError:
        pthread_ok = False
    head, size = ctypes.c_void_p(), ctypes.c_size_t()  # robust futex list registered again
    libc.syscall(274, 0, ctypes.byref(head), ctypes.byref(size))  # get_robust_list (x86-64)
    with open(f"/proc/self/status") as fh:
        sigblk = next(line.split()[1] for line in fh if line.startswith("SigBlk:"))
    info = {
        "pid": os.getpid(), "ppid": os.getppid(), "pgid": os.getpgid(0), "sid": os.getsid(0),
        "fds": sorted(int(f) for f in os.listdir("/proc/self/fd")),
        "listen_fds": os.environ.get(listen.ENV, ""),
        "supervisor_pid": os.environ.get("III_SUPERVISOR_PID"),
        "signals": _dispositions(), "sigblk": sigblk, "pdeathsig": pdeath.value,
        "pthread_ok": pthread_ok, "robust_list": bool(head.value),
        "threads": threading.active_count(), "tasks": len(os.listdir("/proc/self/task")),
        "zmq_context": bool(zmq is not None and zmq.Context._instance is not None),
        "argv": sys.argv[1:], "main": getattr(sys.modules.get("__main__"), "__spec__", None) and
        sys.modules["__main__"].__spec__.name, **(extra or {})}
    path = os.path.join(ctx.runtime_dir, f"{ctx.process}.json")
    with open(path + ".tmp", "wb") as fh:
        fh.write(orjson.dumps(info))
    os.rename(path + ".tmp", path)


def _sleep(ctx: RunContext, sock: socket.socket | None = None) -> None:
    flag = os.path.join(ctx.runtime_dir, f"{ctx.process}.exit")
    while True:
        if os.path.exists(flag):
            with open(flag) as fh:
                code = int(fh.read())
            os.unlink(flag)
            sys.exit(code)
        if sock is not None:
            try:
                conn, _ = sock.accept()
            except BlockingIOError:
                pass
            else:
                conn.sendall(f"hello from {os.getpid()}\n".encode())
                conn.close()
        time.sleep(0.02)


def info_main(ctx: RunContext) -> None:
    _report(ctx)
    _sleep(ctx)


def net_main(ctx: RunContext) -> None:
    host, port = "127.0.0.1", ctx.config["port"]
    sock = listen.listener(host, port)  # inherited from the supervisor, never bound here
    _report(ctx, {"listener_fd": sock.fileno()})
    _sleep(ctx, sock)


INFO = Unit("tinfo", ("t-info",), f"{__name__}:info_main", always=True, storage=True)
NET = Unit("tnet", ("t-net",), f"{__name__}:net_main", ingress=True,
           parse_config=lambda raw, path: validate(raw, {"port": Field(int, 0)}, path),
           listens=lambda cfg: [("127.0.0.1", cfg["port"])])

CONFIG = """
workers:
  - name: t-net
    config: {port: %d}
engine:
  runtime_dir: %s
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def engine(tmp_path, request):
    runtime = tempfile.mkdtemp(prefix="iii-", dir="/tmp")
    port = free_port()
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG % (port, runtime))
    env = dict(os.environ, III_TEST_UNITS=f"{__name__}:INFO,{__name__}:NET", III_TEST_UNITS_ONLY="1",
               PYTHONPATH=os.pathsep.join(filter(None, [HERE, ROOT, os.environ.get("PYTHONPATH")])))
    env.pop("III_SPAWN", None)
    env.update(getattr(request, "param", {}))
    sup = subprocess.Popen([sys.executable, "-m", "brokers.supervisor.cli", "start", str(path)],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           start_new_session=True)
    yield sup, runtime, port
    if sup.poll() is None:
        sup.kill()
        sup.wait()
    try:
        os.killpg(sup.pid, signal.SIGKILL)
    except OSError:
        pass
    shutil.rmtree(runtime, ignore_errors=True)


def wait_for(predicate, timeout: float, step: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (ConnectionError, FileNotFoundError, ValueError):
            value = None
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"not true within {timeout} s")


def procs(runtime: str) -> dict[str, dict]:
    return {p["name"]: p for p in control.call(runtime, "status", timeout=1.0)["processes"]}


def report(runtime: str, name: str, pid: int | None = None) -> dict:
    """The child's own report, once the child with ``pid`` (any, if None) wrote it."""
    def read():
        with open(os.path.join(runtime, f"{name}.json"), "rb") as fh:
            info = orjson.loads(fh.read())
        return info if pid is None or info["pid"] == pid else None
    return wait_for(read, timeout=15)


def running(runtime: str) -> dict[str, dict]:
    ps = procs(runtime)
    return ps if all(p["state"] == "RUNNING" for p in ps.values()) else {}


def zygotes(sup: subprocess.Popen) -> list[psutil.Process]:
    out = []
    for p in psutil.Process(sup.pid).children():
        try:
            if "brokers.supervisor.zygote" in p.cmdline():
                out.append(p)
        except psutil.Error:
            pass
    return out


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_children_are_forked_as_the_supervisors_own_and_start_clean(engine):
    sup, runtime, port = engine
    ps = wait_for(lambda: running(runtime), timeout=15)
    assert len(zygotes(sup)) == 1
    zygote = zygotes(sup)[0]
    for name in ("tinfo", "tnet"):
        info = report(runtime, name, ps[name]["pid"])
        # the supervisor's child (not the zygote's): it reaps it and PDEATHSIG watches it
        assert info["ppid"] == sup.pid and info["supervisor_pid"] == str(sup.pid)
        assert psutil.Process(info["pid"]).ppid() == sup.pid
        assert info["pdeathsig"] == signal.SIGTERM
        assert info["pgid"] == info["pid"] and info["sid"] == os.getsid(sup.pid)  # own group
        # a fresh start: one thread, no zmq context before its own, fresh-interpreter signals
        assert info["tasks"] == 1 and info["threads"] == 1 and not info["zmq_context"]
        assert info["signals"]["SIGINT"] == "default_int_handler"
        assert info["signals"]["SIGPIPE"] == "SIG_IGN"
        assert all(info["signals"][s] == "SIG_DFL" for s in ("SIGTERM", "SIGHUP", "SIGCHLD"))
        assert int(info["sigblk"], 16) == 0
        assert info["pthread_ok"]
        if os.uname().machine == "x86_64":
            assert info["robust_list"]
        # the command line of before, in argv and in /proc
        assert info["argv"] == ["run", name, "--plan-fd", info["argv"][3]]
        cmdline = [a for a in psutil.Process(info["pid"]).cmdline() if a]
        assert cmdline[1:] == ["-m", "brokers.supervisor.cli", "run", name, "--plan-fd", info["argv"][3]]
        # forked: it shares the zygote's pre-imported pages
        with open(f"/proc/{info['pid']}/smaps_rollup") as fh:
            shared = sum(int(line.split()[1]) for line in fh if line.startswith("Shared_Dirty:"))
        assert shared > 1024, f"{name}: only {shared} kB shared dirty"
    assert zygote.is_running()
    # only stdio, the plan's descriptor is closed once read, and the listener where planned
    assert report(runtime, "tinfo")["fds"][:3] == [0, 1, 2]
    net = report(runtime, "tnet")
    fd = net["listener_fd"]
    assert net["listen_fds"] == f"127.0.0.1:{port}={fd}"
    assert fd in net["fds"]


def test_listening_descriptor_is_inherited_and_served(engine):
    sup, runtime, port = engine
    ps = wait_for(lambda: running(runtime), timeout=15)
    pid = report(runtime, "tnet", ps["tnet"]["pid"])["pid"]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        assert conn.makefile().readline().strip() == f"hello from {pid}"
    # the supervisor bound it, the child never did: nobody else can take the port
    with pytest.raises(OSError):
        socket.create_server(("127.0.0.1", port))


def test_exit_status_is_seen_and_a_kill9_is_restarted_forked(engine):
    sup, runtime, port = engine
    ps = wait_for(lambda: running(runtime), timeout=15)
    first = report(runtime, "tinfo", ps["tinfo"]["pid"])["pid"]
    with open(os.path.join(runtime, "tinfo.exit"), "w") as fh:
        fh.write("5")  # (3 is EXIT_NO_RETRY: no restart)
    p = wait_for(lambda: (lambda p: p if p["pid"] not in (None, first) else None)(procs(runtime)["tinfo"]),
                 timeout=10)
    assert p["last_exit"] == 5 and p["restarts"] == 1
    second = report(runtime, "tinfo", p["pid"])
    assert second["ppid"] == sup.pid and not alive(first)

    os.kill(second["pid"], signal.SIGKILL)
    p = wait_for(lambda: (lambda p: p if p["pid"] not in (None, second["pid"]) else None)(
        procs(runtime)["tinfo"]), timeout=10)
    assert p["last_exit"] == -9 and p["restarts"] == 2
    third = report(runtime, "tinfo", p["pid"])
    assert third["ppid"] == sup.pid and third["argv"][:2] == ["run", "tinfo"]
    assert psutil.Process(third["pid"]).status() != psutil.STATUS_ZOMBIE

    zygote = zygotes(sup)[0].pid
    sup.send_signal(signal.SIGTERM)
    assert sup.wait(timeout=20) == 0
    assert not alive(third["pid"]) and not alive(zygote)


def test_children_and_zygote_die_with_a_killed_supervisor(engine):
    sup, runtime, port = engine
    ps = wait_for(lambda: running(runtime), timeout=15)
    pids = [report(runtime, n, ps[n]["pid"])["pid"] for n in ("tinfo", "tnet")]
    zygote = zygotes(sup)[0].pid
    sup.kill()  # SIGKILL: no drain; PR_SET_PDEATHSIG ends the children and the zygote
    sup.wait()
    wait_for(lambda: not any(alive(pid) for pid in [*pids, zygote]), timeout=10)


def test_a_dead_zygote_is_replaced_and_children_still_start(engine):
    sup, runtime, port = engine
    ps = wait_for(lambda: running(runtime), timeout=15)
    old = zygotes(sup)[0]
    old.kill()
    wait_for(lambda: not alive(old.pid), timeout=5)
    first = report(runtime, "tinfo", ps["tinfo"]["pid"])["pid"]
    os.kill(first, signal.SIGKILL)
    p = wait_for(lambda: (lambda p: p if p["pid"] not in (None, first) and p["state"] == "RUNNING" else None)(
        procs(runtime)["tinfo"]), timeout=15)
    info = report(runtime, "tinfo", p["pid"])
    assert info["ppid"] == sup.pid and info["pdeathsig"] == signal.SIGTERM
    # a new zygote (the old one is gone) forked it, or it is a fresh interpreter; either way
    # the engine runs on
    assert all(z.pid != old.pid for z in zygotes(sup))


@pytest.mark.parametrize("engine", [{"III_SPAWN": "exec"}], indirect=True)
def test_spawn_exec_starts_fresh_interpreters(engine):
    sup, runtime, port = engine
    ps = wait_for(lambda: running(runtime), timeout=20)
    assert zygotes(sup) == []
    info = report(runtime, "tinfo", ps["tinfo"]["pid"])
    assert info["ppid"] == sup.pid and info["pdeathsig"] == signal.SIGTERM
    assert info["main"] == "brokers.supervisor.cli"
