"""A private ``redis-server`` for the tests (Debian's package; the setup script installs it).

One server per test session (``redis_server`` fixture in tests/conftest.py), on a TCP port of
its own on 127.0.0.1 (engine configs name it as ``redis://127.0.0.1:<port>/<db>``) and a unix
socket beside its data, with AOF on (``appendfsync always``: acknowledged means on disk, as
the engine's own stores). Tests that must not see each other's keys take their own database
number (``RedisServer.url(db)``) or flush. Never a mock: the engine talks to a real server.

Invariant: the server dies with the test session (SIGTERM, then SIGKILL), and its data dir
with it.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A running private redis-server."""

    def __init__(self, appendfsync: str = "always") -> None:
        if not os.path.exists(REDIS_SERVER):
            pytest.fail("redis-server is not installed: run scripts/setup-dev.sh (it installs Debian's "
                        "redis-server package)", pytrace=False)
        self.dir = tempfile.mkdtemp(prefix="iii-redis-", dir="/tmp")
        self.port = _free_port()
        self.socket = os.path.join(self.dir, "redis.sock")
        self.log = os.path.join(self.dir, "redis.log")
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--unixsocket", self.socket,
             "--unixsocketperm", "700", "--dir", self.dir, "--appendonly", "yes",
             "--appendfsync", appendfsync, "--save", "", "--logfile", self.log, "--databases", "64"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
            start_new_session=True)
        self._wait_ready()
        self._next_db = 1

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def fresh_db(self) -> int:
        """A database number no other test of this session has used (0 stays shared)."""
        db = self._next_db
        self._next_db += 1
        if db >= 64:
            raise RuntimeError("more than 63 private Redis databases asked for in one session")
        return db

    def _wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {Path(self.log).read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("redis-server did not answer PING within 10 s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)
