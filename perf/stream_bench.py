"""The ``stream_fanout`` benchmark (issue 15): one writer, 1 / 100 / 1,000 subscribers.

A client process opens S subscriber sockets, joins each to one group, and one writer sends
events as fast as a window allows (at most ``WINDOW`` events written and not yet delivered
to every subscriber). A run's figures: deliveries per second (events x subscribers that
arrived within the measured window) and the p50/p99 of write-to-delivery latency (the
writer's ``time.monotonic_ns`` carried in the event; CLOCK_MONOTONIC is one clock for the
whole machine).

The latency is under a full window (the writer always has ``WINDOW`` events out), so it is
queueing time at saturation, not an idle write's; at 1,000 subscribers the one client
process reading every socket is the limit of both targets (about one core).

Targets, same run, same client:
- ``broadcast``: one process (uvloop) that accepts the subscribers (answers each join with
  a sync) and a writer socket, and for each writer message builds the same §3.4 wrapper
  and sends it with ``websockets.broadcast``: a bare websockets broadcast, no bus, no
  store;
- ``engine``: iii-stream in the engine: the writer is a worker sending ``stream::send``
  (void) through the gateway, the subscribers are on the stream socket.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, Callable

import orjson
from websockets import broadcast
from websockets.asyncio.server import ServerConnection, serve

from . import core, wire
from .engine_benches import EngineDown, start_engine
from .servers import free_port

SUBSCRIBERS = (1, 100, 1000)
WINDOW = 64
STREAM, GROUP = "bench", "g"


# ---- the baseline broadcast (its own process) ----------------------------------------------

def broadcast_main(port: int, ready: Any) -> None:
    subs: set[ServerConnection] = set()

    async def handle(ws: ServerConnection) -> None:
        if ws.request.path == "/w":
            async for raw in ws:
                msg = orjson.loads(raw)
                wrapper = {"type": "stream", "timestamp": int(time.time() * 1000), "streamName": STREAM,
                           "groupId": GROUP, "id": None,
                           "event": {"type": "event", "event": {"type": "tick", "data": msg}}}
                broadcast(subs, orjson.dumps(wrapper).decode())
            return
        async for raw in ws:  # a join: subscribe and sync
            subs.add(ws)
            await ws.send(orjson.dumps({"type": "stream", "timestamp": 0, "streamName": STREAM,
                                        "groupId": GROUP, "id": None,
                                        "event": {"type": "sync", "data": []}}).decode())
        subs.discard(ws)

    async def main() -> None:
        async with serve(handle, "127.0.0.1", port, compression=None, backlog=2048):
            ready.set()
            await asyncio.Future()

    wire.run_loop(main())


# ---- the client (its own process) ----------------------------------------------------------

async def _run(spec: dict[str, Any]) -> dict[str, Any]:
    n_subs, seconds, warmup = spec["subs"], spec["seconds"], spec["warmup"]
    join = orjson.dumps({"type": "join", "data": {"subscriptionId": "s", "streamName": STREAM,
                                                  "groupId": GROUP}})
    subs = []
    for _ in range(n_subs):
        ws = await wire.open_ws(spec["sub_url"])
        await ws.send(join, text=True)
        await ws.recv()  # the sync
        subs.append(ws)
    state = {"delivered": 0, "measuring": False, "counted": 0}
    lat: list[int] = []
    room = asyncio.Event()

    async def read(ws: Any) -> None:
        try:
            async for raw in ws:
                now = time.monotonic_ns()
                t = orjson.loads(raw)["event"]["event"]["data"]["t"]
                state["delivered"] += 1
                if state["measuring"]:
                    state["counted"] += 1
                    lat.append(now - t)
                if not room.is_set():
                    room.set()
        except Exception:
            pass

    readers = [asyncio.create_task(read(ws)) for ws in subs]
    if spec["writer"] == "engine":
        writer = await wire.open_ws(spec["writer_url"])
        await writer.send(wire.worker_hello("perf-stream"), text=True)

        def frame(t: int) -> bytes:
            return orjson.dumps({"type": "invokefunction", "function_id": "stream::send",
                                 "action": {"type": "void"},
                                 "data": {"stream_name": STREAM, "group_id": GROUP, "type": "tick",
                                          "data": {"t": t}}})
    else:
        writer = await wire.open_ws(spec["writer_url"])

        def frame(t: int) -> bytes:
            return orjson.dumps({"t": t})
    sent = 0
    start = time.perf_counter()
    end_warm, end = start + warmup, start + warmup + seconds
    window_start = None
    while True:
        now = time.perf_counter()
        if now >= end:
            break
        if window_start is None and now >= end_warm:
            state["measuring"], window_start = True, now
        if sent - state["delivered"] / n_subs >= WINDOW:
            room.clear()
            try:
                await asyncio.wait_for(room.wait(), 5)
            except asyncio.TimeoutError:
                break
            continue
        await writer.send(frame(time.monotonic_ns()), text=True)
        sent += 1
    state["measuring"] = False
    elapsed = time.perf_counter() - (window_start or start)
    counted = state["counted"]
    await writer.close()
    for ws in subs:
        await ws.close()
    for t in readers:
        t.cancel()
    lat.sort()
    return {"status": "ok", "throughput": counted / elapsed if elapsed > 0 else 0.0,
            "p50_us": core.percentile(lat, 0.50) / 1000 if lat else 0.0,
            "p99_us": core.percentile(lat, 0.99) / 1000 if lat else 0.0, "events": sent}


def client_main(conn: Any) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        while True:
            spec = await loop.run_in_executor(None, conn.recv)
            if spec.get("cmd") == "stop":
                return
            try:
                conn.send(await _run(spec))
            except Exception as exc:  # reported as the row's error
                conn.send({"status": "error", "reason": f"{type(exc).__name__}: {exc}"})
    wire.run_loop(main())


# ---- the rows -----------------------------------------------------------------------------

def _measure(h: Any, parent: Any, spec: dict[str, Any]) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    while core.need_more_runs(runs, h.settings.runs, h.settings.max_attempts):
        h.meter.start()
        parent.send({**spec, "seconds": h.settings.seconds, "warmup": h.settings.warmup})
        out = parent.recv() if parent.poll(h.settings.seconds + 120) else {"status": "error", "reason": "no answer"}
        if out.get("status") != "ok":
            raise RuntimeError(out.get("reason", "client failed"))
        out["foreign_cores"] = h.meter.stop()
        out["noisy"] = core.is_noisy(out["foreign_cores"])
        runs.append(out)
    return core.choose_runs(runs, h.settings.runs)


def _row(target: str, variant: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    m = core.median_metrics(runs, ("throughput", "p50_us", "p99_us"))
    return {"target": target, "bench": "stream_fanout", "variant": variant, "status": "ok",
            "unit": "deliveries/s", "runs": runs, "noisy": any(r.get("noisy") for r in runs),
            "metrics": {"throughput": m["throughput"], "p50_us": m["p50_us"], "p99_us": m["p99_us"]}, "raw": m}


def bench(h: Any, emit: Callable[[dict[str, Any]], None]) -> None:
    """The broadcast baseline and the engine at each subscriber count."""
    from .benches import attach

    base_port, stream_port = free_port(), free_port()
    ready = h.ctx.Event()
    base = h._spawn(broadcast_main, base_port, ready)
    parent, child = h.ctx.Pipe()
    client = h._spawn(client_main, child)
    eng = None
    try:
        if not ready.wait(15):
            raise RuntimeError("the broadcast baseline did not start")
        eng, _ = start_engine(1, extra_workers=[{"name": "iii-stream", "config": {
            "host": "127.0.0.1", "port": stream_port, "adapter": {"name": "kv", "config": {"store_method": "in_memory"}}}}])
        time.sleep(0.5)
        for n in SUBSCRIBERS:
            variant = f"{n} subscribers"
            h.progress(f"stream_fanout {variant}: broadcast")
            b = _row("broadcast", variant, _measure(h, parent, {
                "subs": n, "writer": "bare", "sub_url": f"ws://127.0.0.1:{base_port}/",
                "writer_url": f"ws://127.0.0.1:{base_port}/w"}))
            emit(b)
            h.progress(f"stream_fanout {variant}: engine")
            r = _row("engine", variant, _measure(h, parent, {
                "subs": n, "writer": "engine", "sub_url": f"ws://127.0.0.1:{stream_port}/",
                "writer_url": eng.url}))
            r["note"] = f"{r['raw']['throughput'] / max(b['raw']['throughput'], 1e-9):.2f}x the bare broadcast"
            emit(attach(r, b))
        parent.send({"cmd": "stop"})
    except (RuntimeError, EngineDown, OSError, EOFError) as exc:
        emit({"target": "engine", "bench": "stream_fanout", "variant": "", "status": "error",
              "reason": f"{type(exc).__name__}: {exc}"})
    finally:
        if eng is not None:
            eng.stop()
        for proc in (client, base):
            h.stop(proc)
