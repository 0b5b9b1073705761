"""The HTTP worker's benchmarks (issue 13): ``http_single_route``, ``http_concurrency`` and ``http_routes``.

A client process keeps C keep-alive connections, each with one request in flight (GET, a
12-byte answer), for ``seconds``; a run's figures are requests/s and the p50/p99 of the
request latencies. Targets, all in the same run and driven by the same client:

- ``bare``: one process serving HTTP with our server (httptools on uvloop, the HTTP
  worker's own ``HttpServer``) that answers every request itself: the Python HTTP limit
  here;
- ``relay``: one process that turns each request into an ``invokefunction`` to a worker
  (the harness's echo callee) over one WebSocket and answers with its result: an HTTP ->
  WebSocket worker relay with no bus, no router, no second process;
- ``engine``: iii-http in the engine, an ``http`` trigger bound to the same callee.

``http_single_route``: 1 connection; ``http_concurrency``: 1, 16 and 128 connections;
``http_routes``: 16 connections against one route among 1, 100 and 1,000 bound routes.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, Callable

import httptools
import orjson
from websockets.asyncio.server import serve

from . import core, wire
from .engine_benches import EngineDown, start_engine
from .servers import free_port

CONCURRENCY = (1, 16, 128)
ROUTES = (1, 100, 1000)
FN = "bench::http"


# ---- the client (its own process) ----------------------------------------------------------

class _Reader:
    """Reads one response at a time from a keep-alive connection (httptools parser)."""

    def __init__(self) -> None:
        self.done = False
        self.parser = httptools.HttpResponseParser(self)

    def on_message_complete(self) -> None:
        self.done = True


async def _one_conn(host: str, port: int, path: str, until: float, lat: list[float]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    try:
        while time.perf_counter() < until:
            t0 = time.perf_counter()
            writer.write(request)
            r = _Reader()
            while not r.done:
                data = await reader.read(65536)
                if not data:
                    return
                r.parser.feed_data(data)
            lat.append(time.perf_counter() - t0)
    finally:
        writer.close()


async def _load(host: str, port: int, path: str, conns: int, seconds: float, warmup: float) -> dict[str, Any]:
    lat: list[float] = []
    start = time.perf_counter()
    await asyncio.gather(*(_one_conn(host, port, path, start + warmup + seconds, lat) for _ in range(conns)))
    # the warm-up's requests are the first ones of each connection: drop that share
    keep = lat[int(len(lat) * warmup / (warmup + seconds)):]
    keep.sort()
    n = len(keep)
    return {"status": "ok", "throughput": n / seconds, "p50_us": keep[n // 2] * 1e6 if n else 0.0,
            "p99_us": keep[min(n - 1, int(n * 0.99))] * 1e6 if n else 0.0, "requests": n}


def client_main(conn: Any) -> None:
    async def main() -> None:
        while True:
            cmd = conn.recv()
            if cmd.get("cmd") == "stop":
                return
            try:
                conn.send(await _load(cmd["host"], cmd["port"], cmd["path"], cmd["conns"], cmd["seconds"],
                                      cmd["warmup"]))
            except OSError as exc:
                conn.send({"status": "error", "reason": repr(exc)})
    wire.run_loop(main())


# ---- the baselines (their own processes) ---------------------------------------------------

def bare_main(port: int, ready: Any) -> None:
    from brokers.http.response import Reply
    from brokers.http.server import HttpServer

    body = b'{"ok":true}\n'
    headers = [(b"content-type", b"application/json")]

    async def app(req: Any, out: Any) -> None:
        await req.read()
        out.send(Reply(200, list(headers), body))

    async def main() -> None:
        server = HttpServer(app, None)
        from brokers.kit import listen
        await server.start(listen.listener("127.0.0.1", port), 1024)
        ready.set()
        await asyncio.Future()
    wire.run_loop(main())


def relay_main(port: int, ws_port: int, ready: Any) -> None:
    """HTTP in, one ``invokefunction`` per request to the worker that connects on ``ws_port``."""
    from brokers.http.response import from_result
    from brokers.http.server import HttpServer

    async def main() -> None:
        worker: dict[str, Any] = {}
        waiting: dict[str, asyncio.Future] = {}
        connected = asyncio.Event()

        async def on_worker(ws: Any) -> None:
            worker["ws"] = ws
            connected.set()
            async for msg in ws:
                frame = orjson.loads(msg)
                fut = waiting.pop(frame.get("invocation_id"), None)
                if fut is not None and not fut.done():
                    fut.set_result(frame.get("result"))

        async def app(req: Any, out: Any) -> None:
            await req.read()
            iid = str(uuid.uuid4())
            fut = asyncio.get_running_loop().create_future()
            waiting[iid] = fut
            await worker["ws"].send(orjson.dumps({"type": "invokefunction", "invocation_id": iid,
                                                  "function_id": FN, "data": {"path": req.path}}), text=True)
            out.send(from_result(await fut))

        async with serve(on_worker, "127.0.0.1", ws_port, compression=None):
            from brokers.kit import listen
            server = HttpServer(app, None)
            await server.start(listen.listener("127.0.0.1", port), 1024)
            ready.set()
            await asyncio.Future()
    wire.run_loop(main())


# ---- the rows -----------------------------------------------------------------------------

def _measure(h: Any, parent: Any, port: int, path: str, conns: int) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    while core.need_more_runs(runs, h.settings.runs, h.settings.max_attempts):
        h.meter.start()
        parent.send({"cmd": "run", "host": "127.0.0.1", "port": port, "path": path, "conns": conns,
                     "seconds": h.settings.seconds, "warmup": h.settings.warmup})
        out = parent.recv() if parent.poll(h.settings.seconds + 60) else {"status": "error", "reason": "no answer"}
        if out.get("status") != "ok":
            raise RuntimeError(out.get("reason", "client failed"))
        out["foreign_cores"] = h.meter.stop()
        out["noisy"] = core.is_noisy(out["foreign_cores"])
        runs.append(out)
    return core.choose_runs(runs, h.settings.runs)


def _row(target: str, bench: str, variant: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    m = core.median_metrics(runs, ("throughput", "p50_us", "p99_us"))
    return {"target": target, "bench": bench, "variant": variant, "status": "ok", "unit": "req/s",
            "runs": runs, "noisy": any(r.get("noisy") for r in runs),
            "metrics": {"throughput": m["throughput"], "p50_us": m["p50_us"], "p99_us": m["p99_us"]}, "raw": m}


def _engine_config_workers(http_port: int) -> list[dict[str, Any]]:
    return [{"name": "iii-http", "config": {"host": "127.0.0.1", "port": http_port}}]


def bench(h: Any, emit: Callable[[dict[str, Any]], None]) -> None:
    """Every HTTP row: the bare server and the relay as baselines, then the engine."""
    from .benches import attach

    bare_port, relay_port, ws_port, http_port = free_port(), free_port(), free_port(), free_port()
    ready_bare, ready_relay = h.ctx.Event(), h.ctx.Event()
    bare = h._spawn(bare_main, bare_port, ready_bare)
    relay = h._spawn(relay_main, relay_port, ws_port, ready_relay)
    parent, child = h.ctx.Pipe()
    client = h._spawn(client_main, child)
    eng = None
    try:
        if not (ready_bare.wait(15) and ready_relay.wait(15)):
            raise RuntimeError("a baseline server did not start")
        h.start_callee(f"ws://127.0.0.1:{ws_port}/", [FN])
        eng, _ = start_engine(1, extra_workers=_engine_config_workers(http_port))
        routes = [{"trigger_type": "http", "function_id": FN,
                   "config": {"api_path": f"bench/r{i}/:id", "http_method": "GET"}} for i in range(max(ROUTES))]
        h.start_callee(eng.url, [FN], routes[:1])
        time.sleep(0.5)
        shapes = [("http_single_route", "1 conn", 1, 1)] + \
                 [("http_concurrency", f"{c} conns", c, 1) for c in CONCURRENCY] + \
                 [("http_routes", f"{n} routes", 16, n) for n in ROUTES]
        bound = 1
        for bench_name, variant, conns, nroutes in shapes:
            if nroutes > bound:
                h.start_callee(eng.url, [f"{FN}::{nroutes}"], [dict(r, function_id=f"{FN}::{nroutes}")
                                                              for r in routes[bound:nroutes]])
                bound = nroutes
                time.sleep(1.0)
            path = "/bench/r0/x"
            h.progress(f"{bench_name} {variant}: bare")
            base_bare = _row("bare", bench_name, variant, _measure(h, parent, bare_port, path, conns))
            emit(base_bare)
            h.progress(f"{bench_name} {variant}: relay")
            base_relay = _row("relay", bench_name, variant, _measure(h, parent, relay_port, path, conns))
            emit(attach(base_relay, base_bare))
            h.progress(f"{bench_name} {variant}: engine")
            r = _row("engine", bench_name, variant, _measure(h, parent, http_port, path, conns))
            r["note"] = (f"{r['raw']['throughput'] / max(base_bare['raw']['throughput'], 1e-9):.2f}x the bare server; "
                         f"p99/p50 {r['raw']['p99_us'] / max(r['raw']['p50_us'], 1e-9):.1f}")
            emit(attach(r, base_relay))
        parent.send({"cmd": "stop"})
    except (RuntimeError, EngineDown, OSError, EOFError) as exc:
        emit({"target": "engine", "bench": "http_single_route", "variant": "", "status": "error",
              "reason": f"{type(exc).__name__}: {exc}"})
    finally:
        if eng is not None:
            eng.stop()
        for proc in (client, bare, relay):
            h.stop(proc)
