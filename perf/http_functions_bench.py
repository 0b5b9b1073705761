"""The ``http_function_call`` benchmark (issue 14): calls/s of an HTTP-invoked function against
a WebSocket worker's function, and against the same HTTP request made directly, in one run.

Every figure comes from the same caller (``perf.wire``: raw frames, orjson, uvloop) on one
engine of this module's own (gateway + iii-http-functions allowing 127.0.0.1):

- ``ws``: ``bench::ws``, served by a WebSocket callee process that echoes the data;
- ``http-fn``: ``bench::http``, registered with ``invocation`` by a worker connection of this
  process; the engine's http_functions process POSTs each call to an HTTP echo server (its
  own process: one uvloop protocol answering every request with its body);
- ``direct``: the harness's own pooled aiohttp client POSTing the same body to that server,
  no engine: what a worker doing the request itself would pay.

Each figure is the median of ``--runs`` windows of ``--seconds``, the three kinds
interleaved window by window (load on the shared machine hits them alike). The table gives
``http-fn / ws`` and ``http-fn / direct`` as ratios.
Usage: ``python -m perf.http_functions_bench [--seconds S] [--runs N] [--json]``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

import orjson
import yaml

from . import wire
from .engine import ROOT, supervisor_cmd
from .servers import free_port

INFLIGHTS = (1, 16)


class _Echo(asyncio.Protocol):
    """HTTP/1.1 keep-alive echo: the request body back as the JSON response."""

    def connection_made(self, transport: Any) -> None:
        self.t, self.buf = transport, b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            size = 0
            for line in self.buf[:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    size = int(value)
            if len(self.buf) < end + 4 + size:
                return
            body, self.buf = self.buf[end + 4:end + 4 + size], self.buf[end + 4 + size:]
            self.t.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(body), body))


def _http_server(port: int) -> None:
    import uvloop

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_Echo, "127.0.0.1", port)
        await server.serve_forever()
    uvloop.run(main())


def _callee(url: str) -> None:
    wire.run_loop(wire.serve_callee(url, ["bench::ws"], [], lambda: None, lambda p: None))


def _config(runtime_dir: str, port: int) -> dict[str, Any]:
    return {"engine": {"runtime_dir": runtime_dir, "data_dir": os.path.join(runtime_dir, "data")},
            "workers": [{"name": "iii-worker-manager", "config": {"port": port, "host": "127.0.0.1"}},
                        {"name": "iii-http-functions", "config": {"security": {
                            "url_allowlist": ["127.0.0.1"], "block_private_ips": False, "require_https": False}}}]}


async def _measure(url: str, http_port: int, seconds: float, runs: int) -> dict[str, dict[int, list[float]]]:
    import aiohttp
    owner = await wire.open_ws(url)
    await owner.send(wire.worker_hello("perf-http-owner"), text=True)
    await owner.send(orjson.dumps({"type": "registerfunction", "id": "bench::http", "invocation": {
        "url": f"http://127.0.0.1:{http_port}/echo", "method": "POST", "timeout_ms": 10000}}), text=True)
    caller = wire.Caller(await wire.open_ws(url))
    for fid in ("bench::ws", "bench::http"):
        failure = await wire.probe(caller, fid, {"warm": 1}, 20.0)
        if failure is not None:
            raise RuntimeError(f"{fid} does not answer: {failure}")
    data = {"a": 1, "b": 2, "text": "x" * 64}
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    body = orjson.dumps(data)

    async def direct(_c: Any, _n: int) -> dict[str, Any]:
        async with session.post(f"http://127.0.0.1:{http_port}/echo", data=body,
                                headers={"content-type": "application/json"}) as resp:
            return {"result": orjson.loads(await resp.read())}

    kinds = {"ws": lambda c, n: c.call("bench::ws", data), "http-fn": lambda c, n: c.call("bench::http", data),
             "direct": direct}
    out: dict[str, dict[int, list[float]]] = {k: {i: [] for i in INFLIGHTS} for k in kinds}
    try:
        for inflight in INFLIGHTS:
            for _ in range(runs):
                for kind, make in kinds.items():
                    r = await wire.measure([caller], inflight, seconds, make)
                    if r.get("errors"):
                        raise RuntimeError(f"{kind}: {r['errors']} calls failed")
                    out[kind][inflight].append(r["throughput"])
    finally:
        await session.close()
        await caller.close()
        await owner.close()
    return out


async def _accepting(url: str) -> None:
    ws = await wire.open_ws(url, 1.0)
    await ws.close()


def run(seconds: float, runs: int) -> list[dict[str, Any]]:
    port, http_port = free_port(), free_port()
    runtime_dir = tempfile.mkdtemp(prefix="iii-", dir="/tmp")
    cfg = os.path.join(runtime_dir, "bench.yaml")
    with open(cfg, "w") as fh:
        yaml.safe_dump(_config(runtime_dir, port), fh)
    ctx = mp.get_context("spawn")
    server = ctx.Process(target=_http_server, args=(http_port,), daemon=True)
    server.start()
    log = open(os.path.join(runtime_dir, "supervisor.log"), "wb")
    engine = subprocess.Popen([*supervisor_cmd(), "start", cfg], stdout=log, stderr=subprocess.STDOUT,
                              cwd=str(ROOT), start_new_session=True)
    callee = None
    try:
        url = f"ws://127.0.0.1:{port}/"
        deadline = time.monotonic() + 30
        while True:
            try:
                wire.run_loop(_accepting(url))
                break
            except Exception:
                if time.monotonic() > deadline or engine.poll() is not None:
                    raise RuntimeError("engine did not start")
                time.sleep(0.2)
        callee = ctx.Process(target=_callee, args=(url,), daemon=True)
        callee.start()
        figures = wire.run_loop(_measure(url, http_port, seconds, runs))
    finally:
        for proc in (callee, server):
            if proc is not None:
                proc.terminate()
        engine.terminate()
        engine.wait(10)
        log.close()
    rows = []
    for inflight in INFLIGHTS:
        med = {k: statistics.median(v[inflight]) for k, v in figures.items()}
        rows.append({"bench": "http_function_call", "variant": f"{inflight} in flight",
                     "calls_per_s": {k: round(v) for k, v in med.items()},
                     "x_ws": round(med["http-fn"] / med["ws"], 2), "x_direct": round(med["http-fn"] / med["direct"], 2),
                     "runs": {k: [round(x) for x in v[inflight]] for k, v in figures.items()}})
    return rows


def bench(h: Any, emit: Callable[[dict[str, Any]], None]) -> None:
    """The rows of ``python -m perf run``: per in-flight count, the WebSocket function (the
    baseline), the direct request, and the HTTP-invoked function against the baseline."""
    from .benches import attach

    try:
        rows = run(h.settings.seconds, h.settings.runs)
    except (RuntimeError, OSError) as exc:
        emit({"target": "engine", "bench": "http_function_call", "variant": "", "status": "error",
              "reason": f"{type(exc).__name__}: {exc}"})
        return
    for r in rows:
        made = {}
        for target, key in (("ws-function", "ws"), ("direct-aiohttp", "direct"), ("engine", "http-fn")):
            made[key] = {"target": target, "bench": "http_function_call", "variant": r["variant"], "status": "ok",
                         "unit": "calls/s", "runs": [{"throughput": x} for x in r["runs"][key]], "noisy": False,
                         "metrics": {"throughput": r["calls_per_s"][key]}, "raw": {"throughput": r["calls_per_s"][key]}}
        emit(made["ws"])
        emit(made["direct"])
        made["http-fn"]["note"] = f"{r['x_direct']:.2f}x the same request made directly"
        emit(attach(made["http-fn"], made["ws"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = run(args.seconds, args.runs)
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"{'bench':<20} {'variant':<13} {'ws/s':>8} {'http-fn/s':>10} {'direct/s':>9} {'x ws':>6} {'x direct':>9}")
    for r in rows:
        c = r["calls_per_s"]
        print(f"{r['bench']:<20} {r['variant']:<13} {c['ws']:>8,} {c['http-fn']:>10,} {c['direct']:>9,} "
              f"{r['x_ws']:>6.2f} {r['x_direct']:>9.2f}")


if __name__ == "__main__":
    sys.exit(main())
