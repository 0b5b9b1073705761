"""The issue-19 benchmarks: calls between engine hosts, and state and queue on Redis.

One private ``redis-server`` for the whole bench (``perf.peers.PeerRedis``: AOF on,
``appendfsync always``, a free loopback port, a temp dir; a child of the harness, so the
quietness guard counts it as ours), one Redis database per row so that rows never see
each other's keys. Every engine is ``iii-supervisor start <generated config>``
(``perf.engine.Engine``, the worker manager of ``make_config`` with one gateway process);
an engine with a ``redis`` adapter gets the ``cluster`` process planned automatically.

- ``cross_host_call``: hosts ``A`` and ``B`` (``III_HOST_ID`` per supervisor, as
  tests/twohosts.py), each with ``iii-state`` and ``iii-queue`` on the adapter ``{name:
  redis, config: {redis_url}}``, both on one database. The echo callee (``perf.procs``, the
  ``ws_roundtrip`` one) connects to B only; the ``ws_roundtrip`` caller (``call_spec``, 1 and
  16 in flight on one connection) runs on A (``cross host``: gateway A -> TCP -> gateway B
  -> worker, and back; the cluster processes only keep the directory) and on B (``same
  host``: the local call).
- ``state_redis``: ``state::set`` / ``state::get`` (``EngineBenches._calls`` with the
  ``state_set`` / ``state_get`` definitions of ``run_single``) at 1 and 16 in flight on an
  engine whose ``iii-state`` adapter is ``redis`` against one on the builtin LMDB store.
- ``queue_redis``: ``queue_end_to_end`` (``EngineBenches.queue``, 1 producer x16 in flight,
  the engine's definition: deliveries / (last delivery - window start) once they settled;
  ``lost`` = enqueued - delivered) on an engine whose ``iii-queue`` adapter is ``redis``
  against one on the builtin queue (queue ``bench``: concurrency 64, max_retries 1).

Each row's two engines (or hosts) run at once; each of ``runs`` sessions measures one window
per mode and in-flight count (a noisy window is repeated, up to ``max_attempts - runs + 1``
windows, the quietest kept), the modes in ABBA order so that drift of the shared machine
hits both alike; a figure is the median over sessions. The Redis (or cross-host) row carries
its ratio to the other mode (``x thrpt``) and the per-session ratios; goals (issue 19):
cross host at 16 in flight at least ``CROSS_GOAL`` of same host, queue on Redis at least
``QUEUE_GOAL`` of the builtin. Every window also records the CPU microseconds per call (per
delivered job for the queue) of each engine's processes (psutil ``cpu_times`` of the
supervisor and all its descendants, read before and after the window) and of
``redis-server``: what one call costs each host and Redis, so the throughput of N hosts can
be read off beyond this machine. For the queue the CPU window runs until the deliveries
settled (0.5 s without one), so it includes that idle tail (heartbeats, reaper).

``bench(harness, emit)`` (an ``OWN_ENGINE_BENCHES`` row, ``python -m perf run --only
cross_host_call state_redis queue_redis``). Invariant: whatever fails, every engine, callee
and the redis-server this bench started are stopped before it returns; a failed row is one
``error`` row with the reason, the other rows still run.
"""
from __future__ import annotations

import dataclasses
import os
import statistics
from typing import Any, Callable

import psutil
import yaml

from . import core, wire
from .benches import ECHO_FN, attach, call_spec
from .engine import Engine, make_config
from .engine_benches import FAILED_STARTS, EngineBenches, EngineDown, _start_once
from .peers import PeerRedis
from .rbac_bench import _engine_cpu, _paired
from .servers import free_port

INFLIGHTS = (1, 16)
CROSS_GOAL, CROSS_GOAL_INFLIGHT = 0.6, 16
QUEUE_GOAL = 0.5
QUEUE_SHAPE = (1, 16)
"""(producer connections, calls in flight on each): ``queue_end_to_end``'s first shape."""
DB = {"cross_host_call": 1, "state_redis": 2, "queue_redis": 3}
QUEUE_CONFIGS = {"bench": {"concurrency": 64, "max_retries": 1}}
"""As ``perf.engine.make_config``'s queue ``bench``."""


