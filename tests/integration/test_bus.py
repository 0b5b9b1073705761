"""The bus between two real nodes on ipc: order, batching per loop pass, big bodies, restarts."""
from __future__ import annotations

import asyncio
import shutil
import struct
import tempfile
from typing import Iterator

import pytest
import zmq

from brokers.kit import frames
from brokers.kit.bus import BATCH_BYTES, BIG, ZERO_COPY_BYTES, Bus, endpoint, pack_batch


@pytest.fixture
def runtime() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="iii-", dir="/tmp")  # ipc paths must stay short
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def _pair(runtime: str):
    got: list[tuple[str, dict, bytes]] = []
    b = Bus("b", runtime, lambda s, h, body: got.append((s, h, body)))
    a = Bus("a", runtime, lambda s, h, body: None)
    a.start()
    b.start()
    return a, b, got


async def _until(pred, timeout=5.0):
    end = asyncio.get_running_loop().time() + timeout
    while not pred():
        assert asyncio.get_running_loop().time() < end, "timed out"
        await asyncio.sleep(0.01)


def test_frames_of_one_pass_arrive_in_order_with_their_sender(runtime: str) -> None:
    async def main():
        a, b, got = await _pair(runtime)
        for i in range(1000):  # one loop pass: one multipart message
            a.send("b", {"k": "t", "i": i}, str(i).encode())
        big = b"x" * (1 << 20)  # a zero-copy body
        a.send("b", {"k": "big"}, big)
        await _until(lambda: len(got) == 1001)
        assert [h["i"] for _, h, _ in got[:1000]] == list(range(1000))
        assert all(s == "a" and body == str(h["i"]).encode() for s, h, body in got[:1000])
        assert got[1000][2] == big
        a.close()
        b.close()

    asyncio.run(main())


def test_frames_sent_while_the_peer_is_down_arrive_when_it_binds(runtime: str) -> None:
    async def main():
        got: list[dict] = []
        a = Bus("a", runtime, lambda s, h, body: None)
        a.start()
        a.send("b", {"k": "early"})  # b does not exist yet: queued by ZeroMQ
        await asyncio.sleep(0.1)
        b = Bus("b", runtime, lambda s, h, body: got.append(h))
        b.start()
        await _until(lambda: got == [{"k": "early"}])
        a.close()
        b.close()

    asyncio.run(main())


def test_big_and_small_bodies_keep_their_order_across_cut_batches(runtime: str) -> None:
    """Bodies from ZERO_COPY_BYTES up travel as parts of their own, and a pass bigger than
    BATCH_BYTES goes as several messages: the receiver sees one ordered stream."""
    async def main():
        a, b, got = await _pair(runtime)
        sent = []
        for i in range(40):
            body = bytes([i % 256]) * (ZERO_COPY_BYTES if i % 3 == 0 else 20_000)
            sent.append(body)
            a.send("b", {"k": "t", "i": i}, body)
        assert sum(map(len, sent)) > 2 * BATCH_BYTES
        await _until(lambda: len(got) == 40)
        assert [h["i"] for _, h, _ in got] == list(range(40))
        assert [body for _, _, body in got] == sent
        a.close()
        b.close()

    asyncio.run(main())


def test_a_malformed_message_is_dropped_and_the_next_one_arrives(runtime: str) -> None:
    async def main():
        _, b, got = await _pair(runtime)
        raw = zmq.Context.instance().socket(zmq.DEALER)
        raw.setsockopt(zmq.ROUTING_ID, b"rogue")
        raw.setsockopt(zmq.LINGER, 0)
        raw.connect(endpoint(runtime, "b"))
        good = next(pack_batch([frames.pack({"k": "ok"}), b"body"]))[0]
        raw.send_multipart([b"\x01\x02\x03"])  # shorter than a record's lengths
        raw.send_multipart([struct.pack("<II", 2, 1000) + b"\x81\xa1"])  # body cut short
        raw.send_multipart([struct.pack("<II", 1, BIG) + b"\xc1"])  # BIG without its part
        raw.send_multipart([struct.pack("<II", 1, 0) + b"\xc1", b"stray part"])  # bad header
        raw.send_multipart([good])
        await _until(lambda: got)
        assert got == [("rogue", {"k": "ok"}, b"body")]
        raw.close(0)
        b.close()

    asyncio.run(main())


def test_a_peer_on_another_host_is_reached_over_tcp_by_its_qualified_name(runtime: str) -> None:
    """Issue 19: a gateway's bus also listens on TCP; another host's node is dialled by
    address under a host-qualified name (never meeting a local node's routing id), what
    is sent to an unknown ``<host>/<node>`` is dropped, and a forgotten peer's socket goes."""
    async def main():
        got: list[tuple[str, dict]] = []
        b = Bus("gateway-0", runtime, lambda s, h, body: got.append((s, h)))
        b.start()
        addr = b.bind_tcp("tcp://127.0.0.1:*")
        assert addr.startswith("tcp://127.0.0.1:")
        a = Bus("gateway-0", runtime + "/other", lambda s, h, body: None)  # the same node name
        a.remote_id = b"hostA/gateway-0"
        a.start()
        a.send("hostB/gateway-0", {"k": "lost"})  # no address yet: dropped, not an ipc path
        a.flush()
        a.dial("hostB/gateway-0", addr)
        assert a.knows("hostB/gateway-0")
        a.send("hostB/gateway-0", {"k": "t", "i": 1})
        await _until(lambda: got == [("hostA/gateway-0", {"k": "t", "i": 1})])
        a.forget("hostB/gateway-0")
        assert not a.knows("hostB/gateway-0") and "hostB/gateway-0" not in a._peers
        a.close()
        b.close()

    asyncio.run(main())
