"""`python -m perf run`: the order of a run and its outputs.

Order: baselines are measured on demand by the rows that need them; the engine is started
with one gateway process (the call benchmarks), then the engine of `conf/iii-config.yaml`
(every default worker) is started three times for `startup` and once for `idle_memory`, then
the engine is started with two gateway processes (cross-gateway calls and the scaling
run). Invariant: whatever fails, every process this run started is stopped before it exits
and a JSON file is written.
"""
from __future__ import annotations

import importlib
import os
import platform
import time
from pathlib import Path
from typing import Any

from . import core, peers as peer_bench, report
from .benches import Baselines
from .engine_benches import FAILED_STARTS, EngineBenches, EngineDown, start_engine
from .harness import Harness, Settings

ENGINE_BENCHES = ("ws_roundtrip", "concurrent_invocation", "payload_sizes", "trigger_fanout",
                  "state_set", "state_get", "queue_enqueue", "queue_end_to_end",
                  "control_plane_churn", "startup", "idle_memory", "cross_gateway", "scaling",
                  "sdk_overhead", "slow_consumer", "cron_fire_latency", "channel_throughput", "http",
                  "http_function_call", "stream_fanout", "tracing_overhead", "rbac_overhead",
                  "cluster")
OWN_ENGINE_BENCHES = {"cron_fire_latency": "cron_bench", "channel_throughput": "channel_bench",
                      "http": "http_bench", "http_function_call": "http_functions_bench",
                      "stream_fanout": "stream_bench", "tracing_overhead": "tracing_bench", "rbac_overhead": "rbac_bench", "cluster": "cluster_bench"}
"""Rows that start an engine of their own shape (``<module>.bench(harness, emit)``)."""
BASELINE_BENCHES = ("echo", "relay")
ALL = BASELINE_BENCHES + ENGINE_BENCHES


def settings_for(quick: bool, seconds: float | None, runs: int | None) -> Settings:
    s = Settings(seconds=0.4, warmup=0.15, max_attempts=4, quick=True) if quick else Settings()
    if seconds is not None:
        s.seconds = seconds
        s.warmup = min(s.warmup, seconds)
    if runs is not None:
        s.runs = runs
        s.max_attempts = max(runs, min(s.max_attempts, runs + 2))
    return s


def run(quick: bool = False, only: list[str] | None = None, engine: bool = True,
        seconds: float | None = None, runs: int | None = None,
        results_dir: Path = report.RESULTS, peers: bool = False) -> tuple[dict[str, Any], Path]:
    settings = settings_for(quick, seconds, runs)
    wanted_set = set(only or ALL)
    unknown = wanted_set - set(ALL)
    if unknown:
        raise SystemExit(f"unknown benchmark(s): {', '.join(sorted(unknown))}; known: {', '.join(ALL)}")
    progress = report.Progress()
    h = Harness(settings, progress)
    rows: list[dict[str, Any]] = []
    base = Baselines(h)
    eng_info: dict[str, Any] = {"requested": engine and bool(wanted_set & set(ENGINE_BENCHES))}
    t0 = time.monotonic()
    try:
        if "echo" in wanted_set:
            for n in (1, 16, 64):
                base.calls("echo", "ws_roundtrip", n)
        if "relay" in wanted_set:
            for n in (1, 16, 64):
                base.calls("relay", "ws_roundtrip", n)
        if peers:  # issue 20: Redis, Dramatiq, Celery, gRPC, for the engine rows wanted
            peer_bench.peer_rows(h, rows.append, None if only is None else wanted_set)
        if eng_info["requested"]:
            _engine_phase(h, base, wanted_set, rows, eng_info, progress)
    finally:
        h.stop_all()
        progress.done()
    rows = list(base.memo.values()) + rows
    if peers:
        peer_bench.attach_peers(rows)  # engine rows get "peers" and an "x <peer>" note
    if FAILED_STARTS:
        eng_info["failed_starts"] = list(FAILED_STARTS)
    doc = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "mode": "quick" if quick else "full",
           "duration_s": round(time.monotonic() - t0, 1),
           "settings": vars(settings), "engine": eng_info, "peers": peers,
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                       "platform": platform.platform()},
           "foreign_limit_cores": core.FOREIGN_LIMIT_CORES, "rows": rows}
    path = report.write_json(doc, results_dir)
    return doc, path


def _engine_phase(h: Harness, base: Baselines, wanted_set: set[str], rows: list[dict[str, Any]],
                  info: dict[str, Any], progress: report.Progress) -> None:
    bench = EngineBenches(h, base, lambda name: name in wanted_set, rows.append)

    def fail_all(reason: str, names: set[str]) -> None:
        for name in sorted(names & set(ENGINE_BENCHES)):
            rows.append({"target": "engine", "bench": name, "variant": "", "status": "n/a",
                         "reason": f"not available: {reason}"})

    single_names = wanted_set - {"startup", "idle_memory", "cross_gateway", "scaling"} - set(OWN_ENGINE_BENCHES)
    if single_names & set(ENGINE_BENCHES):
        progress("starting the engine (1 gateway process)")
        try:
            eng, secs = start_engine(1)
        except EngineDown as exc:
            info.update(available=False, reason=str(exc)[:600])
            fail_all(info["reason"], wanted_set)
            return
        info.update(available=True, ready_s=round(secs, 3))
        try:
            bench.run_single(eng)
        finally:
            h.stop_all()  # callees of this engine; baseline servers restart lazily
            base.forget_servers()
            eng.stop()
    for name in ("startup", "idle_memory"):  # each on its own engine of the default config
        if name in wanted_set:
            try:
                getattr(bench, name)()
            except EngineDown as exc:
                fail_all(str(exc)[:300], {name})
    for name, module in OWN_ENGINE_BENCHES.items():
        if name in wanted_set:
            importlib.import_module(f"perf.{module}").bench(h, rows.append)
            h.stop_all()
            base.forget_servers()
    if wanted_set & {"cross_gateway", "scaling"}:
        progress("starting the engine (2 gateway processes)")
        try:
            eng, _ = start_engine(2)
        except EngineDown as exc:
            fail_all(str(exc)[:300], wanted_set & {"cross_gateway", "scaling"})
            return
        single = next((r for r in rows if r["target"] == "engine" and r["bench"] == "concurrent_invocation"), None)
        try:
            bench.run_two_gateways(eng, single)
        finally:
            eng.stop()