def redis_adapter(url: str) -> dict[str, Any]:
    return {"name": "redis", "config": {"redis_url": url}}


def state_worker(url: str | None) -> dict[str, Any]:
    return {"name": "iii-state", **({"config": {"adapter": redis_adapter(url)}} if url else {})}


def queue_worker(url: str | None) -> dict[str, Any]:
    config: dict[str, Any] = {"queue_configs": QUEUE_CONFIGS}
    if url:
        config["adapter"] = redis_adapter(url)
    return {"name": "iii-queue", "config": config}


class Host(Engine):
    """``perf.engine.Engine`` with its own workers after the worker manager, no Prometheus
    listener (``III_PROMETHEUS_PORT=0``) and, for a cluster host, ``III_HOST_ID`` in the
    supervisor's environment."""

    def __init__(self, port: int, workers: list[dict[str, Any]], host_id: str | None = None) -> None:
        super().__init__(port, 1)
        cfg = make_config(self.runtime_dir, port, 1)
        cfg["workers"] = [cfg["workers"][0], *workers]
        with open(self.config_path, "w") as fh:
            yaml.safe_dump(cfg, fh)
        # no Prometheus listener (as ``DefaultEngine``): 9464 may be another engine's
        self.env = dict(os.environ, III_PROMETHEUS_PORT="0", **({"III_HOST_ID": host_id} if host_id else {}))


def start_host(workers: list[dict[str, Any]], host_id: str | None = None, attempts: int = 2) -> Host:
    """``engine_benches.start_engine`` for a ``Host``: up to the first successful call."""
    for attempt in range(attempts):
        try:
            return _start_once(1, 30.0, engine=Host(free_port(), workers, host_id))[0]  # type: ignore[return-value]
        except EngineDown as exc:
            FAILED_STARTS.append(str(exc)[:600])
            if attempt + 1 == attempts:
                raise
    raise AssertionError("unreachable")


def _pid_cpu(pid: int) -> float:
    try:
        t = psutil.Process(pid).cpu_times()
        return t.user + t.system
    except psutil.Error:
        return 0.0


class Metered:
    """A harness whose windows also read the CPU of ``groups`` (name -> engine, or a pid)
    before and after each window; ``run["cpu_us_<name>"]`` = CPU microseconds per op, ops
    being ``per(run)`` (the calls of the window by default). Anything else goes to the
    harness it wraps, so ``EngineBenches`` runs on it unchanged."""

    def __init__(self, h: Any, groups: dict[str, Any], per: Callable[[dict[str, Any]], float] | None = None) -> None:
        self._h, self.groups = h, groups
        self.per = per or (lambda run: run["ops"])

    def __getattr__(self, name: str) -> Any:
        return getattr(self._h, name)

    def _read(self) -> dict[str, float]:
        return {k: _pid_cpu(g) if isinstance(g, int) else _engine_cpu(g) for k, g in self.groups.items()}

    def windows(self, label: str, spec: dict[str, Any], after: Callable[[dict[str, Any]], None] | None = None,
                before: Callable[[], None] | None = None) -> tuple[str, Any]:
        cpu0: dict[str, float] = {}

        def _before() -> None:
            if before is not None:
                before()
            cpu0.clear()
            cpu0.update(self._read())

        def _after(run: dict[str, Any]) -> None:
            if after is not None:
                after(run)
            cpu1, ops = self._read(), max(1.0, float(self.per(run)))
            for k in self.groups:
                run[f"cpu_us_{k}"] = round((cpu1[k] - cpu0[k]) * 1e6 / ops, 1)

        return self._h.windows(label, spec, after=_after, before=_before)


class _NoBaseline:
    """``EngineBenches``'s baselines, unused here: every figure is against the other mode."""

    def calls(self, *args: Any, **kw: Any) -> dict[str, Any]:
        return {"target": "-", "variant": "-", "status": "n/a"}


