"""HTTP/1.1 on asyncio with the ``httptools`` parser: the HTTP worker's socket shell.

Why httptools (uvicorn's parser) and a bare ``asyncio.Protocol``: measured here with wrk
(1 thread, 16 connections, keep-alive, uvloop, a 12-byte JSON answer), a protocol over
httptools served 35-38k requests/s, aiohttp's low-level server 9.5-10.5k/s and an
aiohttp application 9.8k/s: the parser in C and no per-request framework objects leave
the engine's own work as the cost. We need little of a framework: routing is ours, and
bodies stream into channels.

One ``Connection`` per socket: requests are parsed as they arrive and answered strictly
in order (HTTP/1.1 pipelining); one task per connection runs them. ``app(request,
responder)`` answers through the ``Responder``: ``send(reply)`` for a whole response, or
``start`` / ``write`` / ``end`` for a streamed one (chunked transfer encoding).

Invariants: ``TCP_NODELAY`` on every socket (the reference stalled 40 ms at 8+
concurrent requests); a malformed request gets one 400 and the connection is closed; a
body over ``max_body`` gets 413 and the connection is closed; a request body is held at
most ``BODY_BUFFER`` bytes ahead of its reader (reading from the socket pauses, so a
slow consumer bounds memory); on ``close()`` idle connections close at once and busy ones
after their current response (a graceful drain).
"""
from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from http import HTTPStatus
from typing import Awaitable, Callable

import httptools

from brokers.http.response import INTERNAL_ERROR, Reply, error

log = logging.getLogger(__name__)

BODY_BUFFER = 1 << 20
"""Bytes of a request body read ahead of the function consuming it."""

_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}


class Request:
    """One parsed request; its body arrives through ``chunks()`` (or ``read()``)."""

    __slots__ = ("method", "path", "query", "headers", "raw_headers", "keep_alive", "_conn",
                 "_chunks", "_size", "_done", "_wake", "too_large")

    def __init__(self, conn: "Connection", method: str) -> None:
        self.method = method
        self.path = ""
        self.query: bytes | None = None
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.headers: dict[bytes, bytes] = {}
        """Lower-case name -> value (last wins)."""
        self.keep_alive = True
        self._conn = conn
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._done = False
        self._wake = asyncio.Event()
        self.too_large = False

    def _feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._size += len(chunk)
        self._wake.set()
        if self._size > BODY_BUFFER:
            self._conn.transport.pause_reading()

    def _end(self) -> None:
        self._done = True
        self._wake.set()

    async def chunks(self):
        """The body as it arrives (back-pressure: the socket is read as it is consumed)."""
        while True:
            while self._chunks:
                chunk = self._chunks.popleft()
                self._size -= len(chunk)
                if self._size <= BODY_BUFFER // 2:
                    self._conn.resume()
                yield chunk
            if self._done:
                return
            self._wake.clear()
            await self._wake.wait()

    def at_end(self) -> bool:
        """Whether the whole body has arrived and nothing of it is left to read."""
        return self._done and not self._chunks

    async def read(self) -> bytes:
        return b"".join([c async for c in self.chunks()])


class Responder:
    """How the app answers one request."""

    def __init__(self, conn: "Connection", request: Request) -> None:
        self._conn = conn
        self._request = request
        self.started = False
        self._chunked = False
        self.finished = False
        self.status = 0
        """The response's status code once it started (the request's server span)."""

    def _head(self, status: int, headers: list[tuple[bytes, bytes]], length: int | None) -> bytes:
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Unknown"))]
        lines += [name + b": " + value + b"\r\n" for name, value in headers]
        if length is not None:
            lines.append(b"content-length: %d\r\n" % length)
        elif status >= 200 and status not in (204, 304):
            lines.append(b"transfer-encoding: chunked\r\n")
            self._chunked = True
        if not self._request.keep_alive:
            lines.append(b"connection: close\r\n")
        lines.append(b"\r\n")
        return b"".join(lines)

    def send(self, reply: Reply) -> None:
        """A whole response (Content-Length)."""
        if self.started:
            return
        self.started = self.finished = True
        self.status = reply.status
        body = b"" if self._request.method == "HEAD" else reply.body
        self._conn.write(self._head(reply.status, reply.headers, len(reply.body)) + body)

    def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        """Begin a streamed response (chunked)."""
        if not self.started:
            self.started = True
            self.status = status
            self._conn.write(self._head(status, headers, None))

    async def write(self, chunk: bytes) -> None:
        if not chunk or self._request.method == "HEAD":
            return
        self._conn.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if self._chunked else chunk)
        await self._conn.drained()

    def end(self) -> None:
        if self.started and not self.finished:
            self.finished = True
            if self._chunked and self._request.method != "HEAD":
                self._conn.write(b"0\r\n\r\n")


