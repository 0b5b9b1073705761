"""The real supervisor (``iii-supervisor start``) over trivial child processes.

The children are the units defined below, injected through ``III_TEST_UNITS`` (honoured for
tests only) with ``III_TEST_UNITS_ONLY=1`` so the real brokers are not started. Each child
sleeps and, on SIGTERM, appends ``<name>`` to ``stops.log`` in the runtime dir, so the test
can check the shutdown order.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import orjson
import pytest
import zmq

from brokers.kit.schema import Field, validate
from brokers.kit.units import RunContext, Unit
from brokers.supervisor import control
from brokers.supervisor.states import EXIT_NO_RETRY

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))  # for whichever import mode pytest used


def sleeper_main(ctx: RunContext) -> None:
    """A child that does nothing until told to stop."""
    def on_term(signum: int, frame: object) -> None:
        with open(os.path.join(ctx.runtime_dir, "stops.log"), "a") as fh:
            fh.write(ctx.process + "\n")
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_term)
    with open(os.path.join(ctx.runtime_dir, f"{ctx.process}.peers"), "w") as fh:
        fh.write(",".join(ctx.peers))
    while True:
        time.sleep(1)


STORE = Unit("tstore", ("t-store",), f"{__name__}:sleeper_main", always=True, storage=True)
SVC = Unit("tsvc", ("t-svc",), f"{__name__}:sleeper_main", always=True)
EDGE = Unit("tedge", ("t-edge",), f"{__name__}:sleeper_main", ingress=True,
            parse_config=lambda raw, path: validate(raw, {"processes": Field(int, 1)}, path),
            instances=lambda cfg: cfg["processes"])

CONFIG = """
workers:
  - name: t-edge
    config: {processes: ${EDGES:2}}
engine:
  runtime_dir: %s
