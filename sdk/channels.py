"""Channel ends as live objects (protocol.md §8): ``ChannelWriter``, ``ChannelReader``, the
``Channel`` pair and ``create_channel``; public as ``iii.channels`` and ``iii.helpers`` with
the official Python SDK's names and behaviour.

Each end is its own WebSocket at ``<engine url>/ws/channels/<id>?key=…&dir=…``: text frames
are messages, binary frames the byte stream, the writer's close ends the reader's stream.

Invariants:
- A socket is opened lazily, at an end's first use, and always on the SDK's loop (the one
  the worker's connection runs on): an end created by the SDK is usable from an ``async
  def`` handler on that loop (no hop), from a ``def`` handler in the pool, and from any
  other loop (``asyncio.run(reader.read_all())`` in a pool thread hops to the SDK loop and
  back). An end built by hand without a loop binds to the first running loop that uses it.
- The async methods await their work; the sync ones (``send_message``, ``close``,
  ``stream.write``, ``stream.end``) are fire-and-forget when called on a running loop (as
  the official SDK's) and block until done when called from a thread without one (the
  official SDK's ``asyncio.run``), so their errors reach a ``def`` handler.
- A writer's operations leave in the order they were made, a chunked write whole: each
  takes its place in line (a chain of futures on the SDK loop) when it is made on that
  loop, or when it arrives there from another thread; a message never lands inside
  another write's chunks.
- Closing a writer that never opened its socket opens it first, so the reader's stream
  ends (the official SDK's close does nothing then, and the reader waits forever).
- The reader's stream ends on any close of its socket, as the official SDK's does;
  text messages go to the ``on_message`` callbacks while the stream is read (a callback's
  failure is logged; an awaitable it returns is awaited).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Coroutine

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from sdk.channel_refs import StreamChannelRef, build_channel_url, frames
from sdk.codec import MAX_MESSAGE_BYTES
from sdk.options import resolve_headers

log = logging.getLogger(__name__)

_END = object()  # the reader's stream is over (StopAsyncIteration cannot cross a future)


def _running() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class _End:
    """What both ends share: the socket, opened once on the SDK loop, and the loop hops."""

    _direction = ""

    def __init__(self, engine_ws_base: str, ref: StreamChannelRef | dict[str, Any],
                 headers: dict[str, str] | None = None, *,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.ref = StreamChannelRef.from_wire(ref)
        self._url = build_channel_url(engine_ws_base, self.ref.channel_id, self.ref.access_key,
                                      self._direction)
        self._headers = resolve_headers(headers)
        self._loop = loop
        self._ws: ClientConnection | None = None
        self._connect_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()

    def _sdk_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = _running()
            if self._loop is None:
                raise RuntimeError("this channel end has no event loop yet: use it from async code first")
        return self._loop

    async def _connected(self) -> ClientConnection:
        """SDK loop: the socket, opened on first use."""
        if self._ws is None:
            async with self._connect_lock:
                if self._ws is None:
                    self._ws = await connect(self._url, additional_headers=self._headers or None,
                                             max_size=MAX_MESSAGE_BYTES, compression=None,
                                             proxy=None, open_timeout=10)
        return self._ws

    def _op(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> Coroutine[Any, Any, Any]:
        """The coroutine that does ``fn(*args)`` on the SDK loop (the writer orders it)."""
        return fn(*args)

    async def _run(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> Any:
        """Any loop: await ``fn(*args)`` run on the SDK loop."""
        loop = self._sdk_loop()
        if _running() is loop:
            return await self._op(fn, *args)
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._op(fn, *args), loop))

    def _fire(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        """Sync API: fire-and-forget on a running loop; from a plain thread, block until done."""
        running = _running()
        loop = self._loop = self._loop or running
        if loop is None:
            raise RuntimeError("this channel end has no event loop yet: use it from async code first")
        if running is loop:
            task = loop.create_task(self._op(fn, *args))
            self._tasks.add(task)
            task.add_done_callback(self._fired)
        elif running is not None:
            asyncio.run_coroutine_threadsafe(self._op(fn, *args), loop).add_done_callback(self._fired)
        else:
            asyncio.run_coroutine_threadsafe(self._op(fn, *args), loop).result()

    def _fired(self, fut: asyncio.Future[Any] | concurrent.futures.Future[Any]) -> None:
        if isinstance(fut, asyncio.Task):
            self._tasks.discard(fut)
        if not fut.cancelled() and fut.exception() is not None:
            exc = fut.exception()
            log.error("channel %s: %s failed: %s: %s", self.ref.channel_id, self._direction,
                      type(exc).__name__, exc)


class WritableStream:
    """Node-style writable over a ``ChannelWriter``: sync ``write`` and ``end``."""

    def __init__(self, writer: ChannelWriter) -> None:
        self._writer = writer

    def write(self, data: bytes) -> None:
        self._writer._fire(self._writer._write, data)

    def end(self, data: bytes | None = None) -> None:
        if data is not None:
            self.write(data)
        self._writer.close()


class ChannelWriter(_End):
    """The write end: binary chunks (``write``) and text messages (``send_message``)."""

    _direction = "write"

    def __init__(self, engine_ws_base: str, ref: StreamChannelRef | dict[str, Any],
                 headers: dict[str, str] | None = None, *,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(engine_ws_base, ref, headers, loop=loop)
        self._tail: asyncio.Future[None] | None = None  # settles when the latest operation is done
        self.stream = WritableStream(self)

    async def write(self, data: bytes) -> None:
        """Send ``data`` as binary frames of at most 64 KiB."""
        await self._run(self._write, data)

    def send_message(self, msg: str) -> None:
        self._fire(self._send_text, msg)

    async def send_message_async(self, msg: str) -> None:
        await self._run(self._send_text, msg)

    def close(self) -> None:
        self._fire(self._close)

    async def close_async(self) -> None:
        await self._run(self._close)

    # -- on the SDK loop -------------------------------------------------------------------
    def _op(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> Coroutine[Any, Any, Any]:
        # The place in line is taken now when we are on the SDK loop (a fire-and-forget task
        # has not started yet when the next call is awaited), else at arrival on the loop.
        ticket = self._ticket() if _running() is self._loop else None
        return self._in_order(ticket, fn, *args)

    def _ticket(self) -> tuple[asyncio.Future[None] | None, asyncio.Future[None]]:
        prev, done = self._tail, self._sdk_loop().create_future()
        self._tail = done
        return prev, done

    async def _in_order(self, ticket: tuple[asyncio.Future[None] | None, asyncio.Future[None]] | None,
                        fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> Any:
        prev, done = ticket or self._ticket()
        try:
            if prev is not None and not prev.done():
                await asyncio.shield(prev)
            return await fn(*args)
        finally:
            if prev is None or prev.done():
                done.set_result(None)
            else:  # cancelled while waiting: the next still waits for the one before
                prev.add_done_callback(lambda _: done.done() or done.set_result(None))

    async def _write(self, data: bytes | bytearray | memoryview) -> None:
        if isinstance(data, str) or not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"write() takes bytes, not {type(data).__name__}; send text with send_message()")
        ws = await self._connected()
        for frame in frames(data):
            await ws.send(frame)

    async def _send_text(self, msg: str) -> None:
        if not isinstance(msg, str):
            raise TypeError(f"send_message() takes str, not {type(msg).__name__}")
        await (await self._connected()).send(msg)

    async def _close(self) -> None:
        await (await self._connected()).close()


class ReadableStream:
    """Node-style readable over a ``ChannelReader``: ``async for chunk in reader.stream``."""

    def __init__(self, reader: ChannelReader) -> None:
        self._reader = reader

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._reader:
            yield chunk


class ChannelReader(_End):
    """The read end: ``async for chunk in reader`` (binary), messages to ``on_message``."""

    _direction = "read"

    def __init__(self, engine_ws_base: str, ref: StreamChannelRef | dict[str, Any],
                 headers: dict[str, str] | None = None, *,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(engine_ws_base, ref, headers, loop=loop)
        self._message_callbacks: list[Callable[[str], Any]] = []
        self.stream = ReadableStream(self)

    def on_message(self, callback: Callable[[str], Any]) -> None:
        self._message_callbacks.append(callback)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        loop = self._sdk_loop()
        if _running() is loop:
            async for chunk in self._chunks():
                yield chunk
            return
        chunks = self._chunks()  # lives on the SDK loop; one hop per chunk
        try:
            while True:
                chunk = await self._run(_next, chunks)
                if chunk is _END:
                    return
                yield chunk
        finally:
            await self._run(chunks.aclose)

    async def read_all(self) -> bytes:
        """The whole stream (to the writer's close) as one bytes object."""
        return await self._run(self._read_all)

    async def close_async(self) -> None:
        await self._run(self._close)

    # -- on the SDK loop -------------------------------------------------------------------
    async def _chunks(self) -> AsyncIterator[bytes]:
        ws = await self._connected()
        try:
            async for message in ws:
                if isinstance(message, bytes):
                    yield message
                else:
                    await self._dispatch(message)
        except ConnectionClosed:
            pass

    async def _dispatch(self, message: str) -> None:
        for cb in list(self._message_callbacks):
            try:
                result = cb(message)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("channel %s: message callback failed", self.ref.channel_id)

    async def _read_all(self) -> bytes:
        parts = [chunk async for chunk in self._chunks()]
        return b"".join(parts)

    async def _close(self) -> None:
        if self._ws is not None:
            await self._ws.close()


async def _next(chunks: AsyncIterator[bytes]) -> Any:
    try:
        return await chunks.__anext__()
    except StopAsyncIteration:
        return _END


@dataclass
class Channel:
    """A channel pair: live ends for this worker, refs to hand to another."""

    writer: ChannelWriter
    reader: ChannelReader
    writer_ref: StreamChannelRef
    reader_ref: StreamChannelRef


def channel_end(engine_ws_base: str, headers: dict[str, str] | None, loop: asyncio.AbstractEventLoop | None,
                ref: StreamChannelRef) -> ChannelReader | ChannelWriter:
    """The live end for a ref found in a handler's input."""
    cls = ChannelReader if ref.direction == "read" else ChannelWriter
    return cls(engine_ws_base, ref, headers, loop=loop)


def _create_request(buffer_size: int | None) -> dict[str, Any]:
    return {"function_id": "engine::channels::create", "payload": {"buffer_size": buffer_size}}


def _channel(iii: Any, result: Any) -> Channel:
    shell = iii.shell
    writer_ref = StreamChannelRef.from_wire(result["writer"])
    reader_ref = StreamChannelRef.from_wire(result["reader"])
    return Channel(writer=ChannelWriter(shell.url, writer_ref, shell.headers, loop=shell.loop),
                   reader=ChannelReader(shell.url, reader_ref, shell.headers, loop=shell.loop),
                   writer_ref=writer_ref, reader_ref=reader_ref)


def create_channel(iii: Any, buffer_size: int | None = None) -> Channel:
    """Create a channel (blocks; not on the SDK loop: use ``create_channel_async`` there)."""
    return _channel(iii, iii.trigger(_create_request(buffer_size)))


async def create_channel_async(iii: Any, buffer_size: int | None = None) -> Channel:
    return _channel(iii, await iii.trigger_async(_create_request(buffer_size)))

