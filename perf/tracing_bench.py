"""The ``tracing_overhead`` benchmark (issue 16): ``ws_roundtrip`` with observability off and on.

Two engine shapes, the same clients as ``ws_roundtrip`` (``perf.procs`` caller, the echo
callee, ``benches.call_spec``), 1 and 16 calls in flight on one connection, both workers on
one gateway process:

- ``tracing off``: the ``iii-observability`` block ``{enabled: false}``: the observability
  process still runs, but the Recorder of every process is off (no span, no counter);
- ``tracing on``: ``{enabled: true, sampling_ratio: 1.0}``: every routed call records a
  span and its counters and ships them to the observability process (``brokers.kit.sink``).

Both with ``prometheus_port: 0`` (no listener). Each of ``runs`` sessions starts one engine,
starts the callee, measures one window per in-flight count (repeated while the quietness
guard calls it noisy, up to ``max_attempts - runs + 1`` windows; the quietest is kept) and
stops the engine; sessions alternate off / on in ABBA order (off on, on off, off on, ...)
so that drift of the shared machine hits both alike. A figure is the median over its
sessions; the ``on`` rows carry their ratio to the ``off`` row of the same in-flight count
(goal at 16 in flight: at least ``GOAL``). Before each engine stops, the harness asks it
``engine::health::check`` (``components.spans.details.stored_spans``), ``engine::traces::list``
with ``include_internal`` (``total``) and ``engine::metrics::list`` (calls to the echo
function counted), so the ``on`` rows show that spans were recorded and the ``off`` rows
that none were. Each window also records the CPU time per call of the engine's processes
(supervisor and descendants, psutil) and of the observability process alone, a figure that
foreign load on the shared machine moves much less than throughput. The span store is bounded (``memory_max_spans``, 10,000 by default), so
``stored_spans`` tops out there; the counted calls are not bounded.
"""
from __future__ import annotations

import asyncio
import dataclasses
import statistics
import time
from typing import Any, Callable

import psutil

from . import core, wire
from .benches import ECHO_FN, attach, call_spec
from .engine_benches import EngineDown, start_engine

BENCH = "tracing_overhead"
INFLIGHTS = (1, 16)
GOAL = 0.90
GOAL_INFLIGHT = 16
MODES = {"off": {"enabled": False, "prometheus_port": 0},
         "on": {"enabled": True, "sampling_ratio": 1.0, "prometheus_port": 0}}
STATS_S = 1.2
LABEL = {"off": "tracing off", "on": "tracing on (sampling 1.0)"}


async def _evidence(url: str, settle_s: float = 3.0) -> dict[str, Any]:
    """What the observability process holds: stored spans (once stable), traces, calls counted."""
    caller = wire.Caller(await wire.open_ws(url))
    try:
        async def result(fid: str, data: Any) -> Any:
            frame = await caller.call(fid, data, timeout=10.0)
            if frame.get("error"):
                raise RuntimeError(f"{fid}: {wire.error_code(frame)}")
            return frame.get("result")

        deadline = time.monotonic() + settle_s
        stored, last = -1, None
        while time.monotonic() < deadline:  # the sink ships batches; wait until they are in
            health = await result("engine::health::check", {})
            stored = int(health["components"]["spans"]["details"]["stored_spans"])
            if stored == last:
                break
            last = stored
            await asyncio.sleep(0.3)
        await asyncio.sleep(STATS_S)  # the call counters come with each process's stats, once a second
        traces = await result("engine::traces::list", {"include_internal": True, "limit": 1})
        metrics = await result("engine::metrics::list", {})
        counted = (((metrics or {}).get("engine_metrics") or {}).get("invocations") or {}) \
            .get("by_function", {}).get(ECHO_FN, 0)
        return {"stored_spans": stored, "traces_total": int(traces.get("total", 0)),
                "echo_calls_counted": int(counted)}
    finally:
        await caller.close()


def _engine_cpu(eng: Any) -> dict[str, float]:
    """CPU seconds of the supervisor and every engine process, and of the observability one."""
    out = {"engine": 0.0, "observability": 0.0}
    for proc in eng.processes_info():
        try:
            t = proc.cpu_times()
            cpu = t.user + t.system
            out["engine"] += cpu
            if "observability" in proc.cmdline():
                out["observability"] += cpu
        except psutil.Error:
            continue
    return out