"""


@pytest.fixture
def toy_engine(tmp_path):
    runtime = tempfile.mkdtemp(prefix="iii-", dir="/tmp")  # short: ipc paths
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG % runtime)
    env = dict(os.environ, III_TEST_UNITS=",".join(f"{__name__}:{u}" for u in ("STORE", "SVC", "EDGE")),
               III_TEST_UNITS_ONLY="1",
               PYTHONPATH=os.pathsep.join(filter(None, [HERE, ROOT, os.environ.get("PYTHONPATH")])))
    sup = subprocess.Popen([sys.executable, "-m", "brokers.supervisor.cli", "start", str(path)], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    yield sup, runtime, str(path), env
    if sup.poll() is None:
        sup.kill()
        sup.wait()
    shutil.rmtree(runtime, ignore_errors=True)


def wait_for(predicate, timeout: float, step: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except ConnectionError:
            value = None
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"not true within {timeout} s")


def procs(runtime: str) -> dict[str, dict]:
    return {p["name"]: p for p in control.call(runtime, "status", timeout=1.0)["processes"]}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); ask /proc for its state
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().split(")")[-1].split()[0] != "Z"


def all_running(runtime: str) -> dict[str, dict]:
    ps = procs(runtime)
    return ps if all(p["state"] == "RUNNING" for p in ps.values()) else {}


def test_start_status_kill9_restart_and_sigterm_stops_in_order(toy_engine):
    sup, runtime, path, env = toy_engine
    ps = wait_for(lambda: all_running(runtime), timeout=10)
    assert list(ps) == ["tstore", "tsvc", "tedge-0", "tedge-1"]  # storage first, ingress last
    assert all(p["pid"] and alive(p["pid"]) for p in ps.values())
    assert int(open(os.path.join(runtime, "supervisor.pid")).read()) == sup.pid
    # RUNNING means up for startsecs, not done starting: on a loaded machine the child
    # may still be importing its unit's module
    wait_for(lambda: os.path.exists(os.path.join(runtime, "tsvc.peers")), timeout=10)
    with open(os.path.join(runtime, "tsvc.peers")) as fh:
        assert fh.read() == "tstore,tsvc,tedge-0,tedge-1"

    out = subprocess.run([sys.executable, "-m", "brokers.supervisor.cli", "status", "--config", path],
                         env=env, capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line.split() for line in out.stdout.splitlines()[2:]}
    assert rows["tsvc"][1:3] == ["RUNNING", str(ps["tsvc"]["pid"])] and rows["tsvc"][4] == "0"

    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.linger = 0
    sub.connect(control.pub_endpoint(runtime))
    sub.subscribe(b"proc.tsvc.")
    time.sleep(0.2)  # let the subscription reach the PUB socket

    old = ps["tsvc"]["pid"]
    killed_at = time.monotonic()
    os.kill(old, signal.SIGKILL)
    svc = wait_for(lambda: (lambda p: p if p["pid"] not in (None, old) else None)(procs(runtime)["tsvc"]),
                   timeout=2, step=0.01)
    took = time.monotonic() - killed_at
    assert took < 1.0, f"restart took {took:.3f} s"
    assert svc["restarts"] == 1 and svc["last_exit"] == -9 and svc["state"] in ("STARTING", "RUNNING")
    topics = []
    while sub.poll(1000) and len(topics) < 3:
        topic, data = sub.recv_multipart()
        topics.append((topic.decode(), orjson.loads(data)))
    sub.close()
    assert [t for t, _ in topics] == ["proc.tsvc.exit", "proc.tsvc.backoff", "proc.tsvc.spawn"]
    assert topics[0][1]["code"] == -9 and topics[2][1]["pid"] == svc["pid"]

    pids = [p["pid"] for p in procs(runtime).values()]
    sup.send_signal(signal.SIGTERM)
    assert sup.wait(timeout=15) == 0, sup.stdout.read().decode()
    assert not any(alive(pid) for pid in pids)
    with open(os.path.join(runtime, "stops.log")) as fh:
        order = fh.read().split()
    assert sorted(order[:2]) == ["tedge-0", "tedge-1"] and order[2:] == ["tsvc", "tstore"]
    assert not os.path.exists(os.path.join(runtime, "supervisor.pid"))


def test_stop_command_and_children_die_with_a_killed_supervisor(toy_engine):
    sup, runtime, path, env = toy_engine
    ps = wait_for(lambda: all_running(runtime), timeout=10)
    out = subprocess.run([sys.executable, "-m", "brokers.supervisor.cli", "start", path], env=env,
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 1 and "already runs" in out.stderr  # one supervisor per runtime dir

    control.call(runtime, "restart", {"name": "tstore"})
    wait_for(lambda: procs(runtime)["tstore"]["pid"] not in (None, ps["tstore"]["pid"]), timeout=5)

    sup.kill()  # SIGKILL: no drain; the kernel's parent-death signal must end the children
    sup.wait()
    pids = [p["pid"] for p in ps.values() if p["name"] != "tstore"]
    wait_for(lambda: not any(alive(pid) for pid in pids), timeout=5)


def test_cli_stop(toy_engine):
    sup, runtime, path, env = toy_engine
    wait_for(lambda: procs(runtime), timeout=10)
    out = subprocess.run([sys.executable, "-m", "brokers.supervisor.cli", "stop", "--runtime-dir", runtime],
                         env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert sup.wait(timeout=5) == 0
    out = subprocess.run([sys.executable, "-m", "brokers.supervisor.cli", "status", "--runtime-dir", runtime],
                         env=env, capture_output=True, text=True, timeout=20)
    assert out.returncode == 1 and "not running" in out.stderr


def picky_main(ctx: RunContext) -> None:
    """Serves like a sleeper, but cannot start while ``<runtime_dir>/broken`` exists: it
    then exits with EXIT_NO_RETRY, as a process whose port is taken does."""
    if os.path.exists(os.path.join(ctx.runtime_dir, "broken")):
        print(f"{ctx.process}: cannot start (broken)", file=sys.stderr, flush=True)
        sys.exit(EXIT_NO_RETRY)
    sleeper_main(ctx)


PICKY = Unit("tpicky", ("t-picky",), f"{__name__}:picky_main")


@pytest.fixture
def picky_engine(tmp_path):
    """``start(broken=...)``: a supervisor running the store and a ``tpicky`` process."""
    runtime = tempfile.mkdtemp(prefix="iii-", dir="/tmp")
    path = tmp_path / "config.yaml"
    path.write_text(f"workers:\n  - name: t-picky\nengine:\n  runtime_dir: {runtime}\n")
    env = dict(os.environ, III_TEST_UNITS=f"{__name__}:STORE,{__name__}:PICKY",
               III_TEST_UNITS_ONLY="1",
               PYTHONPATH=os.pathsep.join(filter(None, [HERE, ROOT, os.environ.get("PYTHONPATH")])))
    started = []

    def start(broken: bool) -> subprocess.Popen:
        if broken:
            open(os.path.join(runtime, "broken"), "w").close()
        sup = subprocess.Popen([sys.executable, "-m", "brokers.supervisor.cli", "start", str(path)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        started.append(sup)
        return sup

    yield start, runtime, env
    for sup in started:
        if sup.poll() is None:
            sup.kill()
            sup.wait()
    shutil.rmtree(runtime, ignore_errors=True)


def test_start_fails_loudly_when_a_process_cannot_start(picky_engine):
    """It used to keep running with the process FATAL (logged at INFO) and nothing serving."""
    start, runtime, env = picky_engine
    sup = start(broken=True)
    assert sup.wait(timeout=20) == 1
    out = sup.stdout.read()
    assert "tpicky: cannot start (broken)" in out
    assert "ERROR brokers.supervisor.runner: proc.tpicky.fatal" in out
    assert "engine not started: tpicky could not start" in out
    assert "Traceback" not in out
    assert not os.path.exists(os.path.join(runtime, "supervisor.pid"))


def test_status_exits_1_while_a_process_is_fatal(picky_engine):
    start, runtime, env = picky_engine
    sup = start(broken=False)
    ps = wait_for(lambda: all_running(runtime), timeout=10)
    status = [sys.executable, "-m", "brokers.supervisor.cli", "status", "--runtime-dir", runtime]
    assert subprocess.run(status, env=env, capture_output=True, timeout=20).returncode == 0
    open(os.path.join(runtime, "broken"), "w").close()
    os.kill(ps["tpicky"]["pid"], signal.SIGKILL)  # its restart cannot start: FATAL at once
    wait_for(lambda: procs(runtime)["tpicky"]["state"] == "FATAL", timeout=5)
    out = subprocess.run(status, env=env, capture_output=True, text=True, timeout=20)
    assert out.returncode == 1
    assert "tpicky FATAL" in out.stderr and "FATAL" in out.stdout
    assert sup.poll() is None  # the engine keeps serving what still runs
    assert procs(runtime)["tstore"]["state"] == "RUNNING"
    os.unlink(os.path.join(runtime, "broken"))
    control.call(runtime, "restart", {"name": "tpicky"})
    wait_for(lambda: all_running(runtime), timeout=10)
    assert subprocess.run(status, env=env, capture_output=True, timeout=20).returncode == 0


def test_children_start_on_the_plan_not_the_file(toy_engine):
    """A respawn after the file was broken runs on the plan made at start: its child gets
    its part on --plan-fd (the file is not on its command line, nor needed at all)."""
    sup, runtime, path, env = toy_engine
    ps = wait_for(lambda: all_running(runtime), timeout=10)
    wait_for(lambda: os.path.exists(os.path.join(runtime, "tsvc.peers")), timeout=10)
    with open(f"/proc/{ps['tsvc']['pid']}/cmdline", "rb") as fh:
        argv = fh.read().split(b"\0")
    assert b"--plan-fd" in argv and b"--config" not in argv and path.encode() not in argv
    with open(path, "w") as fh:
        fh.write("workers: [{name: t-edge, config: {processes: 5}}\n")  # broken YAML
    os.unlink(os.path.join(runtime, "tsvc.peers"))
    os.kill(ps["tsvc"]["pid"], signal.SIGKILL)
    wait_for(lambda: (lambda p: p["state"] == "RUNNING" and p["pid"] != ps["tsvc"]["pid"])(
        procs(runtime)["tsvc"]), timeout=5)
    wait_for(lambda: os.path.exists(os.path.join(runtime, "tsvc.peers")), timeout=10)
    with open(os.path.join(runtime, "tsvc.peers")) as fh:
        assert fh.read() == "tstore,tsvc,tedge-0,tedge-1"  # the plan's peers, not five edges
    out = subprocess.run([sys.executable, "-m", "brokers.supervisor.cli", "status", "--runtime-dir", runtime],
                         env=env, capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    assert "plan:         generation 1, read from the config at " in out.stdout
    assert control.call(runtime, "status")["plan"]["generation"] == 1
