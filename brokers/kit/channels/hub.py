"""A process's channel sockets: create, admit, relay; across processes through ``link.py``.

Every process that serves channel sockets (the gateways, the HTTP worker) has one ``Hub``.
A channel's queue lives in its home process (``table.py``): ``Home`` holds at most
``buffer_size`` messages between the writer's socket and the reader's, counting those in
flight to and from other processes. An end attached on another process is a proxy there
(``WriterProxy``, ``ReaderProxy``) that talks to the home through the link between the
two processes: the home grants a remote writer ``credit`` for as many messages as it has
room for, and a remote reader ``ack``s what it has written to its socket. So a stalled
reader stops the writer's socket wherever the two sit, and nothing grows without bound.

Control records on a link (msgpack maps, in order with the data of their channel):

    attach  {q, key, dir}   proxy -> home   may this end attach? (before the upgrade)
    verdict {q, v}          home -> proxy   ``table.OK`` / ``NOT_FOUND`` / ``TAKEN``
    credit  {n}             home -> writer proxy   read n more messages from the socket
    ack     {n}             reader proxy -> home   n messages written to the socket
    end     {}              writer proxy -> home: the writer closed;
                            home -> reader proxy: close the reader (all data sent before)
    gone    {}              reader proxy -> home: the reader's socket is gone;
                            home -> writer proxy: close the writer

Invariants: a home counts ``queued + credit out + unacked <= cap``; a proxy exists only
after an ``OK`` verdict (the verdict precedes its channel's other records on the ring);
a dead peer process (``Link.peer_alive``, checked every ``WATCH_S``) closes every end that
depended on it within a second.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from typing import Any, Callable
from urllib.parse import parse_qs

import msgpack
from websockets.exceptions import ConnectionClosed, InvalidState

from brokers.kit.channels import segment, table
from brokers.kit.channels.link import BINARY, CONTROL, TEXT, Link

log = logging.getLogger(__name__)

PREFIX = "/ws/channels/"
WATCH_S = 0.25
ATTACH_WAIT_S = 5.0
GOING_AWAY = 1001
BATCH_BYTES = 256 * 1024

Item = tuple[int, Any]
"""``(TEXT or BINARY, str | bytes)``: one frame, relayed as it came."""


def _ctl(op: str, **fields: Any) -> bytes:
    return msgpack.packb({"op": op, **fields})


def parse_path(path: str) -> tuple[str, str, str] | None:
    """``(channel id, key, dir)`` of a channel socket's request path, None if not one."""
    base, _, query = path.partition("?")
    if not base.startswith(PREFIX):
        return None
    qs = parse_qs(query)
    return (base[len(PREFIX):].rstrip("/"), (qs.get("key") or [""])[-1], (qs.get("dir") or [""])[-1])


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
                self.reader.put(self.chb, CONTROL, _ctl("end"))
        if isinstance(self.writer, Link) and not self.writer_done and not self.reader_gone:
            n = self.room()
            if n > 0 and (n >= (self.ch.cap + 1) // 2 or self.credit_out == 0):
                self.credit_out += n
                self.writer.put(self.chb, CONTROL, _ctl("credit", n=n))
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
            self.writer.put(self.chb, CONTROL, _ctl("gone"))
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
                self.link.put(self.chb, CONTROL, _ctl("end"))
            self.hub.proxy_done(self)
            await ws.close()

    async def run_reader(self, ws: Any) -> None:
        self.ws = ws
        try:
            await to_socket(ws, self.queue, self.changed, lambda: self.ended,
                            lambda n: self.link.put(self.chb, CONTROL, _ctl("ack", n=n)))
        finally:
            self.link.put(self.chb, CONTROL, _ctl("gone"))
            self.hub.proxy_done(self)


class Hub:
    """The channels of one process: its homes, its proxies and its links."""

    def __init__(self, process: str, peers: list[str], runtime_dir: str,
                 send: Callable[[str, dict], None]) -> None:
        self.process = process
        self.peers = [p for p in peers if p != process]
        self.table = table.Table(process)
        self.tag = segment.engine_tag(runtime_dir)
        self._send = send
        self.homes: dict[bytes, Home] = {}
        self.proxies: dict[tuple[bytes, str], Proxy] = {}
        self.links: dict[str, Link] = {}
        self._asks: dict[int, tuple[asyncio.Future, Link, bytes, str]] = {}
        self._q = itertools.count(1)
        self._timers: list[asyncio.Task] = []

    def start(self) -> None:
        self._timers = [asyncio.ensure_future(self._watch()), asyncio.ensure_future(self._sweep())]

    def close(self) -> None:
        for t in self._timers:
            t.cancel()
        for link in self.links.values():
            link.close()
        self.links.clear()

    # ---- create and admit ----------------------------------------------------------------

    def create(self, buffer_size: Any) -> dict:
        """``engine::channels::create``: a channel homed here, its refs."""
        home = self.create_home(buffer_size)
        return table.refs(home.ch.id, home.ch.key)

    def create_home(self, buffer_size: Any) -> Home:
        ch = self.table.create(buffer_size, asyncio.get_running_loop().time())
        home = Home(self, ch)
        self.homes[home.chb] = home
        return home

    def release(self, home: Home) -> None:
        """The holder of this home's local end is done: a channel whose other end never
        attached is freed now, not by the 5 min sweep (an HTTP request's unread body)."""
        if len(home.ch.taken) < 2:
            self.table.free(home.ch.id)
            home.drop()
            self.homes.pop(home.chb, None)

    async def admit(self, channel_id: str, key: str, direction: str) -> tuple[str, Any]:
        """The verdict on an end that wants to attach here, and what serves it if ``OK``."""
        try:
            chb = table.id_bytes(channel_id)
        except ValueError:
            return table.NOT_FOUND, None
        if direction not in table.DIRECTIONS:
            return table.NOT_FOUND, None
        home = self.homes.get(chb)
        if home is not None:
            verdict, _ = self.table.take(channel_id, key, direction)
            if verdict == table.OK:
                home.attached(direction, "local")
            return verdict, home
        peer = table.home_of(channel_id, self.peers)
        if peer is None:
            return table.NOT_FOUND, None
        link = self.link(peer)
        q = next(self._q)
        fut = asyncio.get_running_loop().create_future()
        self._asks[q] = (fut, link, chb, direction)
        link.put(chb, CONTROL, _ctl("attach", q=q, key=key, dir=direction))
        try:
            return await asyncio.wait_for(fut, ATTACH_WAIT_S)
        except asyncio.TimeoutError:
            log.warning("channel %s: its home %s did not answer an attach", channel_id, peer)
            return table.NOT_FOUND, None
        finally:
            self._asks.pop(q, None)

    async def serve(self, ws: Any, end: Any, direction: str) -> None:
        """Relay for an admitted end until it closes."""
        if direction == "write":
            await end.run_writer(ws)
        else:
            await end.run_reader(ws)

    # ---- bookkeeping ---------------------------------------------------------------------

    def end_closed(self, home: Home, direction: str) -> None:
        if home.ch.id not in self.table.channels:
            self.homes.pop(home.chb, None)
        elif self.table.end_closed(home.ch.id, direction):
            self.homes.pop(home.chb, None)

    def proxy_done(self, proxy: Proxy) -> None:
        self.proxies.pop((proxy.chb, proxy.direction), None)

    def link(self, peer: str) -> Link:
        link = self.links.get(peer)
        if link is None:
            link = self.links[peer] = Link(peer, self.tag, self._send_notice,
                                           lambda chb, kind, data, p=peer: self._deliver(p, chb, kind, data))
        return link

    def _send_notice(self, peer: str, header: dict) -> None:
        self._send(peer, header)

    # ---- the bus and the links -----------------------------------------------------------

    def on_notice(self, sender: str, header: dict) -> None:
        link = self.links.get(sender)
        if header.get("op") == "ring":
            pid = header.get("pid")
            if link is not None and link.peer_pid not in (None, pid):
                self._lost(sender)  # restarted: what went through the old one is gone
                link = None
            if link is None:
                link = self.link(sender)
        if link is not None:
            link.on_notice(header)

    def _deliver(self, peer: str, chb: bytes, kind: int, data: bytes) -> None:
        link = self.links[peer]
        if kind != CONTROL:
            end = self.homes.get(chb) or self.proxies.get((chb, "read"))
            if end is not None:
                end.data(kind, data)
            return
        msg = msgpack.unpackb(data)
        op = msg.get("op")
        if op == "attach":
            self._attach_asked(link, chb, msg)
        elif op == "verdict":
            ask = self._asks.get(msg.get("q"))
            if ask is None:
                return
            fut, link, chb, direction = ask
            proxy = None
            if msg.get("v") == table.OK:
                proxy = self.proxies[(chb, direction)] = Proxy(self, link, chb, direction)
            if not fut.done():
                fut.set_result((msg.get("v"), proxy))
        elif op in ("credit", "gone") and (chb, "write") in self.proxies:
            self.proxies[(chb, "write")].control(msg)
        elif op == "end" and (chb, "read") in self.proxies:
            self.proxies[(chb, "read")].control(msg)
        elif chb in self.homes:
            self.homes[chb].control(msg)

    def _attach_asked(self, link: Link, chb: bytes, msg: dict) -> None:
        home = self.homes.get(chb)
        direction = msg.get("dir")
        if home is None:
            verdict = table.NOT_FOUND
        else:
            verdict, _ = self.table.take(home.ch.id, str(msg.get("key")), str(direction))
        link.put(chb, CONTROL, _ctl("verdict", q=msg.get("q"), v=verdict))
        if verdict == table.OK:
            home.attached(direction, link)

    def _lost(self, peer: str) -> None:
        """Peer ``peer`` died or restarted: close every end that went through it."""
        link = self.links.pop(peer, None)
        if link is None:
            return
        log.info("channels: peer %s gone; closing its channel ends", peer)
        for home in list(self.homes.values()):
            if home.reader is link:
                home.reader_ended()
            if home.writer is link:
                home.writer_ended()
        for proxy in list(self.proxies.values()):
            if proxy.link is link:
                proxy.lost()
        for fut, l, _, _ in list(self._asks.values()):
            if l is link and not fut.done():
                fut.set_result((table.NOT_FOUND, None))
        link.close()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_S)
            for peer, link in list(self.links.items()):
                if not link.peer_alive():
                    self._lost(peer)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(table.SWEEP_EVERY_S)
            for ch in self.table.sweep(asyncio.get_running_loop().time()):
                home = self.homes.pop(table.id_bytes(ch.id), None)
                if home is not None:
                    home.drop()
