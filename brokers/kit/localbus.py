"""An in-memory bus for tests: every node of a test in one event loop, no sockets.

A stand-in for ``bus.Bus`` with the same surface (``start``, ``send``, ``flush``,
``close``), as dramatiq's stub broker stands in for Redis: a process shell (a broker, the
router, a gateway) is built with ``bus=hub.factory`` and talks to the other nodes of the
same ``LocalHub``, or to a ``Peer`` a test drives by hand.

Invariants, the real bus's that tests rely on: frames between two nodes arrive in the
order they were sent, a loop pass later (``call_soon``), never inside ``send``; headers
go through ``frames.pack``/``unpack`` (a header that would not encode fails here too);
frames for a node that has not started wait for it (ZeroMQ queues them for a peer that
is not up yet); ``hub.sent`` records every frame as ``(sender, peer, header, body)``.
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable

from brokers.kit import frames

FrameHandler = Callable[[str, dict, bytes], None]


class LocalHub:
    """The nodes of one test, by name."""

    def __init__(self) -> None:
        self.nodes: dict[str, LocalBus] = {}
        self.waiting: dict[str, list[tuple[str, bytes, bytes]]] = {}
        self.sent: list[tuple[str, str, dict, bytes]] = []

    def factory(self, name: str, runtime_dir: str, on_frame: FrameHandler) -> "LocalBus":
        """What a process is given as ``bus=``: its bus on this hub."""
        return LocalBus(self, name, on_frame)

    def peer(self, name: str) -> "Peer":
        """A node a test drives by hand: it records what it receives."""
        peer = Peer(self, name)
        peer.bus.start()
        return peer

    def _deliver(self, sender: str, peer: str, packed: bytes, body: bytes) -> None:
        target = self.nodes.get(peer)
        if target is None:
            self.waiting.setdefault(peer, []).append((sender, packed, body))
            return
        target.on_frame(sender, frames.unpack(packed), body)


class LocalBus:
    """One node's bus on a ``LocalHub``."""

    def __init__(self, hub: LocalHub, name: str, on_frame: FrameHandler) -> None:
        self.hub = hub
        self.name = name
        self.on_frame = on_frame
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.hub.nodes[self.name] = self
        for sender, packed, body in self.hub.waiting.pop(self.name, []):
            self._loop.call_soon(self.hub._deliver, sender, self.name, packed, body)

    def send(self, peer: str, header: dict, body: bytes = b"") -> None:
        packed = frames.pack(header)
        self.hub.sent.append((self.name, peer, frames.unpack(packed), body))
        loop = self._loop or asyncio.get_running_loop()
        loop.call_soon(self.hub._deliver, self.name, peer, packed, body)

    def flush(self) -> None:
        """Nothing is held back: every frame is already on its way."""

    def close(self) -> None:
        if self.hub.nodes.get(self.name) is self:
            del self.hub.nodes[self.name]


class Peer:
    """A hand-driven node: ``send`` frames, then ``await next(kind)`` for what came back."""

    def __init__(self, hub: LocalHub, name: str) -> None:
        self.name = name
        self.received: list[tuple[str, dict, bytes]] = []
        self._changed = asyncio.Event()
        self.bus = LocalBus(hub, name, self._on_frame)

    def _on_frame(self, sender: str, header: dict, body: bytes) -> None:
        self.received.append((sender, header, body))
        self._changed.set()

    def send(self, peer: str, header: dict, body: bytes = b"") -> None:
        self.bus.send(peer, header, body)

    async def next(self, kind: str, timeout: float = 2.0,
                   where: Callable[[dict], bool] = lambda h: True) -> tuple[str, dict, bytes]:
        """The first received frame of ``kind`` matching ``where`` (removed from ``received``)."""
        async def find() -> tuple[str, dict, bytes]:
            while True:
                for i, (sender, header, body) in enumerate(self.received):
                    if header.get("k") == kind and where(header):
                        del self.received[i]
                        return sender, header, body
                self._changed.clear()
                await self._changed.wait()
        return await asyncio.wait_for(find(), timeout)

    def kinds(self) -> list[Any]:
        return [h.get("k") for _, h, _ in self.received]
