"""Channel ends (``sdk.channels``) against an in-process WebSocket server standing in for
the engine's channel sockets: the socket opens on the SDK loop whatever the caller's
thread or loop; the sync API blocks in a plain thread and is fire-and-forget on a loop,
keeping the writer's order; a close of an unopened writer still ends the stream; text
messages reach (sync or async) callbacks; and the public modules' names."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from typing import Any, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
from websockets.asyncio.server import ServerConnection, serve

from sdk.channel_refs import MAX_FRAME_SIZE, StreamChannelRef
from sdk.channels import ChannelReader, ChannelWriter


class FakeChannels:
    """``/ws/channels/<id>``: a write end's frames are recorded, a read end gets a script."""

    def __init__(self) -> None:
        self.written: dict[str, list[Any]] = {}
        self.closed: dict[str, threading.Event] = {}
        self.scripts: dict[str, list[Any]] = {}
        self.threads: list[str] = []

    def ended(self, cid: str) -> bool:
        """True once the write end ``cid`` was closed (waits up to 5 s)."""
        return self.closed.setdefault(cid, threading.Event()).wait(5)

    async def handle(self, ws: ServerConnection) -> None:
        parts = urlsplit(ws.request.path)
        cid = parts.path.rsplit("/", 1)[-1]
        query = parse_qs(parts.query)
        assert query["key"] == [f"key-{cid}"]
        if query["dir"] == ["write"]:
            got = self.written.setdefault(cid, [])
            async for message in ws:
                got.append(message)
            self.closed.setdefault(cid, threading.Event()).set()
        else:
            for message in self.scripts.get(cid, []):
                await ws.send(message)
            await ws.close()


@pytest.fixture
def env() -> Iterator[tuple[asyncio.AbstractEventLoop, str, FakeChannels]]:
    """(the SDK loop running in its own thread, the engine URL, the fake channels)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="sdk-loop", daemon=True)
    thread.start()
    fake = FakeChannels()
    server = asyncio.run_coroutine_threadsafe(_serve(fake), loop).result(5)
    port = server.sockets[0].getsockname()[1]
    try:
        yield loop, f"ws://127.0.0.1:{port}?token=t", fake
    finally:
        server.close()
        asyncio.run_coroutine_threadsafe(server.wait_closed(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


async def _serve(fake: FakeChannels) -> Any:
    return await serve(fake.handle, "127.0.0.1", 0, max_size=None)


def ref(cid: str, direction: str) -> StreamChannelRef:
    return StreamChannelRef(cid, f"key-{cid}", direction)  # type: ignore[arg-type]


def test_sync_api_from_a_plain_thread_blocks_and_keeps_order(env: Any) -> None:
    loop, url, fake = env
    w = ChannelWriter(url, ref("a", "write"), loop=loop)
    big = bytes(range(256)) * (MAX_FRAME_SIZE // 256) * 2 + b"!"
    w.send_message("first")
    w.stream.write(big)
    w.send_message("second")
    w.stream.end(b"last")
    assert fake.ended("a")
    assert fake.written["a"] == ["first", big[:MAX_FRAME_SIZE], big[MAX_FRAME_SIZE:2 * MAX_FRAME_SIZE],
                                 b"!", "second", b"last"]


def test_fire_and_forget_on_the_sdk_loop_keeps_order(env: Any) -> None:
    loop, url, fake = env
    w = ChannelWriter(url, ref("b", "write"), loop=loop)
    big = b"x" * (3 * MAX_FRAME_SIZE)

    async def handler() -> None:  # an async handler: every call returns at once
        w.stream.write(big)
        w.send_message("after the big write")
        await w.write(b"awaited")
        w.close()

    asyncio.run_coroutine_threadsafe(handler(), loop).result(5)
    assert fake.ended("b")
    assert fake.written["b"] == [b"x" * MAX_FRAME_SIZE] * 3 + ["after the big write", b"awaited"]


def test_async_api_from_a_foreign_loop_and_close_of_an_unopened_writer(env: Any) -> None:
    loop, url, fake = env
    w = ChannelWriter(url, ref("c", "write"), loop=loop)

    async def main() -> None:
        await w.send_message_async("hi")
        await w.write(b"")
        await w.close_async()
        await ChannelWriter(url, ref("d", "write"), loop=loop).close_async()

    asyncio.run(main())
    assert fake.ended("c") and fake.written["c"] == ["hi", b""]
    assert fake.ended("d") and fake.written["d"] == []


def test_write_takes_bytes_only(env: Any) -> None:
    loop, url, _ = env
    w = ChannelWriter(url, ref("e", "write"), loop=loop)
    with pytest.raises(TypeError):
        asyncio.run(w.write("text"))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        w.send_message(b"bytes")  # type: ignore[arg-type]


def test_reader_from_a_foreign_loop_with_sync_and_async_callbacks(env: Any) -> None:
    loop, url, fake = env
    fake.scripts["r"] = ["m1", b"one", "m2", b"two"]
    fake.scripts["s"] = [b"a" * 10, "note", b"b"]
    seen: list[tuple[str, str]] = []

    async def async_cb(msg: str) -> None:
        await asyncio.sleep(0)
        seen.append(("async", msg))

    r = ChannelReader(url, ref("r", "read"), loop=loop)
    r.on_message(lambda m: seen.append(("sync", m)))
    r.on_message(async_cb)
    r.on_message(lambda m: 1 / 0)  # logged, the stream goes on

    async def consume() -> list[bytes]:
        return [chunk async for chunk in r.stream]

    assert asyncio.run(consume()) == [b"one", b"two"]
    assert seen == [("sync", "m1"), ("async", "m1"), ("sync", "m2"), ("async", "m2")]
    s = ChannelReader(url, ref("s", "read"), loop=loop)
    assert asyncio.run(s.read_all()) == b"a" * 10 + b"b"
    asyncio.run(s.close_async())


def test_reader_on_the_sdk_loop_needs_no_hop(env: Any) -> None:
    loop, url, fake = env
    fake.scripts["t"] = [b"x", b"y"]
    r = ChannelReader(url, ref("t", "read"), loop=loop)

    async def on_loop() -> tuple[bytes, bool]:
        return await r.read_all(), threading.current_thread().name == "sdk-loop"

    assert asyncio.run_coroutine_threadsafe(on_loop(), loop).result(5) == (b"xy", True)


def test_an_end_without_a_loop_binds_to_the_first_loop_that_uses_it(env: Any) -> None:
    _, url, fake = env
    w = ChannelWriter(url, ref("u", "write"))
    with pytest.raises(RuntimeError):
        w.send_message("no loop anywhere")

    async def main() -> None:
        await w.send_message_async("bound")
        await w.close_async()

    asyncio.run(main())
    assert fake.ended("u") and fake.written["u"] == ["bound"]


def test_public_modules_have_the_official_names_and_load_no_engine_module() -> None:
    code = (
        "import sys\n"
        "import iii.channels as c, iii.helpers as h\n"
        "for n in ('ChannelReader', 'ChannelWriter', 'ChannelDirection', 'ChannelItem', 'ReadableStream',\n"
        "          'WritableStream', 'MAX_FRAME_SIZE', 'build_channel_url', 'resolve_headers', 'StreamChannelRef'):\n"
        "    assert hasattr(c, n), n\n"
        "for n in ('create_channel', 'create_channel_async', 'ChannelDirection', 'ChannelItem',\n"
        "          'extract_channel_refs', 'is_channel_ref', 'Channel'):\n"
        "    assert hasattr(h, n), n\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('zmq', 'lmdb', 'msgpack', 'brokers')]\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
