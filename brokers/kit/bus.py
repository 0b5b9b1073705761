"""The internal bus: one ZeroMQ ROUTER to receive, one DEALER per peer to send.

Each process binds ``ipc://<runtime_dir>/<name>.bus`` with a ROUTER socket and receives
``[sender, header, body]`` there. To send, it uses a DEALER connected to the peer's
endpoint whose routing id is its own name, so the peer's ROUTER sees who spoke. Messages
are one-way; a reply is just another message the other way. That keeps every socket
single-purpose: ROUTERs are only read, DEALERs only written, which is what makes the
drain-style loop integration (architecture.md §5) safe with ZeroMQ's edge-triggered FD.

One message per peer and loop pass: the frames a process sends a peer during one pass of
its loop go out as ONE ZeroMQ part, ``[u32 header length, u32 body length, header, body]``
records back to back (``pack_batch``), received as ``[sender, batch]``. Measured here
(pyzmq 27, 2 cores): a part costs ~2.7 µs to send and, through ``recv_multipart`` (a
``getsockopt(RCVMORE)`` per part), ~3 µs to receive; four frames as eight parts cost 50 µs
per batch sent and drained, as one part 19 µs. A batch is cut at ``BATCH_BYTES``.

Large bodies: measured here (2 cores, loopback), a 1 MiB body costs 332 µs through ipc
with copying sends, 154 µs with zero-copy sends (``copy=False``), and 535 µs through a
shared-memory file (write, hand over the name, read, unlink): the kernel copies either
way and Python cannot hand a WebSocket a view of shared memory. So a body from
``ZERO_COPY_BYTES`` up is not copied into the batch: its record says ``BIG`` and the body
follows the batch as a part of its own, sent zero-copy; no shared-memory detour is taken.

Peers on other engine hosts (issue 19): the ROUTER may also be bound on a TCP address
(``bind_tcp``), and a peer whose address is known (``dial``: a ``<host>/<node>`` name, or a
host id on the cluster's link) gets a DEALER connected over TCP instead of ipc, its routing
id ``remote_id`` (host-qualified, so it never meets a local node's on the ROUTER). A frame
for a ``<host>/<node>`` peer whose address is not known is dropped and logged; ``forget``
closes that peer's DEALER and whatever was queued for it (a dead host's next life must not
get what was meant for this one).

Invariants: ``send`` never blocks the loop (frames are flushed NOBLOCK once per loop
pass; a peer whose queue is full loses that batch, logged, and its callers learn of it
through the peer's RESET when it comes back); a peer that is down or restarting is reconnected by ZeroMQ, and messages
sent meanwhile wait in its DEALER queue up to the high-water mark.
"""
from __future__ import annotations

import asyncio
import logging
import os
import struct
from typing import Callable, Iterator

import zmq

from brokers.kit import frames

log = logging.getLogger(__name__)

FrameHandler = Callable[[str, dict, bytes], None]

SEND_HWM = 200_000
ZERO_COPY_BYTES = 64 * 1024
_MORE = int(zmq.NOBLOCK) | int(zmq.SNDMORE)
_LAST = int(zmq.NOBLOCK)
DRAIN_BATCH = 512
BATCH_BYTES = 256 * 1024
"""A batch is cut once its bodies reach this many bytes (bounds the joined copy)."""
BIG = 0xFFFFFFFF
"""Body length of a record whose body is the batch's next part."""
_REC = struct.Struct("<II")
_NB = int(zmq.NOBLOCK)
_RCVMORE = int(zmq.RCVMORE)


def pack_batch(parts: list[bytes]) -> Iterator[tuple[bytes, list[bytes], int]]:
    """``[header, body, header, body, ...]`` as bus messages: ``(batch, big bodies, frames)``."""
    rec = _REC.pack
    chunk: list[bytes] = []
    big: list[bytes] = []
    size = count = 0
    for i in range(0, len(parts), 2):
        header, body = parts[i], parts[i + 1]
        n = len(body)
        if n >= ZERO_COPY_BYTES:
            chunk += (rec(len(header), BIG), header)
            big.append(body)
        else:
            chunk += (rec(len(header), n), header, body)
        size += n
        count += 1
        if size >= BATCH_BYTES:
            yield b"".join(chunk), big, count
            chunk, big, size, count = [], [], 0, 0
    if chunk:
        yield b"".join(chunk), big, count


