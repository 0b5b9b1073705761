"""The SDK's hand-off primitives (sdk.waiters) and its connection class (sdk.transport)."""
from __future__ import annotations

import asyncio
import functools
import threading
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

from sdk.transport import SdkConnection
from sdk.waiters import LoopWaiter, Mailbox, SyncWaiter, settle


def test_mailbox_runs_every_item_once_in_order_per_thread_with_few_wakeups():
    loop = asyncio.new_event_loop()
    box = Mailbox(loop)
    seen: list[tuple[int, int]] = []
    drains = 0

    def counted() -> None:
        nonlocal drains
        drains += 1
    box.after_drain = counted
    threads_n, per_thread = 8, 2000

    def poster(t: int) -> None:
        for i in range(per_thread):
            box.post(seen.append, (t, i))

    async def main() -> None:
        threads = [threading.Thread(target=poster, args=(t,)) for t in range(threads_n)]
        for th in threads:
            th.start()
        while any(th.is_alive() for th in threads) or len(seen) < threads_n * per_thread:
            await asyncio.sleep(0.001)
            assert len(seen) <= threads_n * per_thread
    loop.run_until_complete(asyncio.wait_for(main(), 10))
    loop.close()
    assert len(seen) == threads_n * per_thread == len(set(seen))
    for t in range(threads_n):  # each poster's items ran in its posting order
        assert [i for (tt, i) in seen if tt == t] == list(range(per_thread))
    assert drains < threads_n * per_thread  # batched: fewer loop wake-ups than items
    with pytest.raises(RuntimeError):
        box.post(seen.append, "late")  # a closed loop is refused, not silently stranded


def test_mailbox_item_failure_does_not_strand_the_rest():
    loop = asyncio.new_event_loop()
    box = Mailbox(loop)
    seen: list[int] = []
    box.post(lambda: 1 / 0)
    box.post(seen.append, 2)
    loop.run_until_complete(asyncio.sleep(0.01))
    loop.close()
    assert seen == [2]


def test_sync_waiter_settles_once_and_times_out():
    w = SyncWaiter()
    assert not w.wait(0.01) and not w.done()
    threading.Timer(0.02, w.set_result, args=({"ok": 1},)).start()
    assert w.wait(2) and w.result() == {"ok": 1}
    w.set_exception(RuntimeError("late"))  # ignored: already settled
    assert w.result() == {"ok": 1}
    e = SyncWaiter()
    e.set_exception(ValueError("boom"))
    assert e.wait(0)
    with pytest.raises(ValueError):
        e.result()


def test_loop_waiter_settles_the_callers_future_from_another_thread():
    async def main() -> list[Any]:
        loop = asyncio.get_running_loop()
        futs = [loop.create_future() for _ in range(3)]
        waiters = [LoopWaiter(f) for f in futs]
        threading.Thread(target=lambda: (waiters[0].set_result(1), waiters[1].set_exception(KeyError("k")),
                                         waiters[2].set_result(3), waiters[2].set_result(4))).start()
        return await asyncio.gather(*futs, return_exceptions=True)
    out = asyncio.run(main())
    assert out[0] == 1 and isinstance(out[1], KeyError) and out[2] == 3


def test_settle_skips_none_and_settled_waiters():
    settle(None, 1, None)  # a void call's waiter
    loop = asyncio.new_event_loop()
    try:
        cancelled, ok, failed = loop.create_future(), loop.create_future(), loop.create_future()
        cancelled.cancel()
        settle(cancelled, 1, None)  # the awaiting task gave up: no InvalidStateError
        settle(ok, 2, None)
        settle(failed, None, KeyError("k"))
        assert cancelled.cancelled() and ok.result() == 2 and isinstance(failed.exception(), KeyError)
    finally:
        loop.close()
    w = SyncWaiter()
    settle(w, 3, None)
    settle(w, None, RuntimeError("late"))
    assert w.wait(0) and w.result() == 3


async def test_sdk_connection_keeps_early_messages_joins_fragments_and_batches_writes():
    got_by_server: list[str] = []

    async def handler(ws: Any) -> None:
        await ws.send('{"type":"workerregistered"}')  # arrives with/just after the handshake
        await ws.send(['{"part":', '"one",', '"two":2}'])  # one message in three frames
        async for msg in ws:
            got_by_server.append(msg)
            if len(got_by_server) == 3:
                await ws.send("done")

    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        batches = 0

        def on_batch() -> None:
            nonlocal batches
            batches += 1
        ws = await connect(f"ws://127.0.0.1:{port}", compression=None,
                           create_connection=functools.partial(SdkConnection, on_batch=on_batch))
        await asyncio.sleep(0.05)  # both messages have arrived before anyone listens
        received: list[bytes] = []
        ws.attach(received.append)
        assert received == [b'{"type":"workerregistered"}', b'{"part":"one","two":2}']
        writes = 0
        write = ws.transport.write

        def counting_write(data: bytes) -> None:
            nonlocal writes
            writes += 1
            write(data)
        ws.transport.write = counting_write  # type: ignore[method-assign]
        assert ws.write_frames(["a", "b", "c"]) == 3
        assert writes == 1  # three frames, one socket write
        for _ in range(100):
            if received[-1:] == [b"done"]:
                break
            await asyncio.sleep(0.01)
        assert got_by_server == ["a", "b", "c"] and received[-1] == b"done"
        assert batches >= 2
        await ws.close()
        assert ws.write_frames(["late"]) == 0  # closed: nothing taken, the caller keeps it
