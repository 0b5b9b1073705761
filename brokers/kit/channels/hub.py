"""A process's channel sockets: create, admit, relay; across processes through ``link.py``.

Every process that serves channel sockets (the gateways, the HTTP worker) has one ``Hub``.
A channel's queue lives in its home process (``table.py``): ``Home`` (``ends.py``) holds at most
``buffer_size`` messages between the writer's socket and the reader's, counting those in
flight to and from other processes. An end attached on another process is a proxy there
(``Proxy``, ``ends.py``) that talks to the home through the link between the
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
from typing import Any, Callable
from urllib.parse import parse_qs

import msgpack

from brokers.kit.channels import segment, table
from brokers.kit.channels.ends import CONTROL, Home, Proxy, ctl
from brokers.kit.channels.link import Link

log = logging.getLogger(__name__)

PREFIX = "/ws/channels/"
WATCH_S = 0.25
ATTACH_WAIT_S = 5.0
def parse_path(path: str) -> tuple[str, str, str] | None:
    """``(channel id, key, dir)`` of a channel socket's request path, None if not one."""
    base, _, query = path.partition("?")
    if not base.startswith(PREFIX):
        return None
    qs = parse_qs(query)
    return (base[len(PREFIX):].rstrip("/"), (qs.get("key") or [""])[-1], (qs.get("dir") or [""])[-1])


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
        link.put(chb, CONTROL, ctl("attach", q=q, key=key, dir=direction))
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
            link = self.links[peer] = Link(peer, self.tag, self._send,
                                           lambda chb, kind, data, p=peer: self._deliver(p, chb, kind, data))
        return link

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
        link.put(chb, CONTROL, ctl("verdict", q=msg.get("q"), v=verdict))
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
