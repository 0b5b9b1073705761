"""Process plumbing of a benchmark run: servers, callees, callers, and repeated windows.

The Harness spawns every load generator as its own process (multiprocessing, spawn), runs
measurement windows under the quietness guard, and turns the windows into one result row
(median of the chosen runs). Invariants: every process it starts it also stops (terminate,
then kill, by its own handle); a window is repeated when foreign load was too high, up to
the attempt budget; a caller that reports ``n/a`` yields an ``n/a`` row, never a number.
"""
from __future__ import annotations

import logging
import multiprocessing
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from . import core, procs, servers
from .quiet import CpuMeter

log = logging.getLogger(__name__)

METRICS = ("throughput", "p50_us", "p99_us")


@dataclass
class Settings:
    seconds: float = 2.0
    warmup: float = 0.4
    runs: int = core.RUNS
    max_attempts: int = 5
    quick: bool = False


@dataclass
class Callee:
    proc: Any
    counter: Any
    last: Any
    port: Any

    def settled(self, quiet_for: float = 0.15, timeout: float = 5.0) -> int:
        """Wait until no delivery arrived for ``quiet_for`` seconds; return the count."""
        deadline = time.monotonic() + timeout
        seen, since = self.counter.value, time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.02)
            now = self.counter.value
            if now != seen:
                seen, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet_for:
                break
        return int(seen)


@dataclass
class Harness:
    settings: Settings
    progress: Callable[[str], None] = lambda text: None
    ctx: Any = field(default_factory=lambda: multiprocessing.get_context("spawn"))
    meter: CpuMeter = field(default_factory=CpuMeter)
    children: list[Any] = field(default_factory=list)

    # -- processes ---------------------------------------------------------------------
    def _spawn(self, target: Callable[..., None], *args: Any) -> Any:
        proc = self.ctx.Process(target=target, args=args, daemon=True)
        proc.start()
        self.children.append(proc)
        return proc

    def start_server(self, kind: str) -> tuple[Any, str]:
        port = servers.free_port()
        ready = self.ctx.Event()
        proc = self._spawn(servers.server_main, kind, port, ready)
        if not ready.wait(15):
            raise RuntimeError(f"{kind} server did not start")
        return proc, f"ws://127.0.0.1:{port}/"

    def start_callee(self, url: str, functions: list[str], triggers: list[dict[str, Any]] | None = None,
                     echo: bool = True) -> Callee:
        counter = self.ctx.Value("q", 0, lock=False)
        last = self.ctx.Value("d", 0.0, lock=False)
        port = self.ctx.Value("i", 0, lock=False)
        ready = self.ctx.Event()
        spec = {"url": url, "functions": functions, "triggers": triggers or [], "echo": echo}
        proc = self._spawn(procs.callee_main, spec, counter, last, port, ready)
        if not ready.wait(15):
            raise RuntimeError("callee did not connect")
        return Callee(proc, counter, last, port)

    def stop(self, proc: Any) -> None:
        if proc.is_alive():
            proc.terminate()
            proc.join(3)
            if proc.is_alive():
                proc.kill()
                proc.join(3)
        if proc in self.children:
            self.children.remove(proc)

    def stop_all(self) -> None:
        for proc in list(self.children):
            self.stop(proc)

    # -- measurement ---------------------------------------------------------------------
    def _recv(self, conn: Any, proc: Any, timeout: float) -> dict[str, Any]:
        if not conn.poll(timeout):
            raise RuntimeError("load generator did not answer in time")
        return conn.recv()

    def windows(self, label: str, spec: dict[str, Any],
                after: Callable[[dict[str, Any]], None] | None = None,
                before: Callable[[], None] | None = None) -> tuple[str, Any]:
        """Run a caller process; returns ("ok", runs) or ("n/a"/"error", reason)."""
        parent, child = self.ctx.Pipe()
        spec = {"seconds": self.settings.seconds, "warmup": self.settings.warmup, **spec}
        proc = self._spawn(procs.caller_main, child, spec)
        try:
            first = self._recv(parent, proc, 60)
            if first["status"] != "ready":
                return first["status"], first.get("reason", "")
            return self._runs(label, parent, proc, spec["seconds"] + 60, before, after)
        finally:
            proc.join(5)
            self.stop(proc)

    def churn_windows(self, label: str, url: str, count: int) -> tuple[str, Any]:
        parent, child = self.ctx.Pipe()
        proc = self._spawn(procs.churn_main, child, {"url": url, "count": count})
        try:
            return self._runs(label, parent, proc, 90)
        finally:
            proc.join(5)
            self.stop(proc)

    def _runs(self, label: str, parent: Any, proc: Any, run_timeout: float,
              before: Callable[[], None] | None = None,
              after: Callable[[dict[str, Any]], None] | None = None) -> tuple[str, Any]:
        """Measurement windows of a ready load generator until enough quiet runs; then stop it."""
        runs: list[dict[str, Any]] = []
        while core.need_more_runs(runs, self.settings.runs, self.settings.max_attempts):
            self.progress(f"{label} {_attempt(runs, self.settings.runs)}")
            if before is not None:
                before()
            self.meter.start()
            parent.send({"cmd": "go"})
            run = self._recv(parent, proc, run_timeout)
            if run["status"] != "ok":
                return run["status"], run.get("reason", "")
            if after is not None:
                after(run)
            run["foreign_cores"] = self.meter.stop()
            run["noisy"] = core.is_noisy(run["foreign_cores"])
            runs.append(run)
        parent.send({"cmd": "stop"})
        return "ok", runs


def row(target: str, bench: str, variant: str, outcome: tuple[str, Any], settings: Settings,
        keys: tuple[str, ...] = METRICS, unit: str = "") -> dict[str, Any]:
    """A result row from a windows() outcome: medians of the chosen runs."""
    status, payload = outcome
    out: dict[str, Any] = {"target": target, "bench": bench, "variant": variant, "unit": unit}
    if status != "ok":
        out.update(status="n/a" if status == "n/a" else "error",
                   reason=("not available: " if status == "n/a" else "") + str(payload))
        return out
    chosen = core.choose_runs(payload, settings.runs)
    out.update(status="ok", metrics=core.median_metrics(chosen, keys),
               noisy=any(r.get("noisy") for r in chosen), runs=payload)
    return out


def _attempt(runs: list[dict[str, Any]], wanted: int) -> str:
    quiet = sum(1 for r in runs if not r.get("noisy"))
    extra = f", {len(runs) - quiet} repeated for foreign load" if len(runs) > quiet else ""
    return f"run {len(runs) + 1} ({quiet}/{wanted} quiet{extra})"


def python_info() -> str:
    return sys.version.split()[0]
