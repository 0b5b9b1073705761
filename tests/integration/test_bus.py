"""The bus between two real nodes on ipc: order, batching per loop pass, big bodies, restarts."""
from __future__ import annotations

import asyncio
import shutil
import tempfile
from typing import Iterator

import pytest

from brokers.kit.bus import Bus


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
