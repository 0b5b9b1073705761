"""Starts the real engine (``iii-supervisor start CONFIG``) for end-to-end and interop tests.

What it owns: a temporary config with a free port, the supervisor subprocess (in its own
process group), its log file, and the short runtime dir; also the tests' own worker
subprocesses (``WorkerProcess``: a seed example, a Node script). Nothing here knows the
engine's internals: it talks to it only through the CLI (``start``, ``status --json``) and
the WebSocket port, as an operator or an SDK would.

Invariants:
- the runtime dir is made with ``tempfile.mkdtemp(prefix="iii-", dir="/tmp")`` because ipc
  socket paths must stay under ~107 bytes (pytest's ``tmp_path`` is too long);
- ``start_engine`` returns only once a worker connection on the port has received
  ``workerregistered``; if the supervisor dies first, the error carries its stderr;
- with ``wait_for``, ``start_engine`` returns only once that function answers without an
  error (a broker registers its functions after the gateway accepts workers);
- ``Engine.stop`` always leaves no process of this engine behind (SIGTERM, wait, then SIGKILL
  of the process group and of any descendant that left it); so does ``WorkerProcess.stop``
  for its one process, and a ``WorkerProcess`` that is not ready in time is stopped.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import psutil

from tests.wsclient import RawClient, wait_for_function

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
LIVE: list["Engine"] = []
"""Engines started and not yet stopped; conftest dumps their logs into failing reports."""
STATE_WORKER_YAML = "- name: iii-state\n  config: {}\n"
"""``extra_workers_yaml`` for an engine with iii-state in its default config."""
QUEUE_READY = "engine::queue::list_topics"
"""``wait_for`` of an engine with iii-queue: answers once the queue broker has registered."""
STATE_READY = "state::list_groups"
PAYMENT_QUEUES = {"payment": {"max_retries": 10, "concurrency": 2, "type": "fifo",
                              "message_group_field": "transaction_id", "backoff_ms": 50}}
"""The ``payment`` queue of ``conf/iii-config.yaml`` (the seed's Enqueue target), quick backoff."""
"""``wait_for`` of an engine with iii-state: answers once the state broker has registered."""


class EngineError(RuntimeError):
    """The engine did not start or did not reach the state a test waited for."""


def supervisor_cmd() -> list[str]:
    """``iii-supervisor`` of the venv that runs the tests (ours, never ``.venv-official``)."""
    exe = Path(sys.executable).parent / "iii-supervisor"
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-c", "from brokers.supervisor.cli import main; main()"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_config(*, port: int, runtime_dir: str, data_dir: str, gateway_processes: int = 1,
                queues: dict[str, Any] | None = None, extra_workers_yaml: str = "") -> str:
    """The iii-format config text for a test engine."""
    text = textwrap.dedent(f"""\
        engine:
          runtime_dir: {runtime_dir}
          data_dir: {data_dir}
        workers:
          - name: iii-worker-manager
            config:
              host: 127.0.0.1
              port: {port}
              processes: {gateway_processes}
        """)
    if queues is not None:
        text += "  - name: iii-queue\n    config:\n      queue_configs: " + json.dumps(queues) + "\n"
    if extra_workers_yaml:
        text += textwrap.indent(textwrap.dedent(extra_workers_yaml).strip("\n"), "  ") + "\n"
    return text


