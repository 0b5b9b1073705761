"""The two channels of every HTTP request (workers-b §2.4-§2.5), homed in the HTTP process.

``HubStreams.open()`` makes a request-body channel (this process writes the body into it,
the handler reads ``request_body``) and a response channel (the handler may write
``response``, this process reads it). Both live in this process's channel hub, so the
bytes go straight between the HTTP socket and the worker's channel socket on whichever
gateway it attached.

The response channel's text frames before the first binary chunk are control messages
(``set_status`` 100..599, ``set_headers`` with string values, later ones overwrite); the
response starts at the first binary chunk or when the channel closes; binary chunks are
written to the client as they come (chunked transfer encoding), so an SSE stream reaches
the client event by event.

Invariants: the body is fed by a task of its own (a body larger than the channel's buffer
waits for its reader, never for the pipeline); ``close`` frees both channels (one whose
other end never attached at once, not after the 5 min sweep) and stops the feeder.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator

import orjson

from brokers.kit.channels.ends import BINARY
from brokers.kit.channels.hub import Hub
from brokers.kit.channels.local import LocalReader, LocalWriter
from brokers.kit.channels.table import refs

log = logging.getLogger(__name__)


class HubStreams:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def open(self) -> tuple[dict, dict, RequestIO]:
        body, response = self.hub.create_home(None), self.hub.create_home(None)
        io = RequestIO(self.hub, body, response)
        return refs(body.ch.id, body.ch.key)["reader"], refs(response.ch.id, response.ch.key)["writer"], io


class RequestIO:
    def __init__(self, hub: Hub, body: Any, response: Any) -> None:
        self.hub = hub
        self._homes = (body, response)
        self.body = LocalWriter(body)
        self.response = LocalReader(response)
        self._feeder: asyncio.Task | None = None
        self.status = 200
        self.headers: dict[str, str] = {}
        self._first: bytes | None = None

    # ---- the request body ----------------------------------------------------------------

    async def feed_body(self, chunks: list[bytes]) -> None:
        """Write an already-read body (a JSON request's) and close; never waits for the reader."""
        async def listed() -> AsyncIterator[bytes]:
            for chunk in chunks:
                yield chunk
        self.stream_body(listed())

    def no_body(self) -> None:
        """A request without a body: its channel is closed at once (no task)."""
        self.body.close()

    def stream_body(self, chunks: AsyncIterator[bytes]) -> None:
        """Write the body as it arrives from the socket, then close."""
        async def feed() -> None:
            try:
                async for chunk in chunks:
                    if not await self.body.write_bytes(chunk):
                        break
            finally:
                self.body.close()
        self._feeder = asyncio.ensure_future(feed())

    # ---- the response --------------------------------------------------------------------

    @property
    def claimed(self) -> bool:
        return self.response.claimed

    def claim(self) -> asyncio.Future:
        return self.response.claim()

    async def response_started(self) -> bool:
        """Read control messages until the first binary chunk or the channel's close."""
        while True:
            item = await self.response.get()
            if item is None:
                return True
            kind, data = item
            if kind == BINARY:
                self._first = data
                return True
            self._control(data)

    def _control(self, data: bytes | str) -> None:
        try:
            msg = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(msg, dict):
            return
        if msg.get("type") == "set_status":
            code = msg.get("status_code")
            if isinstance(code, int) and not isinstance(code, bool) and 100 <= code <= 599:
                self.status = code
        elif msg.get("type") == "set_headers" and isinstance(msg.get("headers"), dict):
            self.headers.update({k: v for k, v in msg["headers"].items() if isinstance(v, str)})

    async def stream_response(self, out: Any, extra: list[tuple[bytes, bytes]]) -> None:
        """Once ``response_started``: the head, then every binary chunk as it comes."""
        headers = []
        for name, value in self.headers.items():
            try:
                headers.append((name.encode("latin-1"), value.encode("latin-1")))
            except UnicodeEncodeError:
                log.debug("response header %r dropped: not latin-1", name)
        out.start(self.status, [h for h in headers if b"\r" not in h[1] and b"\n" not in h[1]
                                and b"\r" not in h[0] and b"\n" not in h[0]] + extra)
        if self._first is not None:
            await out.write(self._first)
        while True:
            item = await self.response.get()
            if item is None:
                break
            if item[0] == BINARY:
                await out.write(item[1])
        out.end()

    def close(self) -> None:
        if self._feeder is not None and not self._feeder.done():
            self._feeder.cancel()
        self.response.close()
        for home in self._homes:
            self.hub.release(home)
