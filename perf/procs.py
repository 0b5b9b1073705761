"""Load-generator processes: the caller, the callee and the control-plane churner.

Each runs in its own OS process (multiprocessing, spawn) with its own event loop, so load
generation never shares a core's loop with the server under test. The caller talks to the
harness over a Pipe: it connects, probes, reports ``ready`` (or ``n/a`` when the engine
lacks the feature), then measures one window per ``go`` command, so the harness can repeat
a window that was taken under foreign load without reconnecting.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import orjson
import psutil

from brokers.kit.errors import FUNCTION_NOT_FOUND

from . import wire

PROBE_TIMEOUT = 5.0


def make_data(kind: str, size: int, n: int) -> Any:
    """The payload of call ``n`` for a benchmark kind."""
    if kind == "blob":
        return {"blob": "x" * size}
    if kind == "state_set":
        return {"scope": "bench", "key": f"k{n % 100}", "value": {"n": n}}
    if kind == "state_get":
        return {"scope": "bench", "key": f"k{n % 100}"}
    if kind == "fan":
        return {"scope": "fan", "key": f"k{n % 100}", "value": {"n": n}}
    return {"n": n}


def gateway_of(port: int, gateway_pids: list[int], engine_port: int) -> int | None:
    """Which gateway process holds the TCP connection whose client side is ``port``."""
    for pid in gateway_pids:
        try:
            conns = psutil.Process(pid).net_connections(kind="tcp")
        except psutil.Error:
            continue
        for c in conns:
            if c.laddr and c.laddr.port == engine_port and c.raddr and c.raddr.port == port:
                return pid
    return None


async def _placed_ws(url: str, placement: dict[str, Any] | None) -> tuple[Any, int | None]:
    """Connect; with a placement, reconnect until the kernel's SO_REUSEPORT choice puts this
    connection on the same / the other gateway process as the callee."""
    ws = await wire.open_ws(url)
    if not placement:
        return ws, None
    for _ in range(80):
        await asyncio.sleep(0.02)  # let the gateway accept before we look at its sockets
        mine = gateway_of(wire.local_port(ws), placement["gateway_pids"], placement["engine_port"])
        theirs = gateway_of(placement["callee_port"], placement["gateway_pids"],
                            placement["engine_port"])
        if mine is not None and theirs is not None and (mine == theirs) == (placement["want"] == "same"):
            return ws, mine
        await ws.close()
        ws = await wire.open_ws(url)
    raise RuntimeError(f"could not place the caller on the {placement['want']} gateway")


async def _caller(conn: Any, spec: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    call = spec["call"]
    fid, kind, size, action = call["function_id"], call.get("kind", "small"), call.get("size", 0), call.get("action")
    callers: list[wire.Caller] = []
    gateway = None
    for _ in range(spec.get("connections", 1)):
        ws, gateway = await _placed_ws(spec["url"], spec.get("placement"))
        await ws.send(wire.worker_hello("perf-caller"), text=True)
        callers.append(wire.Caller(ws))
    failure = await wire.probe(callers[0], fid, make_data(kind, size, 0),
                               spec.get("probe_timeout", PROBE_TIMEOUT), action)
    if failure is not None:
        # only a missing function (or no answer at all) means "feature not available";
        # any other error code is the engine failing the call, reported as an error
        missing = failure in (FUNCTION_NOT_FOUND, "no answer", "timeout")
        conn.send({"status": "n/a" if missing else "error", "reason": f"{fid}: {failure}"})
        return
    if kind == "state_get":  # reads must hit: write every key first
        for n in range(100):
            await callers[0].call("state::set", make_data("state_set", 0, n))
    # warm-up: a short burst so the first window does not pay for connection set-up
    await wire.measure(callers, spec["inflight"], spec.get("warmup", 0.2),
                       lambda c, n: c.call(fid, make_data(kind, size, n), action))
    conn.send({"status": "ready", "gateway_pid": gateway})
    while True:
        cmd = await loop.run_in_executor(None, conn.recv)
        if cmd.get("cmd") != "go":
            break
        cpu0 = time.process_time()
        out = await wire.measure(callers, spec["inflight"], cmd.get("seconds", spec["seconds"]),
                                 lambda c, n: c.call(fid, make_data(kind, size, n), action))
        out["loadgen_cpu_s"] = round(time.process_time() - cpu0, 4)
        conn.send({"status": "ok", **out})
    for c in callers:
        await c.close()


def caller_main(conn: Any, spec: dict[str, Any]) -> None:
    try:
        wire.run_loop(_caller(conn, spec))
    except Exception as exc:  # reported, never raised across the process boundary
        conn.send({"status": "error", "reason": f"{type(exc).__name__}: {exc}"})


def callee_main(spec: dict[str, Any], counter: Any, last: Any, port: Any, ready: Any) -> None:
    """Serve until terminated; ``counter``/``last`` count deliveries and stamp the latest."""
    def delivered() -> None:
        counter.value += 1
        last.value = time.monotonic()

    def got_port(p: int) -> None:
        port.value = p
        ready.set()

    wire.run_loop(wire.serve_callee(spec["url"], spec["functions"], spec.get("triggers", []),
                                    delivered, got_port, echo=spec.get("echo", True)))


async def _churn_cycle(url: str, count: int, tag: str) -> dict[str, Any]:
    """Register ``count`` functions, wait until the last is callable, unregister them all,
    wait until it is gone, then check an ordinary call still works."""
    owner = await wire.open_ws(url)
    await owner.send(wire.worker_hello("perf-churn"), text=True)

    async def answer() -> None:
        async for msg in owner:
            f = orjson.loads(msg)
            if f.get("type") == "invokefunction" and f.get("invocation_id"):
                await owner.send(orjson.dumps({"type": "invocationresult", "invocation_id": f["invocation_id"],
                                               "function_id": f.get("function_id"), "result": None}), text=True)
    answering = asyncio.get_running_loop().create_task(answer())
    caller = wire.Caller(await wire.open_ws(url))
    ids = [f"bench::churn::{tag}::{i}" for i in range(count)]
    t0 = time.perf_counter()
    for fid in ids:
        await owner.send(orjson.dumps({"type": "registerfunction", "id": fid}), text=True)
    if await wire.probe(caller, ids[-1], {}, 10.0) is not None:
        raise RuntimeError("registered functions never became callable")
    t_reg = time.perf_counter()
    for fid in ids:
        await owner.send(orjson.dumps({"type": "unregisterfunction", "id": fid}), text=True)
    deadline = time.monotonic() + 10.0
    while wire.error_code(await caller.call(ids[-1], {})) != FUNCTION_NOT_FOUND:
        if time.monotonic() > deadline:
            raise RuntimeError("unregistered functions stayed callable")
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - t0
    after = wire.error_code(await caller.call("bench::echo", {"n": 1}))
    answering.cancel()
    await owner.close()
    await caller.close()
    return {"status": "ok", "elapsed_s": round(elapsed, 4), "register_s": round(t_reg - t0, 4),
            "throughput": round(2 * count / elapsed, 1), "calls_after": after or "ok"}


def churn_main(conn: Any, spec: dict[str, Any]) -> None:
    """One churn cycle per ``go``; the function ids differ per cycle."""
    while True:
        cmd = conn.recv()
        if cmd.get("cmd") != "go":
            return
        try:
            cpu0 = time.process_time()
            out = wire.run_loop(_churn_cycle(spec["url"], spec.get("count", 1000), uuid.uuid4().hex[:8]))
            out["loadgen_cpu_s"] = round(time.process_time() - cpu0, 4)
            conn.send(out)
        except Exception as exc:
            conn.send({"status": "error", "reason": f"{type(exc).__name__}: {exc}"})
