"""A pair of rings between this process and one peer: the channel bytes between processes.

Each process that serves channel sockets keeps one ``Link`` per peer process it shares a
channel with. The link's outgoing ring is a ``/dev/shm`` segment this process creates (its
name travels to the peer once, in a ``ring`` notice on the bus); the incoming ring is the
peer's, mapped when its notice comes. Records carry a channel's id (16 bytes), a kind and
the bytes; on the bus go only the small wake-up notices of ``ring.py`` (``wake``: records
are waiting for an idle reader; ``room``: a full ring has room again).

Records that do not fit wait in ``backlog``, in order, until the peer's ``room``. What is
in flight per channel is bounded by the channel's credits (``hub.py``), so the backlog is.

A dead peer (its pid gone: checked by the hub's timer, as a kill -9 says nothing on the
bus) or a restarted one (a ``ring`` notice with another pid) ends the link: the hub closes
every end that went through it.
"""
from __future__ import annotations

import itertools
import logging
import os
from collections import deque
from typing import Callable

from brokers.kit import frames
from brokers.kit.channels import ring, segment

log = logging.getLogger(__name__)

RING_BYTES = 4 * 1024 * 1024
TEXT, BINARY, CONTROL = 1, 2, 3
"""Record kinds: a text frame, a binary frame, a msgpack control map (``hub.py``)."""

Deliver = Callable[[bytes, int, bytes], None]
"""``(channel id bytes, kind, data)``: one whole message from the peer."""

_counter = itertools.count(1)


class Link:
    def __init__(self, peer: str, tag: str, send: Callable[[str, dict], None],
                 deliver: Deliver) -> None:
        self.peer = peer
        self.peer_pid: int | None = None
        self._send = send
        self._deliver = deliver
        seg_name = segment.segment_name(tag, os.getpid(), next(_counter))
        self.out_seg = segment.create(seg_name, ring.segment_size(RING_BYTES))
        ring.init(self.out_seg.map, RING_BYTES)
        self.out = ring.RingWriter(self.out_seg.map)
        self.inp: ring.RingReader | None = None
        self.in_seg: segment.Segment | None = None
        self.backlog: deque[tuple[bytes, int, int, memoryview]] = deque()
        self._parts: dict[bytes, list[bytes]] = {}
        self.announced = False
        self.closed = False
        """After ``close`` (the peer died): what ends still send is dropped."""

    # ---- sending -------------------------------------------------------------------------

    def announce(self) -> None:
        if not self.announced:
            self.announced = True
            self._send(self.peer, frames.chan("ring", name=self.out_seg.name, pid=os.getpid()))

    def put(self, channel: bytes, kind: int, data: bytes) -> None:
        """Queue one whole message for the peer (split into records of ``max_record``)."""
        if self.closed:
            return
        self.announce()
        mv = memoryview(data)
        step = self.out.max_record
        n = len(mv)
        if n <= step:
            parts = [(0, mv)]
        else:
            parts = [(ring.MORE if i + step < n else 0, mv[i:i + step]) for i in range(0, n, step)]
        queued = bool(self.backlog)
        for flags, part in parts:
            if queued or not self.out.put(channel, kind, part, flags):
                queued = True
                self.backlog.append((channel, kind, flags, part))
        if queued:
            self._stalled()
        elif self.out.wanted():
            self._send(self.peer, frames.chan("wake"))

    def _stalled(self) -> None:
        if self.closed:
            return
        while self.backlog:
            channel, kind, flags, part = self.backlog[0]
            if self.out.put(channel, kind, part, flags):
                self.backlog.popleft()
                continue
            if self.out.stall():  # the peer will send ``room`` once it has read some
                break
        if self.out.wanted():
            self._send(self.peer, frames.chan("wake"))

    # ---- receiving -----------------------------------------------------------------------

    def on_notice(self, header: dict) -> None:
        op = header.get("op")
        if op == "ring":
            self.peer_pid = header.get("pid")
            self._attach(header["name"])
        elif op == "wake":
            self.drain()
        elif op == "room":
            self._stalled()

    def _attach(self, name: str) -> None:
        if self.closed:
            return
        self._close_in()
        try:
            self.in_seg = segment.attach(name)
        except (OSError, ValueError) as exc:  # the peer died before we could map it
            log.warning("channels: cannot map the ring %r of %s: %s", name, self.peer, exc)
            return
        self.inp = ring.RingReader(self.in_seg.map)
        self.drain()

    def drain(self) -> None:
        """Read every waiting record, then go idle (a ``wake`` notice brings us back)."""
        inp = None if self.closed else self.inp
        if inp is None:
            return
        while True:
            rec = inp.get()
            while rec is not None:
                channel, kind, flags, data = rec
                if flags & ring.MORE:
                    self._parts.setdefault(channel, []).append(data)
                else:
                    parts = self._parts.pop(channel, None)
                    if parts is not None:
                        parts.append(data)
                        data = b"".join(parts)
                    self._deliver(channel, kind, data)
                rec = inp.get()
            if inp.producer_waits():
                self._send(self.peer, frames.chan("room"))
            if inp.idle():
                return

    # ---- end -----------------------------------------------------------------------------

    def _close_in(self) -> None:
        if self.inp is not None:
            self.inp.release()
            self.inp = None
        if self.in_seg is not None:
            self.in_seg.close()
            self.in_seg = None
        self._parts.clear()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._close_in()
        self.backlog.clear()
        self.out.release()
        self.out_seg.close()
        segment.unlink(self.out_seg.name)  # gone already if the peer mapped it

    def peer_alive(self) -> bool:
        if self.peer_pid is None:
            return True
        try:
            os.kill(self.peer_pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return _not_zombie(self.peer_pid)


def _not_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True
