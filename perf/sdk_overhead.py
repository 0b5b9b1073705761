"""Our Python SDK's own overhead: SDK workers against the minimal protocol client, same engine.

Owns the SDK pairs (``PAIRS``: caller kind -> callee function; what each pair shows and how
to read the figures is in perf/README.md, "sdk_overhead") and their measurement. Invariants:
every caller and every callee is its own OS process (multiprocessing, spawn); the pairs run
interleaved, window by window, so foreign load hits every pair alike; a figure is the
median of ``runs`` windows and its ratio is to ``raw->raw`` at the same in-flight count.
``run(url, seconds)`` is the harness's entry (``perf/engine_benches.py``): its top-level
``throughput``/``p50_us``/``p99_us`` are ``sync->def`` at 16 in flight.
Usage: ``.venv/bin/python -m perf.sdk_overhead [ws://host:port] [--seconds S] [--runs N]``
(without a URL it starts its own engine with ``perf.engine``).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import threading
import time
import uuid
from typing import Any

import psutil

from perf import core, wire

RAW_FN, DEF_FN, ADEF_FN = "perf::raw-echo", "perf::sdk-echo", "perf::sdk-aecho"
PAIRS = {  # name -> (caller kind, callee function); "raw" is perf.wire, the rest our SDK
    "raw->raw": ("raw", RAW_FN), "sync->raw": ("sync", RAW_FN), "async->raw": ("async", RAW_FN),
    "shared->raw": ("shared", RAW_FN),
    "raw->def": ("raw", DEF_FN), "raw->adef": ("raw", ADEF_FN), "sync->def": ("sync", DEF_FN),
}
INFLIGHT = (1, 16)
PROBE_S = 10.0


# -- callee processes ----------------------------------------------------------------------
def _sdk_callee_main(url: str, ready: Any) -> None:
    from iii import InitOptions, register_worker

    def echo(data: Any) -> Any:
        return data

    async def aecho(data: Any) -> Any:
        return data

    iii = register_worker(url, InitOptions(worker_name="perf-sdk-callee"))
    iii.register_function(DEF_FN, echo)
    iii.register_function(ADEF_FN, aecho)
    iii.wait_connected(10)
    ready.set()
    threading.Event().wait()  # serve until terminated


def _raw_callee_main(url: str, ready: Any) -> None:
    wire.run_loop(wire.serve_callee(url, [RAW_FN], [], lambda: None, lambda _port: ready.set()))


# -- caller processes: ready, then one window per ("go", inflight, seconds) -------------------
def _caller_main(conn: Any, url: str, kind: str, function_id: str) -> None:
    try:
        if kind == "raw":
            wire.run_loop(_raw_caller(conn, url, function_id))
        elif kind == "sync":
            _sync_caller(conn, url, function_id)
        else:
            wire.run_loop(_async_caller(conn, url, function_id, shared=kind == "shared"))
    except Exception as exc:  # reported, never raised across the process boundary
        conn.send({"status": "error", "reason": f"{type(exc).__name__}: {exc}"})


async def _raw_caller(conn: Any, url: str, function_id: str) -> None:
    ws = await wire.open_ws(url)
    await ws.send(wire.worker_hello("perf-raw-caller"), text=True)
    caller = wire.Caller(ws)
    failure = await wire.probe(caller, function_id, {"n": 0}, PROBE_S)
    conn.send({"status": "ready"} if failure is None else {"status": "error", "reason": failure})
    loop = asyncio.get_running_loop()
    while (cmd := await loop.run_in_executor(None, conn.recv))[0] == "go":
        cpu0 = time.process_time()
        out = await wire.measure([caller], cmd[1], cmd[2], lambda c, n: c.call(function_id, {"n": n}))
        conn.send({**out, "cpu_s": time.process_time() - cpu0})
    await caller.close()


def _sdk_worker(url: str, name: str, shared: bool = False) -> Any:
    from iii import InitOptions, register_worker

    # unique: two live workers with one name in one namespace are a conflict (protocol.md §4.3)
    return register_worker(url, InitOptions(worker_name=f"{name}-{uuid.uuid4().hex[:8]}", daemon=True,
                                            run_on_running_loop=shared))


def _probe_sdk(iii: Any, function_id: str) -> None:
    from iii import InvocationError

    deadline = time.monotonic() + PROBE_S
    while True:  # until the callee's registration is routable
        try:
            iii.trigger({"function_id": function_id, "payload": {"n": 0}, "timeout_ms": 2000})
            return
        except InvocationError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _sync_caller(conn: Any, url: str, function_id: str) -> None:
    from iii import InvocationError

    iii = _sdk_worker(url, "perf-sdk-sync-caller")
    if not iii.wait_connected(10):
        raise RuntimeError(f"could not connect to {url}")
    _probe_sdk(iii, function_id)
    conn.send({"status": "ready"})
    while (cmd := conn.recv())[0] == "go":
        inflight, seconds = cmd[1], cmd[2]
        lat: list[list[int]] = [[] for _ in range(inflight)]
        errors = [0] * inflight
        stop_at = time.perf_counter() + seconds

        def lane(i: int) -> None:
            samples, n = lat[i], 0
            while time.perf_counter() < stop_at:
                n += 1
                t0 = time.perf_counter_ns()
                try:
                    iii.trigger({"function_id": function_id, "payload": {"n": n}})
                except InvocationError:
                    errors[i] += 1
                samples.append(time.perf_counter_ns() - t0)

        threads = [threading.Thread(target=lane, args=(i,)) for i in range(inflight)]
        start, cpu0 = time.perf_counter(), time.process_time()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        out = core.summarize_window([x for s in lat for x in s], time.perf_counter() - start, sum(errors))
        conn.send({**out, "cpu_s": time.process_time() - cpu0})
    iii.shutdown()


async def _async_caller(conn: Any, url: str, function_id: str, shared: bool) -> None:
    """``shared``: the SDK runs on this loop (``run_on_running_loop``), else on its own thread."""
    from iii import InvocationError

    iii = _sdk_worker(url, "perf-sdk-async-caller", shared)
    if not await iii.wait_connected_async(10):
        raise RuntimeError(f"could not connect to {url}")
    deadline = time.monotonic() + PROBE_S
    while True:  # until the callee's registration is routable
        try:
            await iii.trigger_async({"function_id": function_id, "payload": {"n": 0}, "timeout_ms": 2000})
            break
        except InvocationError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)
    conn.send({"status": "ready"})
    loop = asyncio.get_running_loop()
    while (cmd := await loop.run_in_executor(None, conn.recv))[0] == "go":
        inflight, seconds = cmd[1], cmd[2]
        lat: list[int] = []
        errors = 0
        stop_at = time.perf_counter() + seconds

        async def lane() -> None:
            nonlocal errors
            n = 0
            while time.perf_counter() < stop_at:
                n += 1
                t0 = time.perf_counter_ns()
                try:
                    await iii.trigger_async({"function_id": function_id, "payload": {"n": n}})
                except InvocationError:
                    errors += 1
                lat.append(time.perf_counter_ns() - t0)

        start, cpu0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(lane() for _ in range(inflight)))
        out = core.summarize_window(lat, time.perf_counter() - start, errors)
        conn.send({**out, "cpu_s": time.process_time() - cpu0})
    await iii.shutdown_async()


# -- the run ---------------------------------------------------------------------------------
def measure(url: str, seconds: float, runs: int = 1, pairs: list[str] | None = None) -> dict[str, Any]:
    """Every pair x in-flight count, ``runs`` interleaved windows each; medians and ratios."""
    ctx = multiprocessing.get_context("spawn")
    procs: list[Any] = []
    callee_of: dict[str, psutil.Process] = {}
    try:
        for target in (_raw_callee_main, _sdk_callee_main):
            ready = ctx.Event()
            procs.append(ctx.Process(target=target, args=(url, ready), daemon=True))
            procs[-1].start()
            if not ready.wait(15):
                raise RuntimeError(f"{target.__name__} not ready in 15 s")
            for fid in ((RAW_FN,) if target is _raw_callee_main else (DEF_FN, ADEF_FN)):
                callee_of[fid] = psutil.Process(procs[-1].pid)
        names = ["raw->raw", *[p for p in (pairs or PAIRS) if p != "raw->raw"]]
        callers: dict[str, Any] = {}
        for name in names:
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_caller_main, args=(child, url, *PAIRS[name]), daemon=True)
            p.start()
            procs.append(p)
            if not parent.poll(30):
                raise RuntimeError(f"caller {name} not ready in 30 s")
            status = parent.recv()
            if status.get("status") != "ready":
                raise RuntimeError(f"caller {name}: {status}")
            parent.send(("go", 16, min(0.3, seconds)))  # warm-up
            parent.recv()
            callers[name] = parent
        windows: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for _ in range(runs):
            for n in INFLIGHT:
                for name in names:
                    callee = callee_of[PAIRS[name][1]]
                    cpu0 = sum(callee.cpu_times()[:2])
                    callers[name].send(("go", n, seconds))
                    w = callers[name].recv()
                    w["callee_cpu_s"] = sum(callee.cpu_times()[:2]) - cpu0
                    windows.setdefault((name, n), []).append(w)
        for conn in callers.values():
            conn.send(("stop",))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
    return _figures(windows)


def _figures(windows: dict[tuple[str, int], list[dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for (name, n), ws in windows.items():
        fig = {k: statistics.median(w[k] for w in ws) for k in ("throughput", "p50_us", "p99_us")}
        fig["errors"] = sum(w["errors"] for w in ws)
        # CPU per call is what load on a shared machine disturbs least
        for side in ("cpu_s", "callee_cpu_s"):
            fig[side.replace("cpu_s", "cpu_us")] = round(statistics.median(
                w[side] / w["ops"] * 1e6 if w["ops"] else float("nan") for w in ws), 1)
        base = windows.get(("raw->raw", n))
        if base and name != "raw->raw":
            fig["ratio"] = core.ratio(fig["throughput"], statistics.median(w["throughput"] for w in base))
        out[f"{name}@{n}"] = fig
    return out


def run(url: str, seconds: float) -> dict[str, Any]:
    """The perf harness's entry: flat figures; the headline is ``sync->def`` at 16 in flight."""
    figures = measure(url, seconds)
    head = figures["sync->def@16"]
    out: dict[str, Any] = {"shape": "our SDK, sync trigger -> def handler, 16 in flight, caller and "
                                    "callee in separate processes",
                           "throughput": head["throughput"], "p50_us": head["p50_us"], "p99_us": head["p99_us"]}
    for key, fig in figures.items():
        for metric, value in fig.items():
            out[f"{key}.{metric}"] = value
    return out


def _table(figures: dict[str, Any]) -> str:
    lines = [f"{'pair@inflight':<16}{'calls/s':>10}{'p50 us':>9}{'p99 us':>9}{'vs raw':>8}{'errors':>7}"
             f"{'caller cpu us/call':>20}{'callee cpu us/call':>20}"]
    for key, f in figures.items():
        ratio = f"{f['ratio']:.2f}" if f.get("ratio") is not None else "-"
        lines.append(f"{key:<16}{f['throughput']:>10.0f}{f['p50_us']:>9.0f}{f['p99_us']:>9.0f}{ratio:>8}{f['errors']:>7}"
                     f"{f['cpu_us']:>20.1f}{f['callee_cpu_us']:>20.1f}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("url", nargs="?", help="engine URL; default: start one (perf.engine)")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--pairs", nargs="*", choices=list(PAIRS))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    eng = None
    url = args.url
    if url is None:
        from perf import engine, servers

        eng = engine.Engine(servers.free_port())
        eng.start()
        url = eng.url
    try:
        figures = measure(url, args.seconds, args.runs, args.pairs)
    finally:
        if eng is not None:
            eng.stop()
    print(json.dumps(figures, indent=1) if args.json else _table(figures))


if __name__ == "__main__":
    main()
