"""The ``channel_throughput`` benchmark (issue 12): bytes through a channel, same process and across.

A client process opens a channel's writer and reader sockets, writes ``count`` messages of
``size`` bytes as fast as the writer socket takes them and reads them on the reader socket
at the same time; a run's figure is bytes (or messages) over the time from the first write
to the last read. Variants: 64 KiB chunks (MB/s) and 1 KiB messages (messages/s), with the
two sockets on one gateway process ("same process") or on two (the gateway that accepted
each socket is read from the kernel's socket tables, and channels are made until the
sockets land as wanted), ``buffer_size`` 64.

Baseline, same run, same client: ``bridge``, one process on uvloop that accepts a writer
and a reader socket and relays each message of one to the other (``await send``): two
WebSocket sockets bridged inside one process, no bus, no table, no ring.

The note of the cross-process 64 KiB row also says how much the two gateways' RSS grew
while a reader stalled and the writer pushed for two seconds (issue 12: below
``buffer_size`` x chunk + a constant).
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, Callable

import orjson
import psutil
from websockets.asyncio.server import ServerConnection, serve

from . import core, wire
from .engine import Engine
from .engine_benches import EngineDown, start_engine
from .servers import free_port

SHAPES = {"64KiB": (64 * 1024, 800, "MB/s"), "1KiB": (1024, 20_000, "msg/s")}
QUICK_COUNTS = {"64KiB": 200, "1KiB": 4000}
STALL_S = 2.0


# ---- the baseline bridge (its own process) -------------------------------------------------

async def _bridge(port: int, ready: Any) -> None:
    waiting: dict[str, asyncio.Future] = {}

    async def handle(ws: ServerConnection) -> None:
        path = ws.request.path
        key = path[3:]
        fut = waiting.setdefault(key, asyncio.get_running_loop().create_future())
        if path.startswith("/r/"):
            fut.set_result(ws)
            await ws.wait_closed()
            return
        reader = await fut
        waiting.pop(key, None)
        try:
            async for msg in ws:
                await reader.send(msg)
        finally:
            await reader.close()

    async with serve(handle, "127.0.0.1", port, compression=None, max_size=wire.MAX_SIZE):
        ready.set()
        await asyncio.Future()


def bridge_main(port: int, ready: Any) -> None:
    wire.run_loop(_bridge(port, ready))


# ---- the client (its own process) ----------------------------------------------------------

async def _pair(conn: Any, mode: str, target: str) -> tuple[Any, Any]:
    """Open a writer and a reader socket; the parent says whether they landed well."""
    n = 0
    while True:
        n += 1
        if mode == "bridge":
            urls = (f"{target}w/{n}", f"{target}r/{n}")
        else:
            caller = wire.Caller(await wire.open_ws(target))
            await caller.ws.send(wire.worker_hello("perf-chan"), text=True)
            refs = (await caller.call("engine::channels::create", {"buffer_size": 64}))["result"]
            await caller.close()
            urls = tuple(f"{target}ws/channels/{refs[e]['channel_id']}?key={refs[e]['access_key']}&dir={d}"
                         for e, d in (("writer", "write"), ("reader", "read")))
        writer = await wire.open_ws(urls[0])
        reader = await wire.open_ws(urls[1])
        conn.send({"ports": [wire.local_port(writer), wire.local_port(reader)]})
        if conn.recv() == "go":
            return writer, reader
        await writer.close()
        await reader.close()


async def _client(conn: Any) -> None:
    while True:
        cmd = conn.recv()
        if cmd.get("cmd") == "stop":
            return
        writer, reader = await _pair(conn, cmd["mode"], cmd["target"])
        chunk = b"c" * cmd["size"]
        count = cmd["count"]
        if cmd.get("stall"):
            t_end = time.monotonic() + STALL_S
            sent = 0
            try:
                while time.monotonic() < t_end:
                    await asyncio.wait_for(writer.send(chunk), max(0.01, t_end - time.monotonic()))
                    sent += 1
            except asyncio.TimeoutError:
                pass
            conn.send({"status": "stalled", "sent": sent})
            conn.recv()
            writer.transport.abort()
            reader.transport.abort()
            continue

        async def write() -> None:
            for _ in range(count):
                await writer.send(chunk)
            await writer.close()

        t0 = time.perf_counter()
        task = asyncio.ensure_future(write())
        got = 0
        async for _ in reader:
            got += 1
            if got == count:
                break
        elapsed = time.perf_counter() - t0
        await task
        await reader.close()
        conn.send({"status": "ok", "elapsed_s": elapsed, "got": got})


def client_main(conn: Any) -> None:
    wire.run_loop(_client(conn))


# ---- the rows -----------------------------------------------------------------------------

def _holders(ports: list[int], pids: list[int]) -> list[int | None]:
    out: list[int | None] = []
    for port in ports:
        found = None
        for pid in pids:
            try:
                if any(c.raddr and c.raddr.port == port for c in psutil.Process(pid).net_connections("tcp")):
                    found = pid
            except psutil.Error:
                pass
        out.append(found)
    return out


def _placed(parent: Any, pids: list[int] | None, across: bool) -> list[int | None]:
    """Answer the client's offers until its sockets sit as wanted (any place for the bridge)."""
    for _ in range(60):
        ports = parent.recv()["ports"]
        if pids is None:
            parent.send("go")
            return []
        held = _holders(ports, pids)
        if None not in held and (held[0] != held[1]) == across:
            parent.send("go")
            return held
        parent.send("again")
    raise RuntimeError("the channel's sockets never landed as wanted")


