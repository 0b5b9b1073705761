"""The ``cron_fire_latency`` benchmark (issue 14): N jobs at ``* * * * * *``, how late is each fire?

One worker process registers one function and binds it N times with ``* * * * * *`` (raw
protocol, ``perf.wire``); the engine's cron process then calls it N times a second. For each
call the worker records its receive time minus the payload's ``scheduled_time`` (the row's
p50/p99: what a handler sees), and ``actual_time`` minus ``scheduled_time`` (the cron
process's own lateness, in the note); it answers every call (a cron job waits for its
answer) after reading what has arrived, so that answering does not delay its clock. A run
measures ``TICKS`` whole ticks after one in which all N jobs fired; ``fired`` is the
share of the N x TICKS expected calls that came (a tick skipped because the job was still
running counts as missing). The cron process's CPU over the run is read with psutil.

Baseline, same run, same worker code: ``tick_server``, one process on uvloop that at every
whole second sends the N calls down the worker's WebSocket itself: the floor of a timer
plus N frames, with no bus, no cron process and no gateway.

Invariants: the engine is this module's own (gateway + iii-cron, the default file store of
the fired mark), started and stopped here; every process it spawns is the harness's.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from typing import Any, Callable

import orjson
import psutil
import yaml
from websockets.asyncio.server import ServerConnection, serve

from . import core, wire
from .engine import Engine
from .engine_benches import EngineDown
from .servers import free_port

JOBS, QUICK_JOBS = (1, 1000, 10_000), (1, 10_000)
TICKS, QUICK_TICKS = 4, 2
FN = "bench::cron"
STARTUP_S = 60.0


# ---- the worker (its own process) ----------------------------------------------------------

def _epoch(text: str, cache: dict[str, float]) -> float:
    value = cache.get(text)
    if value is None:
        value = cache[text] = dt.datetime.fromisoformat(text).timestamp()
    return value


async def _worker(conn: Any, url: str, jobs: int) -> None:
    loop = asyncio.get_running_loop()
    ws = await wire.open_ws(url)
    await ws.send(wire.worker_hello("perf-cron"), text=True)
    await ws.send(orjson.dumps({"type": "registerfunction", "id": FN}), text=True)
    for _ in range(jobs):
        await ws.send(orjson.dumps({"type": "registertrigger", "id": str(uuid.uuid4()), "trigger_type": "cron",
                                    "function_id": FN, "config": {"expression": "* * * * * *"}}), text=True)
    by_tick: dict[float, list[tuple[float, float]]] = {}
    answers: list[bytes] = []
    cache: dict[str, float] = {}

    async def read() -> None:
        loads = orjson.loads
        async for msg in ws:
            got = time.time()
            frame = loads(msg)
            if frame.get("type") != "invokefunction":
                continue
            data = frame["data"]
            at = _epoch(data["scheduled_time"], cache)
            by_tick.setdefault(at, []).append((got - at, _epoch(data["actual_time"], cache) - at))
            if frame.get("invocation_id"):
                answers.append(orjson.dumps({"type": "invocationresult", "invocation_id": frame["invocation_id"],
                                             "function_id": FN, "result": None}))

    async def answer() -> None:
        while True:
            await asyncio.sleep(0.005)
            batch, answers[:] = answers[:], []
            for body in batch:
                await ws.send(body, text=True)

    reader, answerer = loop.create_task(read()), loop.create_task(answer())
    deadline = time.monotonic() + STARTUP_S
    while not any(len(v) >= jobs for v in by_tick.values()):  # every binding is in
        if time.monotonic() > deadline or reader.done():
            conn.send({"status": "error", "reason": f"never {jobs} calls in one tick: "
                       f"{sorted(len(v) for v in by_tick.values())[-3:]}"})
            return
        await asyncio.sleep(0.05)
    conn.send({"status": "ready"})
    while True:
        cmd = await loop.run_in_executor(None, conn.recv)
        if cmd.get("cmd") != "go":
            break
        first = float(int(time.time()) + 1)
        ticks = [first + i for i in range(cmd["ticks"])]
        end = ticks[-1] + 1.5  # the last tick's calls are in by then, or missing
        while time.time() < end and sum(len(by_tick.get(t, ())) for t in ticks) < jobs * len(ticks):
            await asyncio.sleep(0.05)
        seen = [x for t in ticks for x in by_tick.get(t, ())]
        recv = sorted(int(x[0] * 1e9) for x in seen)
        cron = sorted(int(x[1] * 1e9) for x in seen)
        conn.send({"status": "ok", "calls": len(seen), "expected": jobs * len(ticks),
                   "fired": round(len(seen) / (jobs * len(ticks)), 4),
                   "p50_us": round(core.percentile(recv, 50) / 1000, 1),
                   "p99_us": round(core.percentile(recv, 99) / 1000, 1),
                   "cron_p50_us": round(core.percentile(cron, 50) / 1000, 1),
                   "cron_p99_us": round(core.percentile(cron, 99) / 1000, 1)})
        for t in [t for t in by_tick if t < ticks[-1]]:
            del by_tick[t]
    answerer.cancel()
    reader.cancel()
    await ws.close()


def worker_main(conn: Any, url: str, jobs: int) -> None:
    try:
        wire.run_loop(_worker(conn, url, jobs))
    except Exception as exc:  # reported, never raised across the process boundary
        conn.send({"status": "error", "reason": f"{type(exc).__name__}: {exc}"})


# ---- the baseline: a bare per-second timer ------------------------------------------------

async def _tick_server(port: int, ready: Any) -> None:
    async def handle(ws: ServerConnection) -> None:
        await ws.send(orjson.dumps({"type": "workerregistered", "worker_id": str(uuid.uuid4())}), text=True)
        jobs: list[str] = []
        ticker = asyncio.get_running_loop().create_task(_tick(ws, jobs))
        try:
            async for msg in ws:
                frame = orjson.loads(msg)
                if frame.get("type") == "registertrigger":
                    jobs.append(frame["id"])
        except Exception:
            pass
        ticker.cancel()

    async def _tick(ws: ServerConnection, jobs: list[str]) -> None:
        while True:
            at = int(time.time()) + 1
            await asyncio.sleep(at - time.time())
            scheduled = dt.datetime.fromtimestamp(at, dt.timezone.utc).isoformat()
            for job_id in list(jobs):
                actual = dt.datetime.fromtimestamp(time.time(), dt.timezone.utc).isoformat()
                await ws.send(orjson.dumps({"type": "invokefunction", "invocation_id": str(uuid.uuid4()),
                                            "function_id": FN, "data": {"trigger": "cron", "job_id": job_id,
                                                                        "scheduled_time": scheduled,
                                                                        "actual_time": actual}}), text=True)

    async with serve(handle, "127.0.0.1", port, compression=None, ping_interval=None) as server:
        ready.set()
        await server.serve_forever()


def tick_server_main(port: int, ready: Any) -> None:
    wire.run_loop(_tick_server(port, ready))


# ---- the row --------------------------------------------------------------------------------

def _engine() -> Engine:
    eng = Engine(free_port(), 1)
    cfg = {"engine": {"runtime_dir": eng.runtime_dir, "data_dir": f"{eng.runtime_dir}/data"},
           "workers": [{"name": "iii-worker-manager", "config": {"port": eng.port, "processes": 1}},
                       {"name": "iii-cron"}]}
    with open(eng.config_path, "w") as fh:
        yaml.safe_dump(cfg, fh)
    eng.start()
    return eng


def _cron_process(eng: Engine) -> psutil.Process | None:
    for p in eng.processes_info():
        try:
            argv = p.cmdline()
        except psutil.Error:
            continue
        if "run" in argv and argv[argv.index("run") + 1:argv.index("run") + 2] == ["cron"]:
            return p
    return None


def _runs(h: Any, url: str, jobs: int, ticks: int, cron: psutil.Process | None) -> list[dict[str, Any]]:
    parent, child = h.ctx.Pipe()
    proc = h._spawn(worker_main, child, url, jobs)
    try:
        first = parent.recv() if parent.poll(STARTUP_S + 10) else {"status": "error", "reason": "no answer"}
        if first.get("status") != "ready":
            raise RuntimeError(first.get("reason", "worker failed"))
        runs: list[dict[str, Any]] = []
        while core.need_more_runs(runs, h.settings.runs, h.settings.max_attempts):
            h.meter.start()
            cpu0, t0 = (sum(cron.cpu_times()[:2]) if cron else 0.0), time.monotonic()
            parent.send({"cmd": "go", "ticks": ticks})
            out = parent.recv() if parent.poll(ticks + 30) else {"status": "error", "reason": "no answer"}
            if out.get("status") != "ok":
                raise RuntimeError(out.get("reason", "worker failed"))
            if cron is not None:
                out["cron_cores"] = round((sum(cron.cpu_times()[:2]) - cpu0) / (time.monotonic() - t0), 3)
            out["foreign_cores"] = h.meter.stop()
            out["noisy"] = core.is_noisy(out["foreign_cores"])
            runs.append(out)
        parent.send({"cmd": "stop"})
        return core.choose_runs(runs, h.settings.runs)
    finally:
        h.stop(proc)


def _row(target: str, jobs: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("p50_us", "p99_us", "cron_p50_us", "cron_p99_us", "fired", "cron_cores")
    m = core.median_metrics(runs, keys)
    r = {"target": target, "bench": "cron_fire_latency", "variant": f"{jobs:,} jobs at * * * * * *",
         "status": "ok", "unit": "", "runs": runs, "noisy": any(x.get("noisy") for x in runs),
         "metrics": {"p50_us": m["p50_us"], "p99_us": m["p99_us"]}, "raw": m}
    if target == "engine":
        r["note"] = (f"{jobs:,} jobs: fired {m['fired']:.1%} of the ticks; cron's own lateness "
                     f"(actual - scheduled) p50 {m['cron_p50_us']:,.0f} us, p99 {m['cron_p99_us']:,.0f} us; "
                     f"cron process {m.get('cron_cores', 0):.2f} cores")
    return r


def bench(h: Any, emit: Callable[[dict[str, Any]], None]) -> None:
    """Every ``cron_fire_latency`` row: a tick-server baseline and the engine, per N."""
    from .benches import attach

    jobs_list, ticks = (QUICK_JOBS, QUICK_TICKS) if h.settings.quick else (JOBS, TICKS)
    port = free_port()
    ready = h.ctx.Event()
    server = h._spawn(tick_server_main, port, ready)
    eng: Engine | None = None
    try:
        if not ready.wait(15):
            raise RuntimeError("tick server did not start")
        eng = _engine()
        for jobs in jobs_list:
            h.progress(f"cron_fire_latency {jobs} jobs: baseline")
            base = _row("tick-server", jobs, _runs(h, f"ws://127.0.0.1:{port}/", jobs, ticks, None))
            emit(base)
            h.progress(f"cron_fire_latency {jobs} jobs: engine")
            emit(attach(_row("engine", jobs, _runs(h, eng.url, jobs, ticks, _cron_process(eng))), base))
    except (RuntimeError, EngineDown, OSError) as exc:
        emit({"target": "engine", "bench": "cron_fire_latency", "variant": "", "status": "error",
              "reason": f"{type(exc).__name__}: {exc}"})
    finally:
        if eng is not None:
            eng.stop()
        h.stop(server)
