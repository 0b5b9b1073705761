"""Start and stop the engine under test with `iii-supervisor start <generated config>`.

The config is generated per start in a short runtime dir (`/tmp/iii-XXXX`, because ipc
socket paths are limited to ~107 bytes) on a free port, so a benchmark never collides with
an engine or a test another engineer runs on 49134. Invariants: the supervisor runs in its
own session and we only ever signal that session (processes we started); engine processes
are the supervisor's descendants; gateway processes are the engine processes that listen on
the worker port.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent


def supervisor_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "iii-supervisor"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("iii-supervisor")
    return [found] if found else [sys.executable, "-m", "brokers.supervisor.cli"]


def make_config(runtime_dir: str, port: int, processes: int, extra_workers: list | None = None) -> dict:
    cfg = {
        "engine": {"runtime_dir": runtime_dir, "data_dir": os.path.join(runtime_dir, "data")},
        "workers": [
            {"name": "iii-worker-manager", "config": {"port": port, "processes": processes}},
            {"name": "iii-state"},
            {"name": "iii-queue",
             "config": {"queue_configs": {"bench": {"concurrency": 64, "max_retries": 1}}}},
        ],
    }
    cfg["workers"] += extra_workers or []
    return cfg


class Engine:
    """One supervisor and everything it spawned."""

    def __init__(self, port: int, processes: int = 1, extra_workers: list | None = None) -> None:
        self.port = port
        self.processes = processes
        self.runtime_dir = tempfile.mkdtemp(prefix="iii-", dir="/tmp")
        # config and log live outside the runtime dir: the engine owns that one
        self.files_dir = tempfile.mkdtemp(prefix="iii-perf-", dir="/tmp")
        self.config_path = os.path.join(self.files_dir, "bench.yaml")
        with open(self.config_path, "w") as fh:
            yaml.safe_dump(make_config(self.runtime_dir, port, processes, extra_workers), fh)
        self.log_path = os.path.join(self.files_dir, "supervisor.log")
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.env: dict[str, str] | None = None
        """The supervisor's environment (None: ours); subclasses set it."""

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    def start(self) -> None:
        self.started_at = time.monotonic()
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen([*supervisor_cmd(), "start", self.config_path], env=self.env,
                                         stdout=out, stderr=subprocess.STDOUT, cwd=str(ROOT),
                                         start_new_session=True)

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def log_tail(self, lines: int = 6) -> str:
        try:
            text = Path(self.log_path).read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])

    def processes_info(self) -> list[psutil.Process]:
        if self.proc is None:
            return []
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def rss_mb(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for p in self.processes_info():
            try:
                name = " ".join(p.cmdline()[1:4])[-48:] or p.name()
                out[f"{p.pid} {name}"] = round(p.memory_info().rss / 2**20, 1)
            except psutil.Error:
                continue
        return out

    def gateway_pids(self) -> list[int]:
        pids = []
        for p in self.processes_info():
            try:
                if any(c.status == psutil.CONN_LISTEN and c.laddr.port == self.port
                       for c in p.net_connections(kind="tcp")):
                    pids.append(p.pid)
            except psutil.Error:
                continue
        return pids

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("supervisor ignored SIGTERM for %ss; killing its session", timeout)
        if self.proc is not None:
            # anything left in the session we created (a child that outlived the supervisor)
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.proc.wait()
        shutil.rmtree(self.runtime_dir, ignore_errors=True)
        shutil.rmtree(self.files_dir, ignore_errors=True)