def _measure(h: Any, parent: Any, mode: str, target: str, pids: list[int] | None, across: bool,
             size: int, count: int) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    while core.need_more_runs(runs, h.settings.runs, h.settings.max_attempts):
        h.meter.start()
        parent.send({"cmd": "run", "mode": mode, "target": target, "size": size, "count": count})
        _placed(parent, pids, across)
        out = parent.recv() if parent.poll(120) else {"status": "error", "reason": "no answer"}
        if out.get("status") != "ok":
            raise RuntimeError(out.get("reason", "client failed"))
        out["throughput"] = count / out["elapsed_s"]
        out["mb_s"] = count * size / out["elapsed_s"] / 1e6
        out["foreign_cores"] = h.meter.stop()
        out["noisy"] = core.is_noisy(out["foreign_cores"])
        runs.append(out)
    return core.choose_runs(runs, h.settings.runs)


def _stall_growth(parent: Any, target: str, pids: list[int]) -> tuple[float, int]:
    parent.send({"cmd": "run", "mode": "engine", "target": target, "size": 64 * 1024, "count": 0,
                 "stall": True})
    held = _placed(parent, pids, True)
    procs = [psutil.Process(p) for p in held if p is not None]
    before = sum(p.memory_info().rss for p in procs)
    out = parent.recv()
    grown = sum(p.memory_info().rss for p in procs) - before
    parent.send("done")
    return grown / 2**20, out.get("sent", 0)


def _row(target: str, shape: str, where: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    size, _, unit = SHAPES[shape]
    key = "mb_s" if unit == "MB/s" else "throughput"
    m = core.median_metrics(runs, (key,))
    return {"target": target, "bench": "channel_throughput", "variant": f"{shape} {where}",
            "status": "ok", "unit": unit, "runs": runs, "noisy": any(r.get("noisy") for r in runs),
            "metrics": {"throughput": m[key]}, "raw": m}


def bench(h: Any, emit: Callable[[dict[str, Any]], None]) -> None:
    """Every ``channel_throughput`` row: the bridge baseline, then the engine same/across."""
    from .benches import attach

    port = free_port()
    ready = h.ctx.Event()
    server = h._spawn(bridge_main, port, ready)
    parent, child = h.ctx.Pipe()
    client = h._spawn(client_main, child)
    eng: Engine | None = None
    try:
        if not ready.wait(15):
            raise RuntimeError("bridge did not start")
        eng, _ = start_engine(2)
        pids = eng.gateway_pids()
        for shape, (size, count, _) in SHAPES.items():
            count = QUICK_COUNTS[shape] if h.settings.quick else count
            h.progress(f"channel_throughput {shape}: bridge baseline")
            base = _row("bridge", shape, "one process", _measure(h, parent, "bridge", f"ws://127.0.0.1:{port}/",
                                                                 None, False, size, count))
            emit(base)
            for where, across in (("same process", False), ("across processes", True)):
                h.progress(f"channel_throughput {shape}: engine, {where}")
                r = _row("engine", shape, where, _measure(h, parent, "engine", eng.url, pids, across, size, count))
                if shape == "64KiB" and across:
                    grown, sent = _stall_growth(parent, eng.url, pids)
                    r["note"] = (f"reader stalled {STALL_S:.0f} s: writer got {sent} chunks in, the two "
                                 f"gateways' RSS grew {grown:.1f} MiB (buffer_size 64 x 64 KiB = 4 MiB)")
                emit(attach(r, base))
        parent.send({"cmd": "stop"})
    except (RuntimeError, EngineDown, OSError, EOFError) as exc:
        emit({"target": "engine", "bench": "channel_throughput", "variant": "", "status": "error",
              "reason": f"{type(exc).__name__}: {exc}"})
    finally:
        if eng is not None:
            eng.stop()
        h.stop(client)
        h.stop(server)
