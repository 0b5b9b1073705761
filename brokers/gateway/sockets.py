"""A worker's WebSocket connection to the gateway (``WorkerSocket``): its messages go to
the core straight from ``data_received``, and its transport's flow control goes to the
gateway (service.py), which owns the limits."""
from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Callable

from websockets.asyncio.server import ServerConnection
from websockets.frames import CloseCode, Frame, Opcode

from brokers.gateway.conns import Conn

if TYPE_CHECKING:
    from brokers.gateway.service import Gateway

log = logging.getLogger(__name__)

HELD_OVERHEAD = 1024
"""Bytes counted toward ``max_held_bytes`` per held message beyond its own: the core keeps
it parsed, and a small message's dict costs several times its bytes."""


def drop(data: bytes) -> None:
    """A refused or closed worker socket's deliverer: what it still sends is dropped."""


class WorkerSocket(ServerConnection):
    """A worker's connection: its messages go to the core straight from ``data_received``,
    and it reports its transport's flow control to the gateway (``pause_writing``: over
    the budget; ``resume_writing``: drained to half of it).

    Why not ``await ws.recv()`` per message: that wakes the handler task through
    websockets' assembler queue for every message, the largest Python cost of a call
    relayed by the gateway after the bus (the SDK's transport made the same change, for
    the same reason). A worker socket (``direct``, decided at the upgrade: not a channel,
    not ``/otel``) hands each complete data message to ``deliver``; messages that arrive
    before ``handle`` set it (the handshake's read, the auth call) wait in ``early``.
    Fragmented messages are joined here; the handshake, pings, pongs and the close stay
    websockets'."""

    def __init__(self, gateway: Gateway, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gateway = gateway
        self.conn: Conn | None = None
        """The core's state of this worker, once ``handle`` opened it (None on /otel)."""
        self.stall: asyncio.TimerHandle | None = None
        self.reading_paused = False
        """Not read while more than twice the budget waits to be sent to it."""
        self.summary_at = 0.0
        self.channel: tuple[str, Any, str] | None = None
        """A channel socket's admission (verdict, end, dir), set before the upgrade."""
        self.direct = False
        self.deliver: Callable[[bytes], None] | None = None
        self.early: list[bytes] = []
        self.early_bytes = 0
        self._parts: list[bytes] = []

    def process_event(self, event: Any) -> None:
        if not self.direct or not isinstance(event, Frame):
            super().process_event(event)
            return
        op = event.opcode
        if op is Opcode.TEXT or op is Opcode.BINARY:
            if not event.fin:
                self._parts = [event.data]
                return
            data = event.data
        elif op is Opcode.CONT:
            self._parts.append(event.data)
            if not event.fin:
                return
            data, self._parts = b"".join(self._parts), []
        else:
            super().process_event(event)  # PING / PONG / CLOSE
            return
        if self.deliver is not None:
            self.deliver(data)
            return
        self.early.append(data)
        self.early_bytes += len(data) + HELD_OVERHEAD
        if self.early_bytes > self.gateway.max_held:  # flooding during the auth call
            self.early.clear()
            self.refuse("before the connection was accepted")

    def refuse(self, when: str) -> None:
        """Close with 1008 for sending more than ``max_held_bytes`` ``when``; what it sends
        from now on is dropped."""
        log.warning("closing worker %s (1008): over %d bytes sent %s (max_held_bytes)",
                    self.conn.id if self.conn else self.remote_address, self.gateway.max_held, when)
        self.deliver = drop
        asyncio.ensure_future(self.close(CloseCode.POLICY_VIOLATION, f"too much sent {when}"))

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.channel is None:  # a channel's reader may stall: back-pressure, not a fault
            self.gateway.over_budget(self)

    def resume_writing(self) -> None:
        super().resume_writing()
        self.gateway.drained(self)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.deliver = drop
        if self.stall is not None:
            self.stall.cancel()
            self.stall = None