class Engine:
    """One running ``iii-supervisor start`` and the temp files it uses."""

    def __init__(self, *, config_text: str, port: int, runtime_dir: str, data_dir: str,
                 env: dict[str, str] | None = None) -> None:
        self.env = env
        """Added to ``os.environ`` for the supervisor (and so its processes), e.g. ``III_HOST_ID``."""
        self.port = port
        self.url = f"ws://127.0.0.1:{port}"
        self.runtime_dir = runtime_dir
        self.data_dir = data_dir
        self.config_path = os.path.join(runtime_dir, "iii-config.yaml")
        Path(self.config_path).write_text(config_text)
        self.log_path = os.path.join(runtime_dir, "supervisor.log")
        self.proc: subprocess.Popen[bytes] | None = None
        self._descendants: set[int] = set()

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, timeout: float = 20.0) -> "Engine":
        logf = open(self.log_path, "wb")
        try:
            self.proc = subprocess.Popen(
                supervisor_cmd() + ["start", self.config_path], cwd=REPO,
                env=None if self.env is None else {**os.environ, **self.env},
                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                start_new_session=True)  # own process group: stop() can kill it whole
        finally:
            logf.close()
        LIVE.append(self)
        try:
            self.wait_accepting(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_accepting(self, timeout: float = 20.0) -> None:
        """Until a worker connection receives ``workerregistered``."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise EngineError(f"iii-supervisor exited with {self.proc.returncode} before "
                                  f"the port accepted workers:\n{self.log_tail()}")
            try:
                with RawClient.worker(self.url, timeout=2.0):
                    return
            except Exception as exc:  # refused, reset, timeout: not up yet
                last = exc
                time.sleep(0.1)
        raise EngineError(f"engine on {self.url} not accepting workers after {timeout}s "
                          f"(last error: {last!r}):\n{self.log_tail()}")

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the supervisor, wait, then SIGKILL whatever is left of this engine."""
        if self in LIVE:
            LIVE.remove(self)
        if self.proc is None:
            return None
        self._remember_descendants()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("iii-supervisor ignored SIGTERM for %ss; killing its group", timeout)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for pid in self._descendants:  # children that setsid() away from the group
            try:
                psutil.Process(pid).kill()
            except psutil.Error:
                pass
        rc = self.proc.wait(5)
        shutil.rmtree(self.runtime_dir, ignore_errors=True)
        return rc

    def _remember_descendants(self) -> None:
        try:
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                self._descendants.add(child.pid)
        except psutil.Error:
            pass

    # -- inspection ----------------------------------------------------------------------

    def log_tail(self, limit: int = 20000) -> str:
        try:
            data = Path(self.log_path).read_bytes()
        except OSError:
            return "(no supervisor log)"
        return data[-limit:].decode("utf-8", "replace")

    def status(self) -> list[dict[str, Any]]:
        """``iii-supervisor status --config CONFIG --json``: [{name, state, pid, ...}]."""
        out = subprocess.run(supervisor_cmd() + ["status", "--config", self.config_path, "--json"],
                             capture_output=True, text=True, timeout=10, cwd=REPO)
        if out.returncode != 0:
            raise EngineError(f"status failed ({out.returncode}): {out.stderr or out.stdout}")
        data = json.loads(out.stdout)
        if isinstance(data, dict):  # tolerate {"processes": [...]}
            data = data.get("processes", data)
        return list(data)

    def process(self, name: str) -> dict[str, Any]:
        for entry in self.status():
            if entry.get("name") == name:
                return entry
        raise EngineError(f"no process {name!r} in status: {self.status()}")

    def pid(self, name: str) -> int:
        pid = self.process(name).get("pid")
        if not pid:
            raise EngineError(f"process {name!r} has no pid: {self.process(name)}")
        return int(pid)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        """Signal one engine process by its name; returns the pid signalled."""
        self._remember_descendants()
        pid = self.pid(name)
        os.kill(pid, sig)
        return pid

    def wait_running(self, name: str, timeout: float = 5.0, *, not_pid: int | None = None
                     ) -> dict[str, Any]:
        """Until ``name`` is RUNNING (with a pid other than ``not_pid``); returns its entry."""
        deadline = time.monotonic() + timeout
        entry: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                entry = self.process(name)
            except EngineError:
                entry = {}
            if (str(entry.get("state", "")).upper() == "RUNNING" and entry.get("pid")
                    and entry.get("pid") != not_pid):
                return entry
            time.sleep(0.05)
        raise EngineError(f"{name} not RUNNING (pid != {not_pid}) within {timeout}s: {entry}")


def start_engine(*, gateway_processes: int = 1, queues: dict[str, Any] | None = None,
                 extra_workers_yaml: str = "", config_text: str | None = None,
                 timeout: float = 20.0, wait_for: str | None = None,
                 wait_data: Any = None, data_mode: int = 0o700,
                 env: dict[str, str] | None = None) -> Engine:
    """Write a temp config with a free port and start ``iii-supervisor start`` on it.

    ``config_text`` may contain ``{port}``, ``{runtime_dir}`` and ``{data_dir}``, which are
    filled in; otherwise the config is built from the keyword arguments. With ``wait_for``,
    returns once that function answers ``wait_data`` without an error (the engine is stopped
    if it never does). The data dir is made with ``data_mode`` (0700, as the engine wants it:
    it warns about and tightens a looser one). ``env`` is added to the supervisor's environment.
    """
    runtime_dir = tempfile.mkdtemp(prefix="iii-", dir="/tmp")
    data_dir = os.path.join(runtime_dir, "data")
    os.mkdir(data_dir)
    os.chmod(data_dir, data_mode)  # explicit: mkdir's mode is masked by the umask
    port = free_port()
    if config_text is not None:
        # str.replace, not str.format: YAML flow maps use braces too.
        text = (config_text.replace("{port}", str(port)).replace("{runtime_dir}", runtime_dir)
                .replace("{data_dir}", data_dir))
    else:
        text = make_config(port=port, runtime_dir=runtime_dir, data_dir=data_dir,
                           gateway_processes=gateway_processes, queues=queues,
                           extra_workers_yaml=extra_workers_yaml)
    eng = Engine(config_text=text, port=port, runtime_dir=runtime_dir,
                 data_dir=data_dir, env=env).start(timeout)
    if wait_for is not None:
        try:
            wait_for_function(eng.url, wait_for, wait_data)
        except BaseException:
            eng.stop()
            raise
    return eng


@contextmanager
def running_engine(**kw: Any) -> Iterator[Engine]:
    """``start_engine(**kw)``, stopped when the block ends (a fixture's ``yield`` included)."""
    eng = start_engine(**kw)
    try:
        yield eng
    finally:
        eng.stop()


class WorkerProcess:
    """A worker subprocess of a test (a seed example, a Node script), ``III_URL`` set to ``url``.

    A thread reads its stdout: every line is kept in ``lines``, and a line that is a JSON
    object is also put on ``events``. Its stderr joins stdout, or with ``stderr_apart`` is
    read into ``errors`` (Node scripts keep stdout for events). ``env`` replaces
    ``os.environ`` as the base environment; ``stdin_text`` is written to stdin, then closed.
    """

    def __init__(self, cmd: list[str], url: str, *, cwd: str | Path | None = None,
                 env: dict[str, str] | None = None, stdin_text: str | None = None,
                 stderr_apart: bool = False, name: str | None = None) -> None:
        self.name = name or Path(cmd[-1]).name
        full_env = {**(os.environ if env is None else env), "III_URL": url,
                    "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            cmd, cwd=cwd, env=full_env, text=True,
            stdin=subprocess.DEVNULL if stdin_text is None else subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE if stderr_apart else subprocess.STDOUT)
        self.lines: list[str] = []
        self.errors: list[str] = []
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._changed = threading.Condition()
        self._eof = False
        self._readers = [threading.Thread(target=self._read, daemon=True)]
        if stderr_apart:
            self._readers.append(threading.Thread(target=self._read_errors, daemon=True))
        for t in self._readers:
            t.start()
        if stdin_text is not None:
            self.proc.stdin.write(stdin_text)  # type: ignore[union-attr]
            self.proc.stdin.close()  # type: ignore[union-attr]

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            if line.startswith("{"):
                try:
                    event = json.loads(line)
                except ValueError:
                    event = None
                if isinstance(event, dict):
                    self.events.put(event)
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._eof = True
            self._changed.notify_all()

    def _read_errors(self) -> None:
        for line in self.proc.stderr:  # type: ignore[union-attr]
            with self._changed:
                self.errors.append(line)
                self._changed.notify_all()

    def wait_error(self, text: str, timeout: float = 5.0) -> bool:
        """Whether ``text`` appears in its stderr (``stderr_apart``) within ``timeout``: a
        line printed just before the answer it goes with is read by another thread."""
        with self._changed:
            return self._changed.wait_for(lambda: text in "".join(self.errors), timeout)

    def output(self, limit: int = 3000) -> str:
        text = "".join(self.lines)[-limit:]
        return text + ("\nstderr:\n" + "".join(self.errors)[-limit:] if self.errors else "")

    def wait_line(self, prefix: str = "SEED-READY", timeout: float = 15.0) -> None:
        """Until a stdout line starts with ``prefix``; else stops it, AssertionError."""
        def seen() -> bool:
            return any(line.startswith(prefix) for line in self.lines)

        with self._changed:
            found = self._changed.wait_for(lambda: seen() or self._eof, timeout) and seen()
        if not found:
            rc = self.proc.poll()
            raise AssertionError(f"{self.name} not ready in {timeout} s (exit {rc}):\n{self.stop()}")

    def next_event(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next JSON event; AssertionError (and the process stopped) after ``timeout``."""
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no event from {self.name} in {timeout}s; "
                                 f"output: {self.stop()}") from None

    def stop(self) -> str:
        """Kill and reap it; returns the tail of what it printed."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        for t in self._readers:
            t.join(2)
        return self.output()
