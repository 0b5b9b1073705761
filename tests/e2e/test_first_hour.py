"""What a new user meets in the first hour, with the real CLI and real engines (issue 9).

- A second engine on a port already in use refuses to start (one line, exit 1) and the
  first one keeps every worker; a port held by another program is the same one line.
- A gateway run alone on a taken port exits ``EXIT_NO_RETRY`` with one line.
- Relative paths in an iii config resolve against the working directory, once.
- Bare ``status`` / ``stop`` act on the engine the one runtime-dir rule names, never on
  another; ``status --config`` reads past a ``${VAR}`` only the starting shell had.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import textwrap
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from tests.harness import REPO, free_port, running_engine, supervisor_cmd
from tests.wsclient import RawClient, ok, wait_for_function

SUPERVISOR_ENV = {k: v for k, v in os.environ.items() if k != "III_RUNTIME_DIR"}


def cli(*args: str, env: dict[str, str] | None = None, cwd: str | Path = REPO,
        timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(supervisor_cmd() + list(args), capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=env or SUPERVISOR_ENV)


def gateway_only(port: int, runtime_dir: str | None, data_dir: str, extra: str = "") -> str:
    runtime = f"  runtime_dir: {runtime_dir}\n" if runtime_dir else ""
    return (f"engine:\n{runtime}  data_dir: {data_dir}\n"
            f"workers:\n  - name: iii-worker-manager\n    config: {{host: 127.0.0.1, port: {port}}}\n"
            + extra)


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A short temp dir (ipc paths) removed at the end."""
    path = Path(tempfile.mkdtemp(prefix="iii-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


class Started:
    """An ``iii-supervisor start`` of our own (own env and working directory)."""

    def __init__(self, config: Path, env: dict[str, str], cwd: Path, port: int) -> None:
        self.log = config.with_suffix(".log")
        with open(self.log, "wb") as fh:
            self.proc = subprocess.Popen(supervisor_cmd() + ["start", str(config)], cwd=cwd,
                                         env=env, stdout=fh, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        self.url = f"ws://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                with RawClient.worker(self.url, timeout=2.0):
                    return
            except Exception:  # refused, reset: not up yet
                time.sleep(0.1)
        raise AssertionError(f"engine on {self.url} not up:\n{self.log.read_text()}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(5)


@contextmanager
def echo_worker(url: str, function_id: str) -> Iterator[None]:
    """A raw worker serving ``function_id`` (answers its data's "n") on a thread of its own."""
    stop = threading.Event()
    with RawClient.declared(url, "owner") as owner:
        owner.register_function(function_id)

        def serve() -> None:
            while not stop.is_set():
                try:
                    call = owner.next_call(function_id, timeout=0.2)
                except TimeoutError:
                    continue
                owner.answer(call, (call.get("data") or {}).get("n"))

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(5)


def test_a_second_engine_on_the_same_port_refuses_and_the_first_keeps_its_workers(
        scratch: Path) -> None:
    with running_engine() as first, echo_worker(first.url, "first::only"):
        with RawClient.worker(first.url) as c:
            assert ok(c.call_when_found("first::only", {"n": -1})) == -1
        other = scratch / "second.yaml"
        other.write_text(gateway_only(first.port, str(scratch / "rt"), str(scratch / "d")))
        out = cli("start", str(other), timeout=20)
        assert out.returncode == 1, out
        assert out.stderr.strip().splitlines() == [
            f"iii-supervisor: port {first.port} is already in use (127.0.0.1:{first.port})"]
        assert "Traceback" not in out.stdout + out.stderr
        # Every new client still reaches the first engine (5 of 8 did not when the second
        # engine joined the port with SO_REUSEPORT).
        for i in range(8):
            with RawClient.worker(first.url) as c:
                assert ok(c.call("first::only", {"n": i})) == i
        assert first.proc is not None and first.proc.poll() is None


def test_a_port_held_by_another_program_is_one_line_and_exit_1(scratch: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        cfg = scratch / "c.yaml"
        cfg.write_text(gateway_only(port, str(scratch / "rt"), str(scratch / "d")))
        out = cli("start", str(cfg), timeout=20)
        assert out.returncode == 1
        assert out.stderr.strip().splitlines() == [
            f"iii-supervisor: port {port} is already in use (127.0.0.1:{port})"]
        assert "Errno" not in out.stdout + out.stderr
        # `run gateway` alone (as a systemd unit would) cannot bind either: one line, and
        # the exit code that tells a supervisor not to retry.
        run = cli("run", "gateway", "--config", str(cfg), timeout=20)
        assert run.returncode == 3, run
        errors = [line for line in run.stderr.splitlines() if " ERROR " in line]
        assert len(errors) == 1 and f"port {port} is already in use" in errors[0], run.stderr
        assert "Traceback" not in run.stderr


def test_relative_paths_resolve_against_the_working_directory_once(scratch: Path) -> None:
    """``file_path: ./data/state_store.db`` used to land in <config dir>/data/data/..."""
    conf_dir, work = scratch / "conf", scratch / "work"
    conf_dir.mkdir()
    work.mkdir()
    port = free_port()
    cfg = conf_dir / "iii-config.yaml"
    cfg.write_text(gateway_only(port, str(scratch / "rt"), "./var", textwrap.indent(
        textwrap.dedent("""\
            - name: iii-state
              config:
                adapter:
                  name: kv
                  config: {store_method: file_based, file_path: ./data/state_store.db}
            """), "  ")))
    eng = Started(cfg, SUPERVISOR_ENV, work, port)
    try:
        wait_for_function(eng.url, "state::set", {"scope": "s", "key": "k", "value": 1})
        status = cli("status", "--config", str(cfg), "--json")
        assert status.returncode == 0, status.stderr
        paths = json.loads(status.stdout)["paths"]
        assert paths["stores"]["state"] == str(work / "data" / "state_store.db")
        assert paths["data_dir"] == str(work / "var")
        assert paths["runtime_dir"] == str(scratch / "rt")
        assert (work / "data" / "state_store.db" / "data.mdb").exists()
        assert not (conf_dir / "data").exists() and not (work / "data" / "data").exists()
        assert f"store state: {work / 'data' / 'state_store.db'}" in eng.log.read_text()
        human = cli("status", "--config", str(cfg))
        assert f"store state:  {work / 'data' / 'state_store.db'}" in human.stdout
    finally:
        eng.close()


def test_bare_status_and_stop_act_on_the_engine_the_rule_names(scratch: Path) -> None:
    """Engine A has no engine.runtime_dir and was started with $III_RUNTIME_DIR; engine B
    names its own. Bare commands (same environment) see A only; B is never touched."""
    dir_a = str(scratch / "a")
    dir_b = tempfile.mkdtemp(prefix="iii-", dir="/tmp")  # where `status` looks for hints
    port_a, port_b = free_port(), free_port()
    (scratch / "a.yaml").write_text(gateway_only(port_a, None, str(scratch / "da")))
    (scratch / "b.yaml").write_text(
        gateway_only(port_b, dir_b, str(scratch / "db"))
        + "  - name: iii-queue\n    config: {queue_configs: {q: {concurrency: ${ONLY_IN_B_SHELL}}}}\n")
    env_a = dict(SUPERVISOR_ENV, III_RUNTIME_DIR=dir_a)
    a = Started(scratch / "a.yaml", env_a, scratch, port_a)
    b = Started(scratch / "b.yaml", dict(SUPERVISOR_ENV, ONLY_IN_B_SHELL="2"), scratch, port_b)
    try:
        status = cli("status", "--json", env=env_a)
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["paths"]["runtime_dir"] == dir_a
        # status --config works in a shell that lacks B's ${ONLY_IN_B_SHELL}
        status_b = cli("status", "--config", str(scratch / "b.yaml"), "--json")
        assert status_b.returncode == 0, status_b.stderr
        assert json.loads(status_b.stdout)["pid"] == b.proc.pid
        # nothing at the place the rule names: say where we looked and how to point elsewhere
        empty = dict(SUPERVISOR_ENV, III_RUNTIME_DIR=str(scratch / "none"))
        missing = cli("status", env=empty)
        assert missing.returncode == 1
        assert f"engine not running at {scratch / 'none'} (from $III_RUNTIME_DIR)" in missing.stderr
        assert "--runtime-dir" in missing.stderr and dir_b in missing.stderr  # B is listed
        assert cli("stop", env=empty).returncode == 1 and b.proc.poll() is None
        stop = cli("stop", env=env_a)
        assert stop.returncode == 0, stop.stderr
        assert f"engine at {dir_a} stopped" in stop.stdout
        assert a.proc.wait(10) == 0
        assert b.proc.poll() is None
        with RawClient.worker(b.url):
            pass
    finally:
        a.close()
        b.close()
        shutil.rmtree(dir_b, ignore_errors=True)
