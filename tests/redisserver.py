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

import pytest

from perf.peers import REDIS_SERVER, PeerRedis


class RedisServer(PeerRedis):
    """A running private redis-server (the perf harness's, plus a unix socket and 64
    databases for tests that must not see each other's keys)."""

    PREFIX = "iii-redis-"

    def __init__(self, appendfsync: str = "always") -> None:
        if not os.path.exists(REDIS_SERVER):
            pytest.fail("redis-server is not installed: run scripts/setup-dev.sh (it installs Debian's "
                        "redis-server package)", pytrace=False)
        self._next_db = 1
        super().__init__(appendfsync)

    @property
    def socket(self) -> str:
        return os.path.join(self.dir, "redis.sock")

    def args(self) -> list[str]:
        return [*super().args(), "--unixsocket", self.socket, "--unixsocketperm", "700", "--databases", "64"]

    def fresh_db(self) -> int:
        """A database number no other test of this session has used (0 stays shared)."""
        db = self._next_db
        self._next_db += 1
        if db >= 64:
            raise RuntimeError("more than 63 private Redis databases asked for in one session")
        return db
