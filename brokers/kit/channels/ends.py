"""The two kinds of channel end a process holds: ``Home`` (the channel's queue, in the
process that made it) and ``Proxy`` (an end attached here to a channel homed elsewhere),
and ``to_socket``, the reader loop both use. ``hub.py`` owns them and the links; the
control records they exchange are listed there.

Invariants: a home counts ``queued + credit out + unacked <= cap``; each asyncio event is
cleared only by the one task that waits on it.
"""
from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any, Callable

import msgpack
from websockets.exceptions import ConnectionClosed, InvalidState

from brokers.kit.channels import table
from brokers.kit.channels.link import BINARY, CONTROL, TEXT, Link

if TYPE_CHECKING:  # pragma: no cover
    from brokers.kit.channels.hub import Hub

__all__ = ["BINARY", "CONTROL", "TEXT", "Home", "Item", "Proxy", "ctl", "to_socket"]

GOING_AWAY = 1001
BATCH_BYTES = 256 * 1024

Item = tuple[int, Any]
"""``(TEXT or BINARY, str | bytes)``: one frame, relayed as it came."""


def ctl(op: str, **fields: Any) -> bytes:
    return msgpack.packb({"op": op, **fields})


async def to_socket(ws: Any, queue: deque[Item], event: asyncio.Event, ended: Callable[[], bool],
                    written: Callable[[int], None]) -> None:
    """A reader's loop: write what is queued, as frames of their kind, until ``ended()`` and
    empty (then close) or the socket is gone. Whatever is queued at a wake-up leaves in one
    transport write of up to ``BATCH_BYTES`` (the frames stay whole and apart); ``written``
    is told how many, then the loop waits for the transport to drain. ``event`` is cleared
    only here (no other task waits on it)."""
    closed = asyncio.ensure_future(ws.wait_closed())
    closed.add_done_callback(lambda _: event.set())
    proto = ws.protocol
    try:
        while not closed.done():
            if queue:
                n = size = 0
                while queue and size < BATCH_BYTES:
                    kind, data = queue.popleft()
                    if isinstance(data, str):
                        data = data.encode()
                    (proto.send_text if kind == TEXT else proto.send_binary)(data)
                    n += 1
                    size += len(data)
                ws.send_data()
                written(n)
                await ws.drain()
            elif ended():
                await ws.close()
                return
            else:
                event.clear()
                await event.wait()
    except (ConnectionClosed, InvalidState):
        pass
    finally:
        closed.cancel()