App = Callable[[Request, Responder], Awaitable[None]]


class Connection(asyncio.Protocol):
    """One client socket."""

    def __init__(self, server: "HttpServer") -> None:
        self.server = server
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._req: Request | None = None
        self._queue: asyncio.Queue[Request | None] = asyncio.Queue()
        self._task: asyncio.Task | None = None
        self._paused_by_body = False
        self._can_write = asyncio.Event()
        self._can_write.set()
        self.busy = False
        self._closing = False

    # ---- asyncio ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.connections.add(self)
        self._task = asyncio.ensure_future(self._run())

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self._closing = True
        self._can_write.set()
        if self._req is not None:
            self._req._end()
        self._queue.put_nowait(None)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, b"upgrade is not supported here")
        except httptools.HttpParserError as exc:
            self._fail(400, str(exc).encode()[:200])

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    # ---- httptools callbacks --------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = b""
        self._req = Request(self, "")  # the parser knows the method once the headers are in

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._req is not None
        self._req.raw_headers.append((name, value))
        self._req.headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        req = self._req
        assert req is not None
        req.method = self.parser.get_method().decode()
        url = httptools.parse_url(self._url)
        req.path = url.path.decode("latin-1")
        req.query = url.query
        req.keep_alive = self.parser.should_keep_alive()
        limit = self.server.max_body
        length = req.headers.get(b"content-length")
        if limit is not None and length is not None and length.isdigit() and int(length) > limit:
            req.too_large = True
        self._queue.put_nowait(req)

    def on_body(self, body: bytes) -> None:
        req = self._req
        if req is None:
            return
        limit = self.server.max_body
        if limit is not None and req._size + len(body) > limit:
            req.too_large = True
            req._end()
            return
        req._feed(body)

    def on_message_complete(self) -> None:
        if self._req is not None:
            self._req._end()
            self._req = None

    # ---- answering ------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            req = await self._queue.get()
            if req is None or self._closing:
                return
            self.busy = True
            responder = Responder(self, req)
            try:
                if req.too_large:
                    req.keep_alive = False
                    responder.send(Reply(413, [], b""))
                else:
                    await self.server.app(req, responder)
                    responder.end()
            except Exception:  # the app failed to answer: one 500, the connection is not reusable
                log.exception("HTTP request %s %s failed", req.method, req.path)
                req.keep_alive = False
                if not responder.started:
                    responder.send(error(500, *INTERNAL_ERROR, with_id=True))
            self.busy = False
            if not req.keep_alive or self.server.closing:
                self.transport.close()
                return

    def write(self, data: bytes) -> None:
        if not self._closing:
            self.transport.write(data)

    async def drained(self) -> None:
        if not self._can_write.is_set():
            await self._can_write.wait()

    def resume(self) -> None:
        if not self._closing:
            self.transport.resume_reading()

    def _fail(self, status: int, detail: bytes) -> None:
        body = b'{"error":{"code":"BAD_REQUEST","message":"%s"}}' % detail.replace(b'"', b"'")
        self.transport.write(b"HTTP/1.1 %d Bad Request\r\ncontent-type: application/json\r\n"
                             b"content-length: %d\r\nconnection: close\r\n\r\n%s"
                             % (status, len(body), body))
        self.transport.close()


class HttpServer:
    """The listener: a socket handed down by the supervisor, or bound here."""

    def __init__(self, app: App, max_body: int | None = None) -> None:
        self.app = app
        self.max_body = max_body
        self.connections: set[Connection] = set()
        self.closing = False
        self._server: asyncio.AbstractServer | None = None

    async def start(self, sock: socket.socket, backlog: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: Connection(self), sock=sock, backlog=backlog)

    async def close(self, grace_s: float = 10.0) -> None:
        """Stop accepting; close idle connections now, busy ones after their response."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            if not conn.busy:
                conn.transport.close()
        deadline = asyncio.get_running_loop().time() + grace_s
        while self.connections and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.transport.abort()
