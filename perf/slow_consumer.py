"""The ``slow_consumer`` benchmark (issue 11): one worker stops reading; what does that cost
the gateway, and everyone else?

A callee registers a function and never reads its socket again (a raw TCP socket driven by
websockets' sans-I/O client, SO_RCVBUF 4 KiB so that the kernel absorbs little); a flooder
sends 50,000 void calls of 16 KiB to it (one masked frame sent over and over, so the load
generator costs next to nothing); a bystander calls the echo callee, one call at a time,
first idle, then for as long as the flood lasts. Figures of one run: the gateway's RSS
before and at its peak during the flood, the bystander's p50/p99 under the flood against
its idle p50/p99 of the same run. The row's RSS growth is the highest peak of all runs
minus the RSS before the first: memory freed after a run is mostly reused by the next, so
a per-run median would hide the first run's growth.

Invariants: the stuck callee and the flooder are new for every run (a fresh function id)
and gone before the next; the flooder and the bystander are processes of the harness,
stopped by it; the stuck socket lives in the harness process and does nothing.
"""
from __future__ import annotations

import asyncio
import socket
import time
import uuid
from typing import Any, Callable

import orjson
import psutil

from brokers.kit.errors import FUNCTION_NOT_FOUND

from . import core, wire

CALLS, SIZE = 50_000, 16 * 1024
FLOOD_TIMEOUT_S = 60.0
TAIL_S = 0.5
"""The bystander goes on this long after the flooder has sent its last call: the gateway is
still reading what the kernel holds."""


def raw_ws(url: str, rcvbuf: int | None = None) -> tuple[socket.socket, Any]:
    """A raw socket with a completed WebSocket handshake, and its sans-I/O client protocol."""
    from websockets.client import ClientProtocol
    from websockets.protocol import State
    from websockets.uri import parse_uri

    uri = parse_uri(url)
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # no autotuning
    sock.connect((uri.host, uri.port))
    proto = ClientProtocol(uri, max_size=None)
    proto.send_request(proto.connect())
    sock.sendall(b"".join(proto.data_to_send()))
    while proto.state is State.CONNECTING:
        proto.receive_data(sock.recv(4096))
    if proto.state is not State.OPEN:
        raise RuntimeError(f"handshake failed: {proto.handshake_exc}")
    return sock, proto


def send(sock: socket.socket, proto: Any, frame: dict[str, Any]) -> None:
    proto.send_text(orjson.dumps(frame))
    sock.sendall(b"".join(proto.data_to_send()))


def stuck_callee(url: str, function_id: str) -> socket.socket:
    """Declares itself, registers ``function_id``, and never reads again."""
    sock, proto = raw_ws(url, rcvbuf=4096)
    send(sock, proto, orjson.loads(wire.worker_hello("perf-stuck")))
    send(sock, proto, {"type": "registerfunction", "id": function_id})
    return sock


async def routed(url: str, function_id: str, timeout: float = 10.0) -> None:
    """Until a call to ``function_id`` is not ``function_not_found`` (no answer within
    0.3 s: it was delivered to the callee, which never answers)."""
    caller = wire.Caller(await wire.open_ws(url))
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                frame = await caller.call(function_id, {}, timeout=0.3)
            except asyncio.TimeoutError:
                return
            if wire.error_code(frame) != FUNCTION_NOT_FOUND:
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"{function_id} never routed")
    finally:
        await caller.close()