def _one_run(out: tuple[str, Any], what: str) -> dict[str, Any]:
    status, payload = out
    if status != "ok":
        raise RuntimeError(f"{what}: {status}: {payload}")
    return dict(core.choose_runs(payload, 1)[0], windows=len(payload))


def _sessions(h: Any) -> tuple[int, Any]:
    reps = h.settings.runs
    per_session = max(1, h.settings.max_attempts - reps + 1)
    return reps, dataclasses.replace(h, settings=dataclasses.replace(h.settings, runs=1, max_attempts=per_session))


def _order(modes: tuple[str, ...], rep: int) -> tuple[str, ...]:
    return modes if rep % 2 == 0 else tuple(reversed(modes))


def _row(bench: str, variant: str, runs: list[dict[str, Any]], groups: tuple[str, ...],
         unit: str = "calls/s", keys: tuple[str, ...] = ("throughput", "p50_us", "p99_us")) -> dict[str, Any]:
    return {"target": "engine", "bench": bench, "variant": variant, "status": "ok", "unit": unit,
            "runs": runs, "noisy": any(r.get("noisy") for r in runs),
            "metrics": core.median_metrics(runs, keys + tuple(f"cpu_us_{g}" for g in groups))}


def _cpu_note(r: dict[str, Any], groups: dict[str, str], per: str = "call") -> str:
    m = r["metrics"]
    parts = [f"{label} {m[f'cpu_us_{g}']:.0f}" for g, label in groups.items() if m.get(f"cpu_us_{g}") is not None]
    return f"CPU us per {per}: " + ", ".join(parts) if parts else ""


def _compare(r: dict[str, Any], base: dict[str, Any], goal: float | None, base_label: str) -> str:
    """Ratio of ``r`` to ``base`` (same run), per session, and the goal when there is one."""
    attach(r, base)
    x = (r.get("ratio") or {}).get("throughput")
    note = f"x{x:.2f} of {base_label}" if x is not None else "no ratio"
    if goal is not None and x is not None:
        r["goal"] = {"min_ratio": goal, "met": x >= goal}
        note += f" (goal >= {goal:.2f}: {'met' if x >= goal else 'NOT met'})"
    pairs = _paired(r["runs"], base["runs"])
    r["paired_ratios"] = pairs
    if pairs:
        note += f"; per session {'/'.join(f'{p:.2f}' for p in pairs)} (median {statistics.median(pairs):.2f})"
    return note


def _error(bench: str, exc: BaseException) -> dict[str, Any]:
    return {"target": "engine", "bench": bench, "variant": "", "status": "error",
            "reason": f"{type(exc).__name__}: {exc}"}


# -- cross_host_call --------------------------------------------------------------------
CROSS_MODES = ("same", "cross")
CROSS_LABEL = {"same": "same host (caller on B)", "cross": "cross host (caller on A)"}
HOST_GROUPS = {"A": "host A", "B": "host B", "redis": "redis"}


def cross_host_call(h: Any, emit: Callable[[dict[str, Any]], None], redis: PeerRedis) -> None:
    bench = "cross_host_call"
    url = redis.url(DB[bench])
    reps, sub = _sessions(h)
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {m: {n: [] for n in INFLIGHTS} for m in CROSS_MODES}
    hosts: list[Host] = []
    try:
        for name in ("A", "B"):
            hosts.append(start_host([state_worker(url), queue_worker(url)], host_id=f"perf-{name}"))
        a, b = hosts
        h.start_callee(b.url, [ECHO_FN])
        caller = wire.run_loop(_routed(a.url))  # B's function reached through A before any window
        if caller is not None:
            raise RuntimeError(f"{ECHO_FN} of host B never answered through host A: {caller}")
        m = Metered(sub, {"A": a, "B": b, "redis": redis.proc.pid})
        for rep in range(reps):
            for mode in _order(CROSS_MODES, rep):
                for n in INFLIGHTS:
                    spec = call_spec((a if mode == "cross" else b).url, n)
                    run = _one_run(m.windows(f"engine {bench} {mode}, {n} in flight, session {rep + 1}/{reps}", spec),
                                   f"{mode}, {n} in flight")
                    run.update(session=rep + 1, mode=mode)
                    runs[mode][n].append(run)
    except (RuntimeError, EngineDown, OSError, EOFError) as exc:
        emit(_error(bench, exc))
        return
    finally:
        h.stop_all()
        for eng in hosts:
            eng.stop()
    for n in INFLIGHTS:
        same = _row(bench, f"{CROSS_LABEL['same']}, {n} in flight", runs["same"][n], tuple(HOST_GROUPS))
        same["note"] = _cpu_note(same, HOST_GROUPS)
        emit(same)
        cross = _row(bench, f"{CROSS_LABEL['cross']}, {n} in flight", runs["cross"][n], tuple(HOST_GROUPS))
        note = _compare(cross, same, CROSS_GOAL if n == CROSS_GOAL_INFLIGHT else None, "same host")
        cross["note"] = note + "; " + _cpu_note(cross, HOST_GROUPS) + _cpu_delta(cross, same)
        emit(cross)


