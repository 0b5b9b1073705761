"""The runtime dir and the supervisor's lock on it, on the real ``iii-supervisor`` over one
trivial child (issue 11, item 8): a runtime dir someone else owns or may write is refused
with one line; one that others may only read is made private; a planted or stale pid file
(``1``, a zombie's pid, a live stranger's pid) neither blocks ``start`` nor makes ``stop``
signal anyone; a supervisor killed with SIGKILL leaves nothing that blocks the next start.
"""
from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import tempfile
import time

import pytest

from brokers.kit.units import RunContext, Unit
from brokers.supervisor import control

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
NOBODY = 65534


def idle_main(ctx: RunContext) -> None:
    """A child that does nothing until told to stop."""
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    while True:
        time.sleep(1)


IDLE = Unit("tidle", ("t-idle",), f"{__name__}:idle_main", always=True)


@pytest.fixture
def engine(tmp_path):
    """``start()`` runs a supervisor on ``runtime`` (made by the test as it likes)."""
    runtime = os.path.join(tempfile.mkdtemp(prefix="iii-", dir="/tmp"), "run")
    path = tmp_path / "config.yaml"
    path.write_text(f"workers: []\nengine:\n  runtime_dir: {runtime}\n")
    env = dict(os.environ, III_TEST_UNITS=f"{__name__}:IDLE", III_TEST_UNITS_ONLY="1",
               PYTHONPATH=os.pathsep.join(filter(None, [HERE, ROOT, os.environ.get("PYTHONPATH")])))
    started: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        sup = subprocess.Popen([sys.executable, "-m", "brokers.supervisor.cli", "start", str(path)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started.append(sup)
        return sup

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "brokers.supervisor.cli", *args,
                               "--runtime-dir", runtime], env=env, capture_output=True,
                              text=True, timeout=30)

    yield start, cli, runtime
    for sup in started:
        if sup.poll() is None:
            sup.kill()
            sup.wait()
    subprocess.run(["rm", "-rf", os.path.dirname(runtime)], check=False)


def running(runtime: str, within: float = 10.0) -> dict:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            return control.call(runtime, "status", timeout=1.0)
        except (ConnectionError, RuntimeError):
            time.sleep(0.05)
    raise AssertionError(f"no supervisor answered on {runtime} within {within} s")


def refused(sup: subprocess.Popen) -> str:
    """The one line a refused start printed (it must exit 1 at once)."""
    try:
        code = sup.wait(timeout=15)
    except subprocess.TimeoutExpired:
        raise AssertionError("start did not refuse the runtime dir: the engine is running")
    err = sup.stderr.read()
    assert code == 1, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_a_runtime_dir_owned_by_another_user_is_refused(engine):
    start, cli, runtime = engine
    os.mkdir(runtime, 0o700)
    os.chown(runtime, NOBODY, NOBODY)
    err = refused(start())
    assert f"runtime dir {runtime} belongs to uid {NOBODY}, not to us" in err
    assert os.listdir(runtime) == []  # nothing was made in it


def test_a_runtime_dir_writable_by_others_is_refused(engine):
    start, cli, runtime = engine
    os.mkdir(runtime)
    os.chmod(runtime, 0o777)  # e.g. a /tmp/iii-run planted by another user, then chowned
    err = refused(start())
    assert "is writable by other users (mode 0777)" in err
    assert os.listdir(runtime) == []


def test_a_symlink_of_another_user_is_refused(engine):
    start, cli, runtime = engine
    target = runtime + "-real"
    os.mkdir(target, 0o700)
    os.symlink(target, runtime)
    os.lchown(runtime, NOBODY, NOBODY)
    assert f"symlink {runtime} belongs to uid {NOBODY}" in refused(start())


def test_a_runtime_dir_others_may_only_read_is_made_private(engine):
    start, cli, runtime = engine
    os.mkdir(runtime)
    os.chmod(runtime, 0o755)
    sup = start()
    running(runtime)
    assert stat.S_IMODE(os.stat(runtime).st_mode) == 0o700


def test_a_missing_runtime_dir_is_made_0700(engine):
    start, cli, runtime = engine
    sup = start()
    running(runtime)
    assert stat.S_IMODE(os.stat(runtime).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(os.path.join(runtime, "supervisor.pid")).st_mode) == 0o600


def test_a_planted_pid_file_naming_pid_1_does_not_block_start(engine):
    start, cli, runtime = engine
    os.mkdir(runtime, 0o700)
    with open(os.path.join(runtime, "supervisor.pid"), "w") as fh:
        fh.write("1\n")
    sup = start()
    assert running(runtime)["pid"] == sup.pid
    with open(os.path.join(runtime, "supervisor.pid")) as fh:
        assert fh.read() == f"{sup.pid}\n"


def test_a_zombie_supervisor_does_not_block_a_restart(engine):
    """A supervisor killed with SIGKILL and not reaped by its parent (us) is a zombie: its
    pid still answers kill(pid, 0) and its pid file and sockets are left behind."""
    start, cli, runtime = engine
    first = start()
    running(runtime)
    first.send_signal(signal.SIGKILL)
    deadline = time.monotonic() + 5
    while open(f"/proc/{first.pid}/stat").read().split(")")[-1].split()[0] != "Z":
        assert time.monotonic() < deadline, "the killed supervisor did not become a zombie"
        time.sleep(0.01)
    with open(os.path.join(runtime, "supervisor.pid")) as fh:
        assert fh.read().strip() == str(first.pid)  # stale: it had no chance to remove it
    began = time.monotonic()
    second = start()
    assert running(runtime)["pid"] == second.pid
    assert time.monotonic() - began < 8  # the start itself, not a wait for the zombie
    assert first.poll() is not None  # reaped only now, after the restart


def test_a_second_start_is_refused_while_one_runs(engine):
    start, cli, runtime = engine
    first = start()
    running(runtime)
    err = refused(start())
    assert f"a supervisor (pid {first.pid}) already runs on {runtime}" in err


def test_status_and_stop_ignore_a_pid_file_nobody_holds(engine):
    """A pid file naming a live stranger: status says not running, and stop must not
    signal the stranger (it used to SIGTERM whatever the file named)."""
    start, cli, runtime = engine
    os.mkdir(runtime, 0o700)
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        with open(os.path.join(runtime, "supervisor.pid"), "w") as fh:
            fh.write(f"{stranger.pid}\n")
        out = cli("stop", "--timeout", "2")
        assert out.returncode == 1 and "engine not running" in out.stderr, out.stderr
        time.sleep(0.2)
        assert stranger.poll() is None  # not signalled
        out = cli("status")
        assert out.returncode == 1 and "engine not running" in out.stderr
    finally:
        stranger.kill()
        stranger.wait()


def test_stop_waits_for_the_lock_to_go(engine):
    start, cli, runtime = engine
    sup = start()
    running(runtime)
    out = cli("stop")
    assert out.returncode == 0, out.stderr
    assert f"stopped (pid {sup.pid})" in out.stdout
    assert sup.wait(timeout=5) == 0
    assert not os.path.exists(os.path.join(runtime, "supervisor.pid"))
