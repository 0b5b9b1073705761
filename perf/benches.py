"""The benchmarks: what each one sends, and which baseline it is divided by.

Every engine row names a baseline row measured in the same run with the same clients (a
relay row with the same in-flight count / payload / connections); baseline rows are
measured lazily, once, when the first row that needs them runs. Names follow the reference
engine's benches (workers-b.md §7) so figures can be set side by side.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

from . import core, harness, wire
from .harness import Harness, row

ECHO_FN = "bench::echo"
QUEUE_FN = "bench::queue"
SIZES = {"1KB": 1024, "10KB": 10 * 1024, "100KB": 100 * 1024, "1MB": 1024 * 1024}
INFLIGHTS = (1, 16, 64)
CONNS, CONN_INFLIGHT = 4, 16
FANOUTS = (1, 8)


def call_spec(url: str, inflight: int, fid: str = ECHO_FN, kind: str = "small", size: int = 0,
              connections: int = 1, action: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {"url": url, "inflight": inflight, "connections": connections,
            "call": {"function_id": fid, "kind": kind, "size": size, "action": action}, **extra}


def variant_of(inflight: int, size: str = "", connections: int = 1) -> str:
    parts = [f"{connections}x{inflight} in flight" if connections > 1 else f"{inflight} in flight"]
    if size:
        parts.insert(0, size)
    return ", ".join(parts)


async def first_call(url: str, timeout: float) -> str | None:
    """Register a function and call it through ``url``: None once a call succeeded."""
    stop = asyncio.Event()
    callee = asyncio.get_running_loop().create_task(
        wire.serve_callee(url, ["bench::startup"], [], lambda: None, lambda p: None, stop))
    try:
        caller = wire.Caller(await wire.open_ws(url, timeout))
        failure = await wire.probe(caller, "bench::startup", {}, timeout)
        await caller.close()
        return failure
    finally:
        stop.set()
        await asyncio.wait([callee], timeout=2)
        callee.cancel()


class Baselines:
    """The echo server, the relay (with its callee) and the rows measured against them."""

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.urls: dict[str, str] = {}
        self.pids: dict[str, int] = {}
        self.memo: dict[tuple[Any, ...], dict[str, Any]] = {}

    def url(self, kind: str) -> str:
        if kind not in self.urls:
            proc, url = self.h.start_server(kind)
            self.urls[kind], self.pids[kind] = url, proc.pid
            if kind == "relay":
                self.h.start_callee(url, [ECHO_FN])
        return self.urls[kind]

    def forget_servers(self) -> None:
        """The harness stopped every child: start the servers again when next asked."""
        self.urls.clear()
        self.pids.clear()

    def calls(self, kind: str, bench: str, inflight: int, size: str = "", connections: int = 1) -> dict[str, Any]:
        key = (kind, bench, inflight, size, connections)
        if key not in self.memo:
            variant = variant_of(inflight, size, connections)
            spec = call_spec(self.url(kind), inflight, kind="blob" if size else "small",
                             size=SIZES.get(size, 0), connections=connections)
            r = row(kind, bench, variant, self.h.windows(f"{kind} {bench} {variant}", spec), self.h.settings)
            if kind == "relay" and bench == "ws_roundtrip" and size == "" and connections == 1:
                echo = self.calls("echo", bench, inflight)
                attach(r, echo)
            self.memo[key] = r
        return self.memo[key]

    def churn(self, count: int) -> dict[str, Any]:
        key = ("relay", "control_plane_churn", count)
        if key not in self.memo:
            out = self.h.churn_windows("relay control_plane_churn", self.url("relay"), count)
            self.memo[key] = row("relay", "control_plane_churn", f"{count} fns", out, self.h.settings,
                                 keys=("throughput", "elapsed_s"))
        return self.memo[key]

    def startup(self) -> dict[str, Any]:
        """Spawn a fresh relay process and time it to the first successful call."""
        key = ("relay", "startup")
        if key not in self.memo:
            import subprocess
            import sys
            from .servers import free_port
            runs = []
            for n in range(self.h.settings.runs):
                self.h.progress(f"relay startup run {n + 1}/{self.h.settings.runs}")
                port = free_port()
                t0 = time.monotonic()
                proc = subprocess.Popen([sys.executable, "-m", "perf.servers", "relay", str(port)])
                try:
                    failure = wire.run_loop(first_call(f"ws://127.0.0.1:{port}/", 20.0))
                    runs.append({"value": round(time.monotonic() - t0, 3), "failure": failure})
                finally:
                    proc.terminate()
                    proc.wait(5)
            self.memo[key] = {"target": "relay", "bench": "startup", "variant": "spawn to first call",
                              "status": "ok", "unit": "s", "runs": runs,
                              "metrics": core.median_metrics(runs, ("value",))}
        return self.memo[key]

    def memory(self) -> dict[str, Any]:
        import psutil
        key = ("relay", "idle_memory")
        if key not in self.memo:
            rss = round(psutil.Process(self._relay_pid()).memory_info().rss / 2**20, 1)
            self.memo[key] = {"target": "relay", "bench": "idle_memory", "variant": "RSS, 1 process",
                              "status": "ok", "unit": "MB", "metrics": {"value": rss}}
        return self.memo[key]

    def _relay_pid(self) -> int:
        self.url("relay")
        return self.pids["relay"]


def attach(r: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """Name the baseline of a row and put the ratios on it (only when both measured)."""
    r["baseline"] = f"{base['target']} {base['variant']}"
    if r.get("status") == "ok" and base.get("status") == "ok":
        r["ratio"] = core.compare(r["metrics"], base["metrics"])
    return r


def python_version() -> str:
    return harness.python_info()