def _cpu_delta(cross: dict[str, Any], same: dict[str, Any]) -> str:
    c, s = cross["metrics"], same["metrics"]
    tot = [sum(x.get(f"cpu_us_{g}", 0.0) for g in ("A", "B")) for x in (c, s)]
    return f" (engines {tot[0]:.0f} against {tot[1]:.0f} same host)" if all(tot) else ""


async def _routed(url: str, timeout: float = 20.0) -> str | None:
    caller = wire.Caller(await wire.open_ws(url))
    try:
        return await wire.probe(caller, ECHO_FN, {"n": 0}, timeout)
    finally:
        await caller.close()


# -- state_redis ------------------------------------------------------------------------
STORE_MODES = ("lmdb", "redis")
STATE_LABEL = {"lmdb": "LMDB", "redis": "Redis"}
ENGINE_GROUPS = {"engine": "engine", "redis": "redis"}


def state_redis(h: Any, emit: Callable[[dict[str, Any]], None], redis: PeerRedis) -> None:
    bench = "state_redis"
    url = redis.url(DB[bench])
    reps, sub = _sessions(h)
    ops = ("state_set", "state_get")
    runs = {m: {(op, n): [] for op in ops for n in INFLIGHTS} for m in STORE_MODES}
    engines: dict[str, Host] = {}
    try:
        engines["lmdb"] = start_host([state_worker(None), queue_worker(None)])
        engines["redis"] = start_host([state_worker(url), queue_worker(None)])
        for rep in range(reps):
            for mode in _order(STORE_MODES, rep):
                eng = engines[mode]
                m = Metered(sub, {"engine": eng, "redis": redis.proc.pid})
                got: list[dict[str, Any]] = []
                eb = EngineBenches(m, _NoBaseline(), lambda name: True, got.append)  # type: ignore[arg-type]
                for op in ops:
                    for n in INFLIGHTS:
                        r = eb._calls(eng, bench, n, _NoBaseline().calls(), fid=op.replace("_", "::"), kind=op,
                                      variant=f"{mode} {op} {n} in flight, session {rep + 1}/{reps}")
                        if r.get("status") != "ok":
                            raise RuntimeError(f"{mode} {op}, {n} in flight: {r.get('reason')}")
                        run = dict(core.choose_runs(r["runs"], 1)[0], windows=len(r["runs"]),
                                   session=rep + 1, mode=mode)
                        runs[mode][(op, n)].append(run)
    except (RuntimeError, EngineDown, OSError, EOFError) as exc:
        emit(_error(bench, exc))
        return
    finally:
        h.stop_all()
        for eng in engines.values():
            eng.stop()
    for op in ops:
        for n in INFLIGHTS:
            fid = op.replace("_", "::")
            lm = _row(bench, f"{fid} on {STATE_LABEL['lmdb']}, {n} in flight", runs["lmdb"][(op, n)],
                      tuple(ENGINE_GROUPS))
            lm["note"] = _cpu_note(lm, ENGINE_GROUPS)
            emit(lm)
            rd = _row(bench, f"{fid} on {STATE_LABEL['redis']}, {n} in flight", runs["redis"][(op, n)],
                      tuple(ENGINE_GROUPS))
            rd["note"] = _compare(rd, lm, None, "LMDB") + "; " + _cpu_note(rd, ENGINE_GROUPS)
            emit(rd)


