"""The engine benchmarks, each next to its baseline (see benches.py for the baselines).

Invariants: the engine is always started from a generated config with `iii-supervisor start`
and stopped again before the next engine start; a benchmark whose engine feature answers
``function_not_found`` (or never delivers) becomes an ``n/a`` row with the reason.
"""
from __future__ import annotations

import os
import socket
import time
from typing import Any, Callable

import psutil

from . import core, wire
from .benches import (CONN_INFLIGHT, CONNS, ECHO_FN, FANOUTS, INFLIGHTS, QUEUE_FN, SIZES, Baselines,
                      attach, call_spec, first_call, variant_of)
from .engine import ROOT, Engine

QUEUE_SHAPES = ((1, 16), (16, 1))
"""(producer connections, calls in flight on each) for the queue benchmarks (issue 5)."""
from .harness import Harness, row
from .servers import free_port


DEFAULT_CONFIG = ROOT / "conf" / "iii-config.yaml"
IDLE_SETTLE_S = 2.0
"""Seconds between the first call and the idle_memory sample: every process up and quiet."""


class DefaultEngine(Engine):
    """The engine of ``conf/iii-config.yaml`` as it is (every worker of the default config:
    gateway, router, state, queue, pubsub, cron, http, stream, http_functions,
    observability), moved onto free loopback ports and a fresh runtime/data dir through the
    file's own ``${VAR}`` placeholders; no Prometheus listener (``III_PROMETHEUS_PORT=0``)."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.config_path = str(DEFAULT_CONFIG)
        self.env = dict(os.environ, III_PORT=str(port), III_HOST="127.0.0.1",
                        III_HTTP_PORT=str(free_port()), III_HTTP_HOST="127.0.0.1",
                        III_STREAM_PORT=str(free_port()), III_STREAM_HOST="127.0.0.1",
                        III_PROMETHEUS_PORT="0", III_PROMETHEUS_HOST="127.0.0.1",
                        III_GATEWAY_PROCESSES="1", III_RUNTIME_DIR=self.runtime_dir,
                        III_DATA_DIR=os.path.join(self.runtime_dir, "data"))


def process_label(p: psutil.Process, root_pid: int) -> str:
    """``supervisor``, ``zygote`` (``brokers.supervisor.zygote``) or the process name after ``run``."""
    if p.pid == root_pid:
        return "supervisor"
    argv = [a for a in p.cmdline() if a]
    if "brokers.supervisor.zygote" in argv:
        return "zygote"
    if "run" in argv[:-1]:
        return argv[argv.index("run") + 1]
    return " ".join(argv[1:4])[-48:] or p.name()


def memory_sample(eng: Engine) -> dict[str, dict[str, Any]]:
    """PSS, RSS and USS (MB) of the supervisor and every process under it, by label."""
    out: dict[str, dict[str, Any]] = {}
    root = eng.proc.pid if eng.proc is not None else -1
    for p in eng.processes_info():
        try:
            m = p.memory_full_info()
            out[process_label(p, root)] = {"pid": p.pid, "pss_mb": round(m.pss / 2**20, 1),
                                           "rss_mb": round(m.rss / 2**20, 1),
                                           "uss_mb": round(m.uss / 2**20, 1)}
        except psutil.Error:
            continue
    return out


class EngineDown(Exception):
    """The engine could not be started; every engine row becomes n/a with this reason."""


FAILED_STARTS: list[str] = []  # reasons of starts that failed and were retried, for the JSON


def start_engine(processes: int, timeout: float = 30.0, attempts: int = 2,
                 extra_workers: list | None = None) -> tuple[Engine, float]:
    """Start it and wait for the first successful call; returns (engine, seconds to ready).

    A failed start is retried once (the tree under test changes while we run); the failure
    is kept in FAILED_STARTS and reported in the run's JSON, not hidden."""
    for attempt in range(attempts):
        try:
            return _start_once(processes, timeout, extra_workers)
        except EngineDown as exc:
            FAILED_STARTS.append(str(exc)[:600])
            if attempt + 1 == attempts:
                raise
    raise AssertionError("unreachable")


def start_default_engine(timeout: float = 30.0, attempts: int = 2) -> tuple[Engine, float]:
    """``start_engine`` for the default config's engine (``DefaultEngine``)."""
    for attempt in range(attempts):
        try:
            return _start_once(1, timeout, engine=DefaultEngine(free_port()))
        except EngineDown as exc:
            FAILED_STARTS.append(str(exc)[:600])
            if attempt + 1 == attempts:
                raise
    raise AssertionError("unreachable")