def flood_main(url: str, function_id: str, calls: int, size: int, done: Any) -> None:
    """Send ``calls`` void calls of ``size`` bytes to ``function_id``; set ``done``; idle."""
    sock, proto = raw_ws(url)
    send(sock, proto, orjson.loads(wire.worker_hello("perf-flood")))
    proto.send_text(orjson.dumps({"type": "invokefunction", "function_id": function_id,
                                  "data": {"b": "x" * size}, "action": {"type": "void"}}))
    batch = b"".join(proto.data_to_send()) * 64
    for _ in range(calls // 64):
        sock.sendall(batch)
    sock.sendall(batch[: len(batch) // 64 * (calls % 64)])
    done.set()
    time.sleep(3600)  # connected until the harness stops us


async def _bystander(conn: Any, url: str, function_id: str, flood_done: Any) -> None:
    loop = asyncio.get_running_loop()
    ws = await wire.open_ws(url)
    await ws.send(wire.worker_hello("perf-bystander"), text=True)
    caller = wire.Caller(ws)
    if await wire.probe(caller, function_id, {}, 10.0) is not None:
        raise RuntimeError(f"{function_id} does not answer")
    conn.send({"status": "ready"})
    while True:
        cmd = await loop.run_in_executor(None, conn.recv)
        if cmd.get("cmd") not in ("idle", "flood"):
            break
        latencies: list[int] = []
        errors = 0
        t0 = time.perf_counter()
        end = t0 + cmd.get("seconds", FLOOD_TIMEOUT_S)
        tail_from: float | None = None
        while time.perf_counter() < end:
            if cmd["cmd"] == "flood" and tail_from is None and flood_done.is_set():
                tail_from = time.perf_counter()
                end = tail_from + TAIL_S
            s = time.perf_counter_ns()
            frame = await caller.call(function_id, {"n": len(latencies)}, timeout=30)
            latencies.append(time.perf_counter_ns() - s)
            errors += bool(frame.get("error"))
        out = core.summarize_window(latencies, time.perf_counter() - t0, errors)
        out["flood_s"] = round((tail_from or time.perf_counter()) - t0, 2)
        conn.send({"status": "ok", **out})
    await caller.close()


def bystander_main(conn: Any, url: str, function_id: str, flood_done: Any) -> None:
    try:
        wire.run_loop(_bystander(conn, url, function_id, flood_done))
    except Exception as exc:  # reported, never raised across the process boundary
        conn.send({"status": "error", "reason": f"{type(exc).__name__}: {exc}"})


def rss(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def one_run(h: Any, url: str, gateway_pid: int, bystander: Any, done: Any, idle_s: float) -> dict[str, Any]:
    """One flood at a fresh stuck callee; the bystander process is ready and shares ``done``
    (a multiprocessing Event: set by the flooder once it has sent its last call)."""
    fid = f"bench::stuck::{uuid.uuid4().hex[:8]}"
    stuck = stuck_callee(url, fid)
    flooder = None
    try:
        wire.run_loop(routed(url, fid))
        bystander.send({"cmd": "idle", "seconds": idle_s})
        idle = _reply(bystander, idle_s + 30)
        done.clear()
        h.meter.start()
        before = peak = rss(gateway_pid)
        flooder = h._spawn(flood_main, url, fid, CALLS, SIZE, done)
        bystander.send({"cmd": "flood", "seconds": FLOOD_TIMEOUT_S})
        while not bystander.poll(0.05):
            peak = max(peak, rss(gateway_pid))
        flooded = _reply(bystander, 5)
        foreign = h.meter.stop()
        if not done.is_set():
            raise RuntimeError(f"the flood was not through in {FLOOD_TIMEOUT_S:.0f} s")
        return {"rss_before_mb": round(before, 1), "rss_peak_mb": round(peak, 1),
                "value": round(peak - before, 1), "p50_us": flooded["p50_us"], "p99_us": flooded["p99_us"],
                "idle_p50_us": idle["p50_us"], "idle_p99_us": idle["p99_us"], "flood_s": flooded["flood_s"],
                "ops": flooded["ops"], "errors": flooded["errors"] + idle["errors"],
                "foreign_cores": foreign, "noisy": core.is_noisy(foreign)}
    finally:
        if flooder is not None:
            h.stop(flooder)
        stuck.close()


def _reply(conn: Any, timeout: float) -> dict[str, Any]:
    if not conn.poll(timeout):
        raise RuntimeError("bystander did not answer in time")
    out = conn.recv()
    if out.get("status") != "ok":
        raise RuntimeError(out.get("reason", "bystander failed"))
    return out


def bench(h: Any, eng: Any, emit: Callable[[dict[str, Any]], None]) -> None:
    """The ``slow_consumer`` row: ``settings.runs`` floods against the engine ``eng`` (one
    gateway process, the echo callee of the call benchmarks already serving)."""
    from .benches import ECHO_FN, attach

    variant = f"{CALLS:,} x {SIZE // 1024} KiB voids, stuck callee"
    gws = [pid for pid in eng.gateway_pids() if eng.proc is None or pid != eng.proc.pid]  # not the supervisor
    if len(gws) != 1:
        emit({"target": "engine", "bench": "slow_consumer", "variant": variant, "status": "error",
              "reason": f"{len(gws)} gateway processes listen on the port, expected 1"})
        return
    done = h.ctx.Event()
    parent, child = h.ctx.Pipe()
    proc = h._spawn(bystander_main, child, eng.url, ECHO_FN, done)
    runs: list[dict[str, Any]] = []
    try:
        ready = parent.recv() if parent.poll(30) else {"status": "error", "reason": "bystander not ready"}
        if ready.get("status") != "ready":
            raise RuntimeError(ready.get("reason", "bystander failed"))
        for n in range(h.settings.runs):
            h.progress(f"engine slow_consumer run {n + 1}/{h.settings.runs}")
            runs.append(one_run(h, eng.url, gws[0], parent, done, max(1.0, h.settings.seconds)))
        parent.send({"cmd": "stop"})
    except Exception as exc:
        emit({"target": "engine", "bench": "slow_consumer", "variant": variant, "status": "error",
              "reason": f"{type(exc).__name__}: {exc}"})
        return
    finally:
        h.stop(proc)
    m = core.median_metrics(runs, ("p50_us", "p99_us", "idle_p50_us", "idle_p99_us", "flood_s"))
    grown = round(max(x["rss_peak_mb"] for x in runs) - runs[0]["rss_before_mb"], 1)
    r = {"target": "engine", "bench": "slow_consumer", "variant": variant, "status": "ok", "unit": "MB",
         "runs": runs, "noisy": any(x.get("noisy") for x in runs),
         "metrics": {"value": grown, "p50_us": m["p50_us"], "p99_us": m["p99_us"]},
         "note": (f"gateway RSS +{grown:.1f} MB over {len(runs)} floods (each read in {m['flood_s']:.1f} s); "
                  f"bystander p99 {m['idle_p99_us']:,.0f} us idle -> {m['p99_us']:,.0f} us flooded "
                  f"(x{m['p99_us'] / max(m['idle_p99_us'], 1e-9):.1f}); x p50 is idle/flooded")}
    idle = {"target": "engine", "variant": "bystander idle", "status": "ok",
            "metrics": {"p50_us": m["idle_p50_us"], "p99_us": m["idle_p99_us"]}}
    emit(attach(r, idle))
