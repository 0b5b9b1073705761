"""Channel ends held by the home process itself: what the HTTP worker writes and reads.

The HTTP worker makes two channels per request (``hub.Hub.create``) and keeps one end of
each: it writes the request body into one (the worker reads it, through a gateway) and
reads the response from the other (the worker writes it). These ends sit on the channel's
``Home`` like a socket of the home process would, with the same bound: ``write`` waits
while ``buffer_size`` messages are held, ``get`` hands out messages in order.

Invariant: one task at a time uses an end (each waits on its own event of the ``Home``).
"""
from __future__ import annotations

import asyncio

from brokers.kit.channels.ends import BINARY, Home, Item

MAX_FRAME = 64 * 1024
"""Body bytes per binary frame written here (what the SDK writers send, and what an older
Python SDK's 1 MiB message limit always takes)."""


class LocalWriter:
    def __init__(self, home: Home) -> None:
        self.home = home
        home.writer = "local"
        home.ch.taken.add("write")

    async def write(self, kind: int, data: bytes | str) -> bool:
        """Queue one frame; False when the reader is gone (nothing more will be read)."""
        h = self.home
        while h.room() <= 0 and not h.reader_gone:
            h.writable.clear()
            await h.writable.wait()
        if h.reader_gone:
            return False
        h.push((kind, data))
        return True

    async def write_bytes(self, data: bytes) -> bool:
        """``data`` as binary frames of at most ``MAX_FRAME`` bytes."""
        for i in range(0, len(data), MAX_FRAME):
            if not await self.write(BINARY, data[i:i + MAX_FRAME]):
                return False
        return True

    def close(self) -> None:
        self.home.writer_ended()


class LocalReader:
    def __init__(self, home: Home) -> None:
        self.home = home
        home.reader = "local"
        home.ch.taken.add("read")

    @property
    def claimed(self) -> bool:
        """Whether a writer attached to the other end (on any process)."""
        return self.home.writer is not None

    def claim(self) -> asyncio.Future:
        """A future done once a writer attached (at once if one has)."""
        h = self.home
        if h.on_writer is None:
            h.on_writer = asyncio.get_running_loop().create_future()
            if h.writer is not None:
                h.on_writer.set_result(None)
        return h.on_writer

    async def get(self) -> Item | None:
        """The next frame, None once the writer closed and all was read."""
        h = self.home
        while not h.queue:
            if h.writer_done:
                return None
            h.readable.clear()
            await h.readable.wait()
        item = h.queue.popleft()
        h.pump()
        return item

    def close(self) -> None:
        self.home.reader_ended()