def _start_once(processes: int, timeout: float, extra_workers: list | None = None,
                engine: Engine | None = None) -> tuple[Engine, float]:
    eng = engine or Engine(free_port(), processes, extra_workers)
    eng.start()
    deadline = time.monotonic() + timeout
    while True:  # wait for the port first, so a crashed supervisor fails fast
        if eng.exited() is not None:
            tail = eng.log_tail()
            eng.stop()
            raise EngineDown(f"iii-supervisor exited with {eng.exited()}: {tail}")
        try:
            socket.create_connection(("127.0.0.1", eng.port), 0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                tail = eng.log_tail()
                eng.stop()
                raise EngineDown(f"port {eng.port} never opened: {tail}")
            time.sleep(0.02)
    failure = wire.run_loop(first_call(eng.url, max(1.0, deadline - time.monotonic())))
    if failure is not None:
        tail = eng.log_tail()
        eng.stop()
        raise EngineDown(f"first call failed ({failure}): {tail}")
    return eng, time.monotonic() - eng.started_at


class EngineBenches:
    def __init__(self, h: Harness, base: Baselines, wanted: Callable[[str], bool],
                 emit: Callable[[dict[str, Any]], None]) -> None:
        self.h, self.base, self.wanted, self.emit = h, base, wanted, emit

    def _calls(self, eng: Engine, bench: str, inflight: int, base_row: dict[str, Any],
               variant: str | None = None, **kw: Any) -> dict[str, Any]:
        variant = variant or variant_of(inflight, "", kw.get("connections", 1))
        spec = call_spec(eng.url, inflight, **kw)
        r = row("engine", bench, variant, self.h.windows(f"engine {bench} {variant}", spec), self.h.settings)
        self.emit(attach(r, base_row))
        return r

    # -- one gateway process ------------------------------------------------------------
    def run_single(self, eng: Engine) -> None:
        self.h.start_callee(eng.url, [ECHO_FN])
        if self.wanted("ws_roundtrip"):
            for n in INFLIGHTS:
                self._calls(eng, "ws_roundtrip", n, self.base.calls("relay", "ws_roundtrip", n))
        if self.wanted("concurrent_invocation"):
            self._calls(eng, "concurrent_invocation", CONN_INFLIGHT,
                        self.base.calls("relay", "concurrent_invocation", CONN_INFLIGHT, connections=CONNS),
                        connections=CONNS)
        if self.wanted("payload_sizes"):
            for name, size in SIZES.items():
                self._calls(eng, "payload_sizes", 1, self.base.calls("relay", "payload_sizes", 1, name),
                            variant=variant_of(1, name), kind="blob", size=size)
        for bench, kind in (("state_set", "state_set"), ("state_get", "state_get")):
            if self.wanted(bench):
                for n in (1, 16):  # issue 4: durable sets and gets at 1 and 16 in flight
                    self._calls(eng, bench, n, self.base.calls("relay", "ws_roundtrip", n),
                                fid=bench.replace("_", "::"), kind=kind)
        if self.wanted("trigger_fanout"):
            for k in FANOUTS:
                self.trigger_fanout(eng, k)
        if self.wanted("queue_enqueue") or self.wanted("queue_end_to_end"):
            for producers, inflight in QUEUE_SHAPES:
                self.queue(eng, producers, inflight)
        if self.wanted("control_plane_churn"):
            out = self.h.churn_windows("engine control_plane_churn", eng.url, 1000)
            r = row("engine", "control_plane_churn", "1000 fns", out, self.h.settings,
                    keys=("throughput", "elapsed_s"))
            if r.get("status") == "ok":
                r["note"] = "calls after: " + ",".join(sorted({str(x.get("calls_after")) for x in r["runs"]}))
            self.emit(attach(r, self.base.churn(1000)))
        if self.wanted("sdk_overhead"):
            self.sdk_overhead(eng)
        if self.wanted("slow_consumer"):
            self.slow_consumer(eng)

    def trigger_fanout(self, eng: Engine, k: int) -> None:
        """state::set on scope "fan" with k functions bound by `state` triggers: deliveries/s."""
        fns = [f"bench::fan::{i}" for i in range(k)]
        trig = [{"trigger_type": "state", "function_id": f, "config": {"scope": "fan"}} for f in fns]
        callee = self.h.start_callee(eng.url, fns, trig, echo=False)
        state: dict[str, Any] = {}

        def before() -> None:
            state["c0"] = callee.settled()

        def after(run: dict[str, Any]) -> None:
            delivered = callee.settled(timeout=15.0) - state["c0"]
            span = max(callee.last.value - run["started_monotonic"], 1e-6)
            run["sets_per_s"] = run["throughput"]
            run["throughput"] = round(delivered / span, 1) if delivered else 0.0
            run["delivered_ratio"] = round(delivered / max(1, (run["ops"] - run["errors"]) * k), 3)

        variant = f"{k} bound fns, 16 in flight"
        out = self.h.windows(f"engine trigger_fanout {variant}", call_spec(eng.url, 16, fid="state::set", kind="fan"),
                             after=after, before=before)
        r = row("engine", "trigger_fanout", variant, out, self.h.settings,
                keys=("throughput", "sets_per_s", "delivered_ratio"))
        if r.get("status") == "ok" and not r["metrics"].get("throughput"):
            r = {**r, "status": "n/a", "reason": "not available: no trigger deliveries", "metrics": {}}
        elif r.get("status") == "ok":
            r["note"] = (f"{r['metrics'].get('sets_per_s', 0):,.0f} sets/s; "
                         f"delivered {r['metrics'].get('delivered_ratio')} of sets x {k}")
        self.h.stop(callee.proc)
        self.emit(attach(r, self.base.calls("relay", "ws_roundtrip", 16)))

    def queue(self, eng: Engine, producers: int, inflight: int) -> None:
        """Enqueue to queue "bench" from ``producers`` connections with ``inflight`` calls
        each; the callee counts deliveries."""
        callee = self.h.start_callee(eng.url, [QUEUE_FN], echo=False)
        state: dict[str, Any] = {}

        def before() -> None:
            state["c0"] = callee.settled()

        def after(run: dict[str, Any]) -> None:
            enqueued = run["ops"] - run["errors"]
            delivered = callee.settled(quiet_for=0.5, timeout=30.0) - state["c0"]
            span = max(callee.last.value - run["started_monotonic"], 1e-6)
            run["e2e_throughput"] = round(delivered / span, 1) if delivered else 0.0
            run["lost"] = max(0, enqueued - delivered)

        spec = call_spec(eng.url, inflight, fid=QUEUE_FN, connections=producers,
                         action={"type": "enqueue", "queue": "bench"})
        variant = f"{producers} producer{'s' if producers > 1 else ''} x{inflight} in flight"
        out = self.h.windows(f"engine queue {variant}", spec, after=after, before=before)
        base = (self.base.calls("relay", "ws_roundtrip", inflight) if producers == 1 else
                self.base.calls("relay", "concurrent_invocation", inflight, connections=producers))
        enq = row("engine", "queue_enqueue", variant, out, self.h.settings)
        e2e = row("engine", "queue_end_to_end", variant, out, self.h.settings,
                  keys=("e2e_throughput", "lost"))
        if e2e.get("status") == "ok":
            e2e["metrics"] = {"throughput": e2e["metrics"].get("e2e_throughput"), "lost": e2e["metrics"].get("lost")}
            e2e["note"] = f"lost {e2e['metrics']['lost']:.0f}"
            e2e.pop("runs", None)  # the same runs are on the queue_enqueue row
        if self.wanted("queue_enqueue"):
            self.emit(attach(enq, base))
        if self.wanted("queue_end_to_end"):
            self.emit(attach(e2e, base))
        self.h.stop(callee.proc)

    def sdk_overhead(self, eng: Engine) -> None:
        try:
            from . import sdk_overhead  # optional module: its row is n/a without it
        except ImportError:
            self.emit({"target": "engine", "bench": "sdk_overhead", "variant": "", "status": "n/a",
                       "reason": "not available: perf/sdk_overhead.py not written yet"})
            return
        seconds = self.h.settings.seconds
        results = {}
        for target, url in (("engine", eng.url), ("relay", self.base.url("relay"))):
            self.h.progress(f"{target} sdk_overhead")
            try:
                results[target] = {"status": "ok", **sdk_overhead.run(url, seconds)}
            except Exception as exc:
                results[target] = {"status": "error", "reason": f"{type(exc).__name__}: {exc}"}
        for target, res in results.items():
            metrics = {k: res[k] for k in ("throughput", "p50_us", "p99_us") if isinstance(res.get(k), (int, float))}
            r = {"target": target, "bench": "sdk_overhead", "variant": "SDK clients, 16 in flight",
                 "note": str(res.get("shape", "")),  # whole: format_table prints notes in full
                 "status": res["status"] if metrics or res["status"] != "ok" else "error",
                 "reason": res.get("reason", "" if metrics else "no throughput/p50_us in result"),
                 "metrics": metrics, "raw": res}
            if target == "engine":
                attach(r, results_row(results.get("relay")))
            self.emit(r)

    def slow_consumer(self, eng: Engine) -> None:
        """Issue 11: a callee that never reads, flooded; see perf/slow_consumer.py."""
        from . import slow_consumer
        slow_consumer.bench(self.h, eng, self.emit)

    # -- startup, and two gateway processes ------------------------------------------------
    def startup(self) -> None:
        """``iii-supervisor start conf/iii-config.yaml`` (every default worker) to the first
        successful call of a freshly registered function."""
        runs = []
        for n in range(self.h.settings.runs):
            self.h.progress(f"engine startup run {n + 1}/{self.h.settings.runs}")
            eng, secs = start_default_engine()
            procs = len(eng.processes_info())
            eng.stop()
            runs.append({"value": round(secs, 3), "processes": procs})
        r = {"target": "engine", "bench": "startup", "status": "ok", "unit": "s", "runs": runs,
             "variant": f"start to first call, default config ({runs[0]['processes']} processes)",
             "metrics": core.median_metrics(runs, ("value",)), "goal": "<= 1 s"}
        self.emit(attach(r, self.base.startup()))

    def idle_memory(self) -> None:
        """The whole engine of the default config, idle: PSS summed over the supervisor and
        every process under it (psutil ``memory_full_info``; shared pages, e.g. those the
        children share with the zygote they were forked from, counted once); RSS too."""
        self.h.progress("engine idle_memory (default config)")
        eng, _ = start_default_engine()
        try:
            time.sleep(IDLE_SETTLE_S)
            samples = []
            for _ in range(3):
                samples.append(memory_sample(eng))
                time.sleep(0.3)
        finally:
            eng.stop()
        totals = [round(sum(p["pss_mb"] for p in s.values()), 1) for s in samples]
        mid = samples[sorted(range(len(totals)), key=totals.__getitem__)[len(totals) // 2]]
        pss = round(sum(p["pss_mb"] for p in mid.values()), 1)
        rss = round(sum(p["rss_mb"] for p in mid.values()), 1)
        r = {"target": "engine", "bench": "idle_memory", "status": "ok", "unit": "MB",
             "variant": f"PSS, default config, {len(mid)} processes",
             "metrics": {"value": pss}, "rss_total_mb": rss, "goal": "PSS <= 150 MB",
             "note": f"RSS {rss} MB; " + ", ".join(f"{k} {v['pss_mb']}" for k, v in mid.items()),
             "per_process_mb": mid, "runs": [{"value": t} for t in totals]}
        self.emit(attach(r, self.base.memory()))

    def run_two_gateways(self, eng: Engine, single: dict[str, Any] | None) -> None:
        gws = eng.gateway_pids()
        callee = self.h.start_callee(eng.url, [ECHO_FN])
        if self.wanted("cross_gateway"):
            if len(gws) < 2:
                self.emit({"target": "engine", "bench": "cross_gateway", "variant": "", "status": "n/a",
                           "reason": f"not available: {len(gws)} gateway process(es) listen on the port"})
            else:
                for want in ("same", "other"):
                    for n in (1, 16):
                        placement = {"gateway_pids": gws, "engine_port": eng.port,
                                     "callee_port": callee.port.value, "want": want}
                        self._calls(eng, "cross_gateway", n, self.base.calls("relay", "ws_roundtrip", n),
                                    variant=f"{want} gateway, {n} in flight", placement=placement)
        if self.wanted("scaling"):
            r = self._calls(eng, "scaling", CONN_INFLIGHT,
                            self.base.calls("relay", "concurrent_invocation", CONN_INFLIGHT, connections=CONNS),
                            variant=f"2 gateways, {CONNS}x{CONN_INFLIGHT} in flight", connections=CONNS)
            if single is not None and single.get("status") == "ok" and r.get("status") == "ok":
                r["note"] = f"x{core.ratio(r['metrics']['throughput'], single['metrics']['throughput'])} vs 1 gateway"
        self.h.stop(callee.proc)


def results_row(res: dict[str, Any] | None) -> dict[str, Any]:
    res = res or {}
    metrics = {k: res[k] for k in ("throughput", "p50_us", "p99_us") if isinstance(res.get(k), (int, float))}
    return {"target": "relay", "variant": "SDK clients, 16 in flight", "status": "ok" if metrics else "error",
            "metrics": metrics}

