"""Every planned process started the way the systemd units start it (issue 17): each
``iii-supervisor run NAME --config CONFIG`` as its own subprocess, no supervisor, each with
a ``NOTIFY_SOCKET`` of its own (a datagram socket of this test: who sent what is known by
where it arrived).

- each sends ``READY=1``, in the units' order (storage, then the others, then ingress,
  each group started once the one before is ready, as ``After=`` on ``Type=notify``
  units does), and only once it serves: when the gateway's arrives, a worker connection
  is accepted and welcomed;
- a call through the engine (``state::set`` / ``state::get`` from a RawClient);
- ``kill -9`` of the state process, then the same command again (what ``Restart=`` does):
  the worker's calls are served again on the same connection, nobody reconnects by hand;
- SIGTERM sends ``STOPPING=1`` and the process exits 0.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.harness import REPO, free_port, supervisor_cmd
from tests.wsclient import RawClient, ok

READY_WITHIN = 20.0
ORDER = (("state",), ("observability", "router"), ("gateway",))
"""The start groups of this config's plan: storage, the others, ingress."""


def config_text(port: int, runtime_dir: str, data_dir: str) -> str:
    return textwrap.dedent(f"""\
        workers:
          - name: iii-worker-manager
            config: {{host: 127.0.0.1, port: {port}}}
          - name: iii-state
            config:
              adapter:
                name: kv
                config: {{store_method: file_based}}
          - name: iii-observability
            config: {{prometheus_port: 0}}
        engine:
          runtime_dir: {runtime_dir}
          data_dir: {data_dir}
        """)