def _session(h: Any, sub: Any, mode: str, rep: int, reps: int) -> tuple[dict[int, dict[str, Any]], dict[str, Any]]:
    """One engine of ``mode``: one chosen window per in-flight count, then its evidence."""
    eng, _ = start_engine(1, extra_workers=[{"name": "iii-observability", "config": MODES[mode]}])
    callee = None
    try:
        callee = h.start_callee(eng.url, [ECHO_FN])
        chosen: dict[int, dict[str, Any]] = {}
        cpu0: dict[str, float] = {}

        def before() -> None:
            cpu0.clear()
            cpu0.update(_engine_cpu(eng))

        def after(run: dict[str, Any]) -> None:
            cpu1, calls = _engine_cpu(eng), max(1, run["ops"])
            for key in ("engine", "observability"):
                run[f"{key}_cpu_us_per_call"] = round((cpu1[key] - cpu0.get(key, 0.0)) * 1e6 / calls, 1)

        for n in INFLIGHTS:
            label = f"engine {BENCH} {mode}, {n} in flight, session {rep + 1}/{reps}"
            status, payload = sub.windows(label, call_spec(eng.url, n), after=after, before=before)
            if status != "ok":
                raise RuntimeError(f"{mode}, {n} in flight: {status}: {payload}")
            run = dict(core.choose_runs(payload, 1)[0])
            run.update(session=rep + 1, windows=len(payload))
            chosen[n] = run
        try:
            evidence = wire.run_loop(_evidence(eng.url))
        except Exception as exc:  # reported on the row, never a made-up count
            evidence = {"error": f"{type(exc).__name__}: {exc}"}
        evidence["session"] = rep + 1
        return chosen, evidence
    finally:
        if callee is not None:
            h.stop(callee.proc)
        eng.stop()


def _row(mode: str, n: int, runs: list[dict[str, Any]], evidence: list[dict[str, Any]]) -> dict[str, Any]:
    return {"target": "engine", "bench": BENCH, "variant": f"{LABEL[mode]}, {n} in flight",
            "status": "ok", "unit": "calls/s", "runs": runs, "evidence": evidence,
            "noisy": any(r.get("noisy") for r in runs),
            "metrics": core.median_metrics(runs, ("throughput", "p50_us", "p99_us", "engine_cpu_us_per_call",
                                                  "observability_cpu_us_per_call"))}


def _evidence_note(evidence: list[dict[str, Any]]) -> str:
    if any("error" in e for e in evidence):
        return "evidence: " + "; ".join(e["error"] for e in evidence if "error" in e)
    spans = "/".join(f"{e['stored_spans']:,}" for e in evidence)
    traces = "/".join(f"{e['traces_total']:,}" for e in evidence)
    calls = "/".join(f"{e['echo_calls_counted']:,}" for e in evidence)
    return f"per session: stored_spans {spans}, traces::list total {traces}, {ECHO_FN} calls counted {calls}"


def bench(h: Any, emit: Callable[[dict[str, Any]], None]) -> None:
    """``runs`` sessions of each mode, ABBA order; rows off then on per in-flight count."""
    reps = h.settings.runs
    per_session = max(1, h.settings.max_attempts - reps + 1)
    sub = dataclasses.replace(h, settings=dataclasses.replace(h.settings, runs=1, max_attempts=per_session))
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {m: {n: [] for n in INFLIGHTS} for m in MODES}
    evidence: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    try:
        for rep in range(reps):
            for mode in (("off", "on") if rep % 2 == 0 else ("on", "off")):
                chosen, ev = _session(h, sub, mode, rep, reps)
                for n, run in chosen.items():
                    runs[mode][n].append({**run, "mode": mode})
                evidence[mode].append(ev)
    except (RuntimeError, EngineDown, OSError, EOFError) as exc:
        emit({"target": "engine", "bench": BENCH, "variant": "", "status": "error",
              "reason": f"{type(exc).__name__}: {exc}"})
        return
    for n in INFLIGHTS:
        off = _row("off", n, runs["off"][n], evidence["off"])
        if n == GOAL_INFLIGHT:  # one engine per session holds both counts: its evidence once
            off["note"] = _evidence_note(evidence["off"])
        emit(off)
        on = attach(_row("on", n, runs["on"][n], evidence["on"]), off)
        pairs = [round(a["throughput"] / b["throughput"], 3)
                 for a, b in zip(sorted(on["runs"], key=lambda r: r["session"]),
                                 sorted(off["runs"], key=lambda r: r["session"])) if b["throughput"]]
        on["paired_ratios"] = pairs
        x = (on.get("ratio") or {}).get("throughput")
        note = f"x{x:.2f} of tracing off" if x is not None else "no ratio"
        if n == GOAL_INFLIGHT and x is not None:
            on["goal"] = {"min_ratio": GOAL, "met": x >= GOAL}
            note += f" (goal >= {GOAL:.2f}: {'met' if x >= GOAL else 'NOT met'})"
        cpu_on, cpu_off = on["metrics"].get("engine_cpu_us_per_call"), off["metrics"].get("engine_cpu_us_per_call")
        if cpu_on and cpu_off:
            note += (f"; engine CPU per call {cpu_on:.0f} us against {cpu_off:.0f} (x{cpu_on / cpu_off:.2f}),"
                     f" of which observability process {on['metrics'].get('observability_cpu_us_per_call', 0):.0f}"
                     f" against {off['metrics'].get('observability_cpu_us_per_call', 0):.0f}")
        if pairs:
            note += (f"; per session pair {'/'.join(f'{p:.2f}' for p in pairs)}"
                     f" (median {statistics.median(pairs):.2f})")
        on["note"] = note + ("; " + _evidence_note(evidence["on"]) if n == GOAL_INFLIGHT else "")
        emit(on)