# -- queue_redis ------------------------------------------------------------------------
QUEUE_LABEL = {"builtin": "builtin queue", "redis": "queue on Redis"}
QUEUE_MODES = ("builtin", "redis")


def _delivered(run: dict[str, Any]) -> float:
    return run["ops"] - run["errors"] - run.get("lost", 0)


def queue_redis(h: Any, emit: Callable[[dict[str, Any]], None], redis: PeerRedis) -> None:
    bench = "queue_redis"
    url = redis.url(DB[bench])
    reps, sub = _sessions(h)
    producers, inflight = QUEUE_SHAPE
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in QUEUE_MODES}
    engines: dict[str, Host] = {}
    try:
        engines["builtin"] = start_host([state_worker(None), queue_worker(None)])
        engines["redis"] = start_host([state_worker(None), queue_worker(url)])
        for rep in range(reps):
            for mode in _order(QUEUE_MODES, rep):
                eng = engines[mode]
                m = Metered(sub, {"engine": eng, "redis": redis.proc.pid}, per=_delivered)
                got: list[dict[str, Any]] = []
                EngineBenches(m, _NoBaseline(), lambda name: name == "queue_enqueue",  # type: ignore[arg-type]
                              got.append).queue(eng, producers, inflight)
                enq = got[0]
                if enq.get("status") != "ok":
                    raise RuntimeError(f"{mode}: {enq.get('reason')}")
                run = dict(core.choose_runs(enq["runs"], 1)[0], windows=len(enq["runs"]), session=rep + 1, mode=mode)
                run["enqueue_throughput"] = run["throughput"]
                run["throughput"] = run["e2e_throughput"]  # the figure: queue_end_to_end's definition
                runs[mode].append(run)
    except (RuntimeError, EngineDown, OSError, EOFError) as exc:
        emit(_error(bench, exc))
        return
    finally:
        h.stop_all()
        for eng in engines.values():
            eng.stop()
    variant = f"{producers} producer x{inflight} in flight"
    keys = ("throughput", "enqueue_throughput", "lost")
    b = _row(bench, f"{QUEUE_LABEL['builtin']}, {variant}", runs["builtin"], tuple(ENGINE_GROUPS), "jobs/s", keys)
    b["note"] = _queue_note(b) + "; " + _cpu_note(b, ENGINE_GROUPS, "job")
    emit(b)
    r = _row(bench, f"{QUEUE_LABEL['redis']}, {variant}", runs["redis"], tuple(ENGINE_GROUPS), "jobs/s", keys)
    r["note"] = (_compare(r, b, QUEUE_GOAL, "builtin") + "; " + _queue_note(r) + "; "
                 + _cpu_note(r, ENGINE_GROUPS, "job"))
    emit(r)


def _queue_note(r: dict[str, Any]) -> str:
    m = r["metrics"]
    return f"enqueue {m.get('enqueue_throughput', 0):,.0f}/s; lost {sum(x.get('lost', 0) for x in r['runs']):.0f}"


ROWS = {"cross_host_call": cross_host_call, "state_redis": state_redis, "queue_redis": queue_redis}


def bench(h: Any, emit: Callable[[dict[str, Any]], None], only: tuple[str, ...] = tuple(ROWS)) -> None:
    """Every row of ``only`` on one private redis-server (stopped before this returns)."""
    try:
        redis = PeerRedis()
    except RuntimeError as exc:
        for name in only:
            emit({"target": "engine", "bench": name, "variant": "", "status": "n/a",
                  "reason": f"not available: {exc}"})
        return
    try:
        for name in only:
            h.progress(f"engine {name}")
            ROWS[name](h, emit, redis)
            h.stop_all()
    finally:
        redis.stop()