class Unit:
    """One process run as its unit runs it, with the notify socket systemd would hold."""

    def __init__(self, name: str, config: str, scratch: str,
                 argv: list[str] | None = None) -> None:
        self.name = name
        self.config = config
        self.argv = argv or ["run", name, "--config", config]
        """The unit's ExecStart after the iii-supervisor executable."""
        self.scratch = scratch
        self.path = os.path.join(scratch, f"{name}.notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages: list[str] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        env = dict(os.environ, NOTIFY_SOCKET=self.path)
        for name in ("III_SUPERVISOR_PID", "III_LISTEN_FDS", "WATCHDOG_USEC", "WATCHDOG_PID"):
            env.pop(name, None)
        log = open(os.path.join(self.scratch, f"{self.name}.{self.starts}.log"), "wb")
        with log:
            self.proc = subprocess.Popen(
                supervisor_cmd() + self.argv, cwd=REPO,
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)

    def log_tail(self) -> str:
        path = os.path.join(self.scratch, f"{self.name}.{self.starts}.log")
        try:
            return Path(path).read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def wait_for(self, state: str, within: float = READY_WITHIN) -> float:
        """Until ``state`` (e.g. ``READY=1``) arrives on this unit's socket; when it did."""
        deadline = time.monotonic() + within
        while True:
            left = deadline - time.monotonic()
            assert self.proc is not None
            if left <= 0 or (self.proc.poll() is not None and not self._pending()):
                raise AssertionError(
                    f"{self.name}: no {state} within {within} s (got {self.messages}, "
                    f"exit {self.proc.poll()}); its log:\n{self.log_tail()}")
            self.sock.settimeout(min(left, 0.2))
            try:
                data = self.sock.recv(4096).decode()
            except (TimeoutError, socket.timeout):
                continue
            self.messages.append(data)
            if state in data.split("\n"):
                return time.monotonic()

    def _pending(self) -> bool:
        self.sock.setblocking(False)
        try:
            return bool(self.sock.recv(4096, socket.MSG_PEEK))
        except BlockingIOError:
            return False

    def kill(self, sig: int) -> None:
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill(signal.SIGKILL)
            self.proc.wait(10)
        self.sock.close()


@pytest.fixture
def engine() -> Iterator[tuple[dict[str, Unit], str]]:
    scratch = tempfile.mkdtemp(prefix="iii-", dir="/tmp")
    port = free_port()
    config = os.path.join(scratch, "iii-config.yaml")
    Path(config).write_text(config_text(port, os.path.join(scratch, "run"),
                                        os.path.join(scratch, "data")))
    units = {name: Unit(name, config, scratch) for group in ORDER for name in group}
    try:
        yield units, f"ws://127.0.0.1:{port}"
    finally:
        for unit in reversed(list(units.values())):
            unit.close()
        shutil.rmtree(scratch, ignore_errors=True)


def test_the_plan_is_what_the_test_starts(engine):
    units, _ = engine
    out = subprocess.run(supervisor_cmd() + ["units", next(iter(units.values())).config],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert [line.split()[0] for line in out.stdout.splitlines()] == [
        n for group in ORDER for n in group]


def test_processes_run_alone_as_systemd_units_do(engine):
    units, url = engine
    for group in ORDER:  # After= on Type=notify units: the next group once these are ready
        for name in group:
            units[name].start()
        for name in group:
            units[name].wait_for("READY=1")

    # The gateway's READY=1 came once it serves: a worker is welcomed at once.
    with RawClient.worker(url, timeout=2.0) as worker:
        worker.declare("standalone-test")
        ok(worker.call_when_found("state::set", {"scope": "s", "key": "k", "value": 1}))
        assert ok(worker.call("state::get", {"scope": "s", "key": "k"})) == 1

        # kill -9 the state process; systemd's Restart= runs the same command again.
        state = units["state"]
        state.kill(signal.SIGKILL)
        assert state.proc is not None and state.proc.wait(10) == -signal.SIGKILL
        state.start()
        state.wait_for("READY=1")
        # Served again on the same connection (the gateway and the router notice the new
        # state process by themselves); the acked write survived the kill. The gateway
        # reads the store in place (issue 20), so a read answers even before the new state
        # process is reached: a write is what waits for it (a write sent before the gateway
        # learned of the restart is stopped, invocation_stopped, as any call in flight then).
        deadline = time.monotonic() + 10.0
        while True:
            frame = worker.call("state::get", {"scope": "s", "key": "k"}, timeout=5.0)
            if frame.get("error") is None or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert ok(frame) == 1, frame
        while True:
            frame = worker.call("state::set", {"scope": "s", "key": "k2", "value": 2}, timeout=5.0)
            code = (frame.get("error") or {}).get("code")
            if code not in ("invocation_stopped", "function_not_found") or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        ok(frame)
        assert ok(worker.call("state::get", {"scope": "s", "key": "k2"})) == 2
        assert worker.is_open

    # SIGTERM, as `systemctl stop` sends: STOPPING=1, then a clean exit; ingress first.
    for group in reversed(ORDER):
        for name in group:
            units[name].kill(signal.SIGTERM)
        for name in group:
            units[name].wait_for("STOPPING=1", within=15.0)
            proc = units[name].proc
            assert proc is not None and proc.wait(20) == 0, units[name].log_tail()
    # READY=1 came once per start, before STOPPING=1, from every process
    for name, unit in units.items():
        lines = [m for msg in unit.messages for m in msg.split("\n")]
        assert lines.count("READY=1") == unit.starts, (name, unit.messages)
        assert lines.index("STOPPING=1") > max(i for i, m in enumerate(lines) if m == "READY=1")


def test_the_supervisor_in_single_unit_mode_notifies_for_all(engine):
    """``iii-supervisor.service`` (``Type=notify``, ``NotifyAccess=main``): the supervisor
    sends READY=1 once every process runs (the gateway welcomes a worker then) and
    STOPPING=1 on SIGTERM; its children send nothing to the unit's socket (systemd would
    drop their messages and log a warning for each)."""
    units, url = engine
    config = next(iter(units.values())).config
    sup = Unit("supervisor", config, units["state"].scratch, ["start", config])
    try:
        sup.start()
        sup.wait_for("READY=1", within=30.0)
        with RawClient.worker(url, timeout=2.0) as worker:
            worker.declare("single-unit-test")
            ok(worker.call_when_found("state::set", {"scope": "s", "key": "k", "value": 3}))
        sup.kill(signal.SIGTERM)
        sup.wait_for("STOPPING=1", within=15.0)
        assert sup.proc is not None and sup.proc.wait(30) == 0, sup.log_tail()
        lines = [m for msg in sup.messages for m in msg.split("\n")]
        assert lines.count("READY=1") == 1, sup.messages  # the supervisor's alone
    finally:
        sup.close()