def endpoint(runtime_dir: str, name: str) -> str:
    """The ipc address of process ``name``."""
    return f"ipc://{os.path.join(runtime_dir, name)}.bus"


class Bus:
    """This process's bus socket set, driven by the asyncio loop it is started on."""

    def __init__(self, name: str, runtime_dir: str, on_frame: FrameHandler) -> None:
        self.name = name
        self.runtime_dir = runtime_dir
        self._on_frame = on_frame
        self._ctx = zmq.Context.instance()
        self._peers: dict[str, zmq.Socket] = {}
        self._inbox = self._ctx.socket(zmq.ROUTER)
        self._inbox.setsockopt(zmq.LINGER, 0)
        self._inbox.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self._inbox.setsockopt(zmq.RCVHWM, 0)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tick: asyncio.TimerHandle | None = None
        self._scheduled = False
        self._out: dict[str, list[bytes]] = {}
        self._flush_scheduled = False
        self.remote: dict[str, str] = {}
        """Peers on other hosts -> their TCP endpoint."""
        self.remote_id = name.encode()
        """Our routing id toward them (set by whoever knows this host's name)."""

    def start(self) -> None:
        """Bind (ipc, unless this bus has no runtime dir) and start reading on the running loop."""
        if self.runtime_dir:
            os.makedirs(self.runtime_dir, exist_ok=True)
            self._inbox.bind(endpoint(self.runtime_dir, self.name))
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._inbox.getsockopt(zmq.FD), self._drain)
        self._safety_tick()
        self._drain()

    def bind_tcp(self, address: str) -> str:
        """Also receive on ``address`` (``tcp://host:port``, port ``*``: a free one); the
        endpoint actually bound."""
        self._inbox.setsockopt(zmq.TCP_KEEPALIVE, 1)
        self._inbox.bind(address)
        return self._inbox.getsockopt(zmq.LAST_ENDPOINT).decode()

    def dial(self, peer: str, address: str) -> None:
        """Know (or change) a remote peer's address; a changed one drops the old connection."""
        if self.remote.get(peer) != address:
            self.forget(peer)
            self.remote[peer] = address

    def forget(self, peer: str) -> None:
        """Close ``peer``'s DEALER and drop what was queued for it."""
        self.remote.pop(peer, None)
        self._out.pop(peer, None)
        sock = self._peers.pop(peer, None)
        if sock is not None:
            sock.close(0)

    def knows(self, peer: str) -> bool:
        return peer in self.remote

    def close(self) -> None:
        """Stop reading and close every socket."""
        if self._loop is not None:
            self._loop.remove_reader(self._inbox.getsockopt(zmq.FD))
        if self._tick is not None:
            self._tick.cancel()
        self.flush()
        for sock in self._peers.values():
            sock.close(0)
        self._inbox.close(0)

    def send(self, peer: str, header: dict, body: bytes = b"") -> None:
        """Queue one frame for ``peer``. Frames of one loop pass go out together, as one
        message per peer: at 16 calls in flight the per-message cost of ZeroMQ (a wake-up
        of its I/O thread on each side) dominated the gateway-to-gateway hop."""
        batch = self._out.get(peer)
        if batch is None:
            batch = self._out[peer] = []
        batch.append(frames.pack(header))
        batch.append(body)
        if self._loop is None:  # not started: nothing to batch with
            self.flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Send every queued frame now; a peer whose queue is full loses this batch."""
        self._flush_scheduled = False
        out, self._out = self._out, {}
        for peer, parts in out.items():
            if not parts:
                continue
            sock = self._peers.get(peer) or self._connect(peer)
            if sock is None:
                log.warning("bus: %d frames for %s dropped (no address known)", len(parts) // 2, peer)
                continue
            messages = pack_batch(parts)
            for batch, big, count in messages:
                try:
                    # Plain int flags: pyzmq's enum arithmetic cost ~7 % of a broker loop.
                    # Only the first part can meet the high-water mark (a message is atomic).
                    sock.send(batch, _MORE if big else _LAST)
                    for i, body in enumerate(big):
                        sock.send(body, _MORE if i < len(big) - 1 else _LAST, copy=False)
                except zmq.Again:
                    lost = count + sum(n for _, _, n in messages)
                    log.error("bus queue to %s is full: %d frames dropped", peer, lost)
                    break

    def _connect(self, peer: str) -> zmq.Socket | None:
        address = self.remote.get(peer)
        if address is None and (not self.runtime_dir or "/" in peer):
            return None  # another host's peer whose address we do not know
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, SEND_HWM)
        if address is None:
            sock.setsockopt(zmq.ROUTING_ID, self.name.encode())
            sock.setsockopt(zmq.RECONNECT_IVL, 20)
            sock.setsockopt(zmq.RECONNECT_IVL_MAX, 200)
            sock.connect(endpoint(self.runtime_dir, peer))
        else:
            sock.setsockopt(zmq.ROUTING_ID, self.remote_id)
            sock.setsockopt(zmq.RECONNECT_IVL, 50)
            sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
            sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
            sock.connect(address)
        self._peers[peer] = sock
        return sock

    def _drain(self) -> None:
        # The FD is edge-triggered: read until EAGAIN, in batches so one busy peer
        # cannot starve the WebSocket side of the loop. Two plain recv calls per message:
        # recv_multipart asks RCVMORE after every part (~3 µs each).
        self._scheduled = False
        recv = self._inbox.recv
        for _ in range(DRAIN_BATCH):
            try:
                sender = recv(_NB)
            except zmq.Again:
                return
            try:
                batch = recv(_NB)  # a message arrives whole: its parts are all there
            except zmq.Again:
                log.warning("dropping an empty bus message from %r", sender)
                continue
            self._dispatch(sender.decode(errors="replace"), batch)
        if not self._scheduled and self._loop is not None:
            self._scheduled = True
            self._loop.call_soon(self._drain)

    def _dispatch(self, sender: str, batch: bytes) -> None:
        """Hand every record of one message to the frame handler, in order; a malformed
        message is logged and the rest of it dropped (the next message is intact)."""
        handler = self._on_frame
        inbox = self._inbox
        off, end = 0, len(batch)
        while off < end:
            if off + 8 > end:
                break
            hlen, blen = _REC.unpack_from(batch, off)
            raw = batch[off + 8:off + 8 + hlen]
            off += 8 + hlen
            if blen == BIG:
                if not inbox.getsockopt(_RCVMORE):
                    break
                body = inbox.recv(_NB)
            else:
                body = batch[off:off + blen]
                off += blen
            if off > end:
                break
            try:
                header = frames.unpack(raw)
            except ValueError as exc:
                log.warning("dropping frame from %r: %s", sender, exc)
                continue
            try:
                handler(sender, header, body)
            except Exception:
                log.exception("frame handler failed for kind %r", header.get("k"))
        else:
            if not inbox.getsockopt(_RCVMORE):  # ~1.6 µs: a stray part must not pass for a sender
                return
            log.warning("dropping parts of a bus message from %r that no record names", sender)
            self._skip_rest()
            return
        log.warning("dropping the rest of a malformed bus message from %r (%d bytes)", sender, end)
        self._skip_rest()

    def _skip_rest(self) -> None:
        while self._inbox.getsockopt(_RCVMORE):
            self._inbox.recv(_NB)

    def _safety_tick(self) -> None:
        # Belt and braces against a missed edge: look again every 200 ms.
        if self._loop is None:
            return
        self._drain()
        self._tick = self._loop.call_later(0.2, self._safety_tick)
