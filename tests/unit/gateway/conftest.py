"""Fixtures for GatewayCore tests: a recording Outbox and a core with two connections.

The recorder keeps every effect in order as plain tuples, so a test asserts exactly what
the core asked the shell to do (and, by emptiness, what it did not).
"""
from __future__ import annotations

from typing import Any

import orjson
import pytest

from brokers.gateway.core import GatewayCore


class Recorder:
    """An Outbox that records ``("ws", conn, bytes)``, ``("bus", node, header, body)``,
    ``("close", conn)`` and ``("grace", conn)``."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def ws(self, conn: str, data: bytes) -> None:
        assert isinstance(data, bytes), "the shell writes bytes"
        self.events.append(("ws", conn, data))

    def send(self, node: str, header: dict, body: bytes = b"") -> None:
        self.events.append(("bus", node, dict(header), body))

    def close(self, conn: str) -> None:
        self.events.append(("close", conn))

    def arm_grace(self, conn: str) -> None:
        self.events.append(("grace", conn))

    def take(self) -> list[tuple]:
        """Every effect since the last take, then forget them."""
        out, self.events = self.events, []
        return out

    def ws_to(self, conn: str) -> list[dict[str, Any]]:
        """Parsed messages written to ``conn`` since the last take (does not clear)."""
        return [orjson.loads(e[2]) for e in self.events if e[0] == "ws" and e[1] == conn]

    def bus_frames(self) -> list[tuple[str, dict, bytes]]:
        return [(e[1], e[2], e[3]) for e in self.events if e[0] == "bus"]


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
def core(rec: Recorder) -> GatewayCore:
    """Node ``gw1`` with connections ``A`` (caller) and ``B`` (owns ``math::add`` locally),
    effects of the setup already taken."""
    gw = GatewayCore("gw1", rec, epoch="ep1")
    gw.open("A", "10.0.0.1")
    gw.open("B", "10.0.0.2")
    gw.on_frame("router", {"k": "routes", "ops": [["="], ["+", "default", "math::add", "gw1", "B"]]}, b"")
    rec.take()
    return gw
