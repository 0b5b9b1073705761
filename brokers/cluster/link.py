"""The cross-host link: the bus's frames over ZeroMQ TCP between engine hosts.

The same shape as the ipc bus (``brokers.kit.bus``): one ROUTER bound on this host's
address receives ``[sender host, header, body]``, one DEALER per other host (routing id:
this host's id) sends, frames of one loop pass batched per peer. Only the addresses
differ: a peer is dialled at the address its directory entry advertises.

Invariants: a peer is dialled only once its address is known (a frame for an unknown peer
is dropped and reported as False); ``forget`` closes a peer's DEALER and with it whatever
was queued for it, so that nothing meant for a dead host's life reaches its next one.
"""
from __future__ import annotations

import asyncio
import logging

import zmq

from brokers.kit.bus import Bus, FrameHandler

log = logging.getLogger(__name__)


class Link(Bus):
    """This host's end of the cluster's TCP mesh."""

    def __init__(self, host: str, bind: str, on_frame: FrameHandler) -> None:
        super().__init__(host, "", on_frame)
        self._bind = bind
        self.addrs: dict[str, str] = {}
        self.address: str | None = None
        """The endpoint actually bound (``tcp://host:port``), known after ``start``."""
        self._inbox.setsockopt(zmq.TCP_KEEPALIVE, 1)

    def start(self) -> None:
        self._inbox.bind(self._bind)
        self.address = self._inbox.getsockopt(zmq.LAST_ENDPOINT).decode()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._inbox.getsockopt(zmq.FD), self._drain)
        self._safety_tick()
        self._drain()

    def dial(self, peer: str, addr: str) -> None:
        """Know (or change) ``peer``'s address; a changed one drops the old connection."""
        if self.addrs.get(peer) != addr:
            self.forget(peer)
            self.addrs[peer] = addr

    def forget(self, peer: str) -> None:
        self.addrs.pop(peer, None)
        self._out.pop(peer, None)
        sock = self._peers.pop(peer, None)
        if sock is not None:
            sock.close(0)

    def knows(self, peer: str) -> bool:
        return peer in self.addrs

    def flush(self) -> None:
        for peer in [p for p in self._out if p not in self.addrs]:
            log.warning("cluster: %d frames for host %s dropped (no address)", len(self._out.pop(peer)) // 2, peer)
        super().flush()

    def _connect(self, peer: str) -> zmq.Socket:
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.ROUTING_ID, self.name.encode())
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 200_000)
        sock.setsockopt(zmq.RECONNECT_IVL, 50)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
        sock.connect(self.addrs[peer])
        self._peers[peer] = sock
        return sock
