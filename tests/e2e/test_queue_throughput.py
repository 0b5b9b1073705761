"""Queue throughput, end to end (enqueue -> stored -> delivered -> acked), against the bare
relay of ``perf/servers.py`` measured in the same run with the same clients.

Every client is its own OS process (raw protocol, asyncio + uvloop, orjson): P producers
pipeline ``invokefunction`` with ``action: {"type":"enqueue","queue":"bench"}`` (``WINDOW``
in flight each) until N receipts are in; one consumer answers every delivery of
``bench::job`` and stamps the last one. Figures:

* ``enqueue/s``: N / (last receipt - start), receipts are sent after the fsync'd commit;
* ``e2e/s``: N / (last delivery - start), every job stored, delivered and answered;
* baseline: the same producers making plain calls of ``bench::job`` through the relay
  (caller -> relay -> callee -> relay -> caller): calls/s.

The pytest test runs a short version and asserts only what must hold (every job delivered,
no enqueue error) and prints the figures. For the full figures (and a py-spy profile of the
queue process with ``--profile FILE``):

    .venv/bin/python tests/e2e/test_queue_throughput.py [--jobs 20000] [--profile /tmp/q.svg]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

FN = "bench::job"
QUEUE = {"bench": {"concurrency": 64, "max_retries": 1}}
ENQUEUE = {"type": "enqueue", "queue": "bench"}


# ---- client processes -------------------------------------------------------------------

def declare(role: str) -> str:
    """``engine::workers::register`` (void), sent first: the engine then fixes the namespace at
    once instead of buffering registrations for its grace period (protocol.md §4.4)."""
    import uuid

    from tests.wsclient import declare_frame

    return json.dumps(declare_frame(f"{role}-{uuid.uuid4().hex[:8]}", version="bench"))


async def _connect(url: str) -> Any:
    import orjson
    from websockets.asyncio.client import connect

    ws = await connect(url, compression=None, max_size=None, ping_interval=None)
    while orjson.loads(await ws.recv()).get("type") != "workerregistered":
        pass
    return ws


async def _produce(url: str, lo: int, hi: int, window: int, action: dict | None,
                   start: Any, out: Any) -> None:
    import orjson

    ws = await _connect(url)
    head = {"type": "invokefunction", "function_id": FN}
    if action is not None:
        head["action"] = action
    ok = errors = 0
    last = 0.0
    done = asyncio.get_running_loop().create_future()
    nxt = lo

    async def send_next() -> None:
        nonlocal nxt
        frame = dict(head, invocation_id=f"p{lo}-{nxt}", data={"id": nxt})
        nxt += 1
        await ws.send(orjson.dumps(frame).decode())

    await asyncio.to_thread(start.wait)
    for _ in range(min(window, hi - lo)):
        await send_next()
    async for raw in ws:
        msg = orjson.loads(raw)
        if msg.get("type") != "invocationresult":
            continue
        if msg.get("error"):
            errors += 1
        else:
            ok += 1
        last = time.monotonic()
        if nxt < hi:
            await send_next()
        elif ok + errors == hi - lo:
            done.set_result(None)
            break
    await done
    out.put({"ok": ok, "errors": errors, "last": last})
    await ws.close()


def producer_main(url: str, lo: int, hi: int, window: int, action: dict | None, start: Any,
                  out: Any) -> None:
    import uvloop

    uvloop.run(_produce(url, lo, hi, window, action, start, out))


async def _consume(url: str, count: Any, last: Any, ready: Any) -> None:
    import orjson

    ws = await _connect(url)
    await ws.send(declare("bench-consumer"))  # else registrations wait out the 5 s grace
    await ws.send(orjson.dumps({"type": "registerfunction", "id": FN}).decode())
    ready.set()
    n = 0
    async for raw in ws:
        msg = orjson.loads(raw)
        if msg.get("type") != "invokefunction":
            continue
        await ws.send(b'{"type":"invocationresult","invocation_id":"%s","function_id":"%s","result":null}'
                      % (msg["invocation_id"].encode(), FN.encode()), text=True)
        n += 1
        count.value, last.value = n, time.monotonic()


def consumer_main(url: str, count: Any, last: Any, ready: Any) -> None:
    import uvloop

    uvloop.run(_consume(url, count, last, ready))


# ---- one measurement --------------------------------------------------------------------

def measure(url: str, jobs: int, producers: int, window: int, action: dict | None,
            timeout: float = 60.0) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    count, last, ready, start, out = (ctx.Value("q", 0, lock=False), ctx.Value("d", 0.0, lock=False),
                                      ctx.Event(), ctx.Event(), ctx.Queue())
    consumer = ctx.Process(target=consumer_main, args=(url, count, last, ready), daemon=True)
    consumer.start()
    assert ready.wait(15), "consumer did not start"
    time.sleep(0.3)  # its registration reaches the registry (and the relay) before load
    per = jobs // producers
    procs = [ctx.Process(target=producer_main, daemon=True,
                         args=(url, i * per, (i + 1) * per, window, action, start, out))
             for i in range(producers)]
    for p in procs:
        p.start()
    time.sleep(1.0 + 0.1 * producers)  # every producer connected and waiting on `start`
    t0 = time.monotonic()
    start.set()
    results = [out.get(timeout=timeout) for _ in procs]
    deadline = time.monotonic() + timeout
    while count.value < per * producers and time.monotonic() < deadline:
        time.sleep(0.02)
    for p in procs:
        p.join(5)
    consumer.kill()
    total = per * producers
    ok = sum(r["ok"] for r in results)
    acked_at = max(r["last"] for r in results) - t0
    return {"jobs": total, "ok": ok, "errors": sum(r["errors"] for r in results),
            "delivered": count.value, "acked_per_s": round(ok / acked_at),
            "e2e_per_s": round(count.value / (last.value - t0)) if count.value else 0}


def relay_url() -> tuple[Any, str]:
    from perf.servers import free_port, server_main

    ctx = mp.get_context("spawn")
    port, ready = free_port(), ctx.Event()
    proc = ctx.Process(target=server_main, args=("relay", port, ready), daemon=True)
    proc.start()
    assert ready.wait(10), "relay did not start"
    return proc, f"ws://127.0.0.1:{port}"


def start_queue_engine(concurrency: int = 64) -> Any:
    from tests.harness import QUEUE_READY, start_engine

    return start_engine(queues={"bench": dict(QUEUE["bench"], concurrency=concurrency)},
                        wait_for=QUEUE_READY)


def run(jobs: int, shapes: list[tuple[int, int]], profile: str | None = None,
        concurrency: int = 64) -> list[dict[str, Any]]:
    """Per shape (producers, window each): relay baseline, then the engine's queue."""
    rows = []
    relay, rurl = relay_url()
    eng = start_queue_engine(concurrency)
    try:
        for producers, window in shapes:
            base = measure(rurl, jobs, producers, window, None)
            spy = None
            if profile:
                spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "-o",
                                        f"{profile}.{producers}p.svg", "-p", str(eng.pid("queue"))],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(0.5)
            q = measure(eng.url, jobs, producers, window, ENQUEUE)
            if spy is not None:
                spy.send_signal(2)
                spy.wait(30)
            q.update(producers=producers, window=window, concurrency=concurrency,
                     relay_calls_per_s=base["acked_per_s"],
                     x_e2e_vs_relay=round(q["e2e_per_s"] / base["acked_per_s"], 2),
                     x_acked_vs_relay=round(q["acked_per_s"] / base["acked_per_s"], 2))
            rows.append(q)
    finally:
        eng.stop()
        relay.kill()
    return rows


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_queue_throughput_short_run_delivers_every_job() -> None:
    rows = run(3_200, [(1, 64), (16, 16)])
    print("queue throughput:", json.dumps(rows))
    for row in rows:
        assert row["errors"] == 0 and row["ok"] == row["jobs"], row
        assert row["delivered"] >= row["jobs"], row
        assert row["e2e_per_s"] > 0 and row["relay_calls_per_s"] > 0, row


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=20_000)
    ap.add_argument("--profile", help="py-spy flame graph path prefix for the queue process")
    ap.add_argument("--concurrency", type=int, default=64, help="the bench queue's concurrency")
    args = ap.parse_args()
    for r in run(args.jobs, [(1, 64), (16, 16)], args.profile, args.concurrency):
        print(json.dumps(r))