class Home:
    """The relay of a channel this process is home to."""

    def __init__(self, hub: Hub, ch: table.Channel) -> None:
        self.hub, self.ch = hub, ch
        self.chb = table.id_bytes(ch.id)
        self.queue: deque[Item] = deque()
        self.credit_out = self.unacked = 0
        self.writer: Link | str | None = None
        self.reader: Link | str | None = None
        """None: not attached; "local": a socket of ours; a Link: a proxy on that peer."""
        self.writer_done = self.reader_gone = self.end_sent = False
        self.local_writer: Any = None
        self.on_writer: asyncio.Future | None = None
        """Set once a writer attaches (the HTTP worker waits for a response's claim)."""
        self.readable = asyncio.Event()
        """Set when the local reader may have something to do (an item, the end)."""
        self.writable = asyncio.Event()
        """Set when the local writer may read again (room, or the reader gone). Two events,
        each cleared only by its own task: one shared event cleared by both lost wake-ups."""

    def room(self) -> int:
        return self.ch.cap - len(self.queue) - self.credit_out - self.unacked

    def attached(self, direction: str, end: Link | str) -> None:
        """An end attached (a socket here, or a proxy on ``end``'s peer)."""
        if direction == "write":
            self.writer = end
            if self.on_writer is not None and not self.on_writer.done():
                self.on_writer.set_result(None)
        else:
            self.reader = end
        self.pump()

    def push(self, item: Item) -> None:
        if self.reader_gone:
            return
        self.queue.append(item)
        self.pump()

    def pump(self) -> None:
        """Move what can move: to a remote reader, credit to a remote writer, the end."""
        if isinstance(self.reader, Link):
            while self.queue:
                kind, data = self.queue.popleft()
                self.unacked += 1
                self.reader.put(self.chb, kind, data.encode() if isinstance(data, str) else data)
            if self.writer_done and not self.end_sent:
                self.end_sent = True
                self.reader.put(self.chb, CONTROL, ctl("end"))
        if isinstance(self.writer, Link) and not self.writer_done and not self.reader_gone:
            n = self.room()
            if n > 0 and (n >= (self.ch.cap + 1) // 2 or self.credit_out == 0):
                self.credit_out += n
                self.writer.put(self.chb, CONTROL, ctl("credit", n=n))
        self.readable.set()
        self.writable.set()

    def writer_ended(self) -> None:
        if not self.writer_done:
            self.writer_done = True
            self.hub.end_closed(self, "write")
            self.pump()

    def reader_ended(self) -> None:
        if self.reader_gone:
            return
        self.reader_gone = True
        self.queue.clear()
        self.hub.end_closed(self, "read")
        if isinstance(self.writer, Link) and not self.writer_done:
            self.writer.put(self.chb, CONTROL, ctl("gone"))
        elif self.local_writer is not None:
            asyncio.ensure_future(self.local_writer.close())
        self.readable.set()
        self.writable.set()

    def control(self, msg: dict) -> None:
        op = msg.get("op")
        if op == "ack":
            self.unacked -= int(msg.get("n", 0))
            self.pump()
        elif op == "end":
            self.writer_ended()
        elif op == "gone":
            self.reader_ended()

    def data(self, kind: int, data: bytes) -> None:
        self.credit_out -= 1
        self.push((kind, data))

    async def run_writer(self, ws: Any) -> None:
        self.local_writer = ws
        try:
            while not self.reader_gone:
                while self.room() <= 0 and not self.reader_gone:
                    self.writable.clear()
                    await self.writable.wait()
                if self.reader_gone:
                    break
                msg = await ws.recv()
                self.push((TEXT, msg) if isinstance(msg, str) else (BINARY, msg))
        except ConnectionClosed:
            pass
        finally:
            self.writer_ended()
            await ws.close()

    async def run_reader(self, ws: Any) -> None:
        try:
            await to_socket(ws, self.queue, self.readable, lambda: self.writer_done,
                            lambda n: self.pump())
        finally:
            self.reader_ended()

    def drop(self) -> None:
        """Freed by the sweep or a dead peer: close whatever is still attached here."""
        self.reader_ended()
        self.writer_ended()


class Proxy:
    """An end on this process of a channel whose home is another process."""

    def __init__(self, hub: Hub, link: Link, chb: bytes, direction: str) -> None:
        self.hub, self.link, self.chb, self.direction = hub, link, chb, direction
        self.credit = 0
        self.queue: deque[Item] = deque()
        self.ended = False
        """The home said ``end`` (reader) or ``gone`` (writer): close after the queue."""
        self.ws: Any = None
        self.changed = asyncio.Event()

    def control(self, msg: dict) -> None:
        op = msg.get("op")
        if op == "credit":
            self.credit += int(msg.get("n", 0))
        elif op in ("end", "gone"):
            self.ended = True
            if op == "gone" and self.ws is not None:
                asyncio.ensure_future(self.ws.close())
        self.changed.set()

    def data(self, kind: int, data: bytes) -> None:
        self.queue.append((kind, data))
        self.changed.set()

    def lost(self) -> None:
        """The home process died."""
        self.ended = True
        self.queue.clear()
        if self.ws is not None:
            asyncio.ensure_future(self.ws.close(GOING_AWAY, "channel home process gone"))
        self.changed.set()

    async def _wait(self) -> None:
        self.changed.clear()  # one task per proxy waits on it (its writer's or its reader's)
        await self.changed.wait()

    async def run_writer(self, ws: Any) -> None:
        self.ws = ws
        try:
            while not self.ended:
                if self.credit <= 0:
                    await self._wait()
                    continue
                msg = await ws.recv()
                self.credit -= 1
                if isinstance(msg, str):
                    self.link.put(self.chb, TEXT, msg.encode())
                else:
                    self.link.put(self.chb, BINARY, msg)
        except ConnectionClosed:
            pass
        finally:
            if not self.ended:
                self.link.put(self.chb, CONTROL, ctl("end"))
            self.hub.proxy_done(self)
            await ws.close()

    async def run_reader(self, ws: Any) -> None:
        self.ws = ws
        try:
            await to_socket(ws, self.queue, self.changed, lambda: self.ended,
                            lambda n: self.link.put(self.chb, CONTROL, ctl("ack", n=n)))
        finally:
            self.link.put(self.chb, CONTROL, ctl("gone"))
            self.hub.proxy_done(self)
