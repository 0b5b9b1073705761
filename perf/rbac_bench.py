"""The ``rbac_overhead`` benchmark (issue 18): ``ws_roundtrip`` through an RBAC listener.

The goal row is the issue's definition taken as ``ws_roundtrip`` is built: caller and echo
callee on one port, here the RBAC port, against both on the internal port (``rbac port,
callee there too``). The cross-listener rows are controls: a caller on the second or the
RBAC port with the callee on the internal port pays the hop between two gateway processes
with or without RBAC; their ratio to each other is the RBAC check on that path.

One engine with three ``iii-worker-manager`` listeners sharing one registry, each with one
gateway process of its own:

- ``internal``: the engine's first listener (``perf.engine.make_config``), no session;
- ``second port``: a second listener without ``rbac`` and without a middleware (no session
  either): the control that shows what the listener split alone costs, since a caller on
  another listener reaches the callee through another gateway process;
- ``rbac``: a listener with ``rbac: {auth_function_id: bench::auth}``, no middleware, no
  ``expose_functions``, no hooks. The auth function is ``bench::auth`` of a raw worker on the
  internal port (``_auth_main``) answering every upgrade with the AuthResult
  ``{"allowed_functions": ["bench::echo"]}``: a grant parsed once per connection into its
  session (``rbac.parse_auth``) and checked on every call (``rbac.decide``);
- ``rbac, callee there too``: the caller on the RBAC port calling ``bench::echo-rbac`` of a
  second echo callee that also connected (and registered, allowed: no hook) through the
  RBAC port: both on the RBAC listener's one gateway process, the RBAC check without the hop
  between gateway processes, the figure to set against ``internal`` for the check alone.

In the cross-listener modes the echo callee (``perf.procs``, the ``ws_roundtrip`` one) stays
on the internal port and only the caller (``benches.call_spec``, as ``ws_roundtrip``) moves.
In ``rbac, callee there too`` both are on the RBAC port as ``ws_roundtrip`` has both on one
port: every call goes through the session's check (``rbac.decide``) and to a callee whose
registration went through the RBAC listener; that row against ``internal`` is the goal.

1 and 16 calls in flight on one connection. The engine is started once; each of ``runs``
sessions measures one window per mode and in-flight count (a noisy window is repeated, up
to ``max_attempts - runs + 1`` windows, the quietest kept), the modes in ABBA order
(internal, second, rbac, rbac_both; then reversed; ...) so that drift of the shared machine
hits every mode alike. A figure is the median over sessions; every row carries its ratio
to the ``internal`` row of the same in-flight count (``x thrpt``; goal at 16 in flight: at
least ``GOAL``, on the ``rbac port, callee there too`` row), the ``rbac port`` row also its
ratio to ``second port`` (the RBAC check on the cross-listener path), and per session. Evidence on the row: auth calls answered (one per RBAC caller connection, not
one per call: the grants are cached on the connection), and a call through the RBAC port
to a function the session was not granted (``state::get``) answered ``FORBIDDEN``. Each
window also records the CPU microseconds per call of the engine's processes (psutil).
"""
from __future__ import annotations

import asyncio
import dataclasses
import statistics
import time
from typing import Any, Callable

import orjson
import psutil

from . import core, wire
from .benches import ECHO_FN, attach, call_spec
from .engine_benches import EngineDown, start_engine
from .servers import free_port

BENCH = "rbac_overhead"
INFLIGHTS = (1, 16)
GOAL = 0.90
GOAL_INFLIGHT = 16
AUTH_FN = "bench::auth"
DENIED_FN = "state::get"
RBAC_ECHO_FN = "bench::echo-rbac"
"""The echo function of the second callee, the one connected through the RBAC port."""
AUTH_RESULT = {"allowed_functions": [ECHO_FN, RBAC_ECHO_FN]}
MODES = ("internal", "second", "rbac", "rbac_both")
LABEL = {"internal": "internal port", "second": "second port, no rbac", "rbac": "rbac port",
         "rbac_both": "rbac port, callee there too"}


def _auth_main(url: str, answered: Any, ready: Any) -> None:
    """A raw worker on the internal port answering ``bench::auth`` with ``AUTH_RESULT``."""
    async def serve() -> None:
        ws = await wire.open_ws(url)
        await ws.send(wire.worker_hello("perf-auth"), text=True)
        await ws.send(orjson.dumps({"type": "registerfunction", "id": AUTH_FN}), text=True)
        ready.set()
        async for msg in ws:
            frame = orjson.loads(msg)
            if frame.get("type") != "invokefunction" or not frame.get("invocation_id"):
                continue
            answered.value += 1
            await ws.send(orjson.dumps({"type": "invocationresult", "invocation_id": frame["invocation_id"],
                                        "function_id": frame.get("function_id"), "result": AUTH_RESULT}),
                          text=True)

    wire.run_loop(serve())


async def _check_rbac(url: str, timeout: float = 15.0) -> dict[str, Any]:
    """Until the auth worker is registered: one RBAC connection, the granted call answered,
    an ungranted one refused. Raises when the RBAC port does not behave so."""
    deadline, last = time.monotonic() + timeout, "no attempt"
    while time.monotonic() < deadline:
        try:
            caller = wire.Caller(await wire.open_ws(url, 5.0))
        except (OSError, asyncio.TimeoutError) as exc:
            last = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(0.2)
            continue
        try:
            frame = await caller.call(ECHO_FN, {"n": 0}, timeout=3.0)
            if frame.get("error"):
                last = f"{ECHO_FN}: {wire.error_code(frame)}"
                await asyncio.sleep(0.2)
                continue
            denied = await caller.call(DENIED_FN, {"scope": "s", "key": "k"}, timeout=3.0)
            return {"denied_call": DENIED_FN, "denied_code": wire.error_code(denied)}
        except Exception as exc:  # noqa: BLE001 - refused (AUTH_ERROR) and closed, or not yet up
            last = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(0.2)
        finally:
            await caller.close()
    raise RuntimeError(f"rbac port never answered {ECHO_FN}: {last}")


def _engine_cpu(eng: Any) -> float:
    """CPU seconds of the supervisor and every engine process."""
    total = 0.0
    for proc in eng.processes_info():
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            continue
    return total


def _wait_port(port: int, timeout: float = 15.0) -> None:
    import socket
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise EngineDown(f"listener port {port} never opened")
            time.sleep(0.05)


def _row(mode: str, n: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"target": "engine", "bench": BENCH, "variant": f"{LABEL[mode]}, {n} in flight",
            "status": "ok", "unit": "calls/s", "runs": runs,
            "noisy": any(r.get("noisy") for r in runs),
            "metrics": core.median_metrics(runs, ("throughput", "p50_us", "p99_us", "engine_cpu_us_per_call"))}


def _paired(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[float]:
    by = {r["session"]: r for r in b}
    return [round(r["throughput"] / by[r["session"]]["throughput"], 3)
            for r in sorted(a, key=lambda r: r["session"])
            if r["session"] in by and by[r["session"]]["throughput"]]


def bench(h: Any, emit: Callable[[dict[str, Any]], None]) -> None:
    """One engine, ``runs`` sessions of every mode in ABBA order; rows per in-flight count."""
    reps = h.settings.runs
    per_session = max(1, h.settings.max_attempts - reps + 1)
    sub = dataclasses.replace(h, settings=dataclasses.replace(h.settings, runs=1, max_attempts=per_session))
    second_port, rbac_port = free_port(), free_port()
    extra = [{"name": "iii-worker-manager", "config": {"port": second_port, "processes": 1}},
             {"name": "iii-worker-manager", "config": {"port": rbac_port, "processes": 1,
                                                       "rbac": {"auth_function_id": AUTH_FN}}}]
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {m: {n: [] for n in INFLIGHTS} for m in MODES}
    evidence: dict[str, Any] = {}
    eng = None
    try:
        eng, _ = start_engine(1, extra_workers=extra)
        urls = {"internal": eng.url, "second": f"ws://127.0.0.1:{second_port}/",
                "rbac": f"ws://127.0.0.1:{rbac_port}/"}
        for port in (second_port, rbac_port):
            _wait_port(port)
        answered, ready = h.ctx.Value("q", 0, lock=False), h.ctx.Event()
        h._spawn(_auth_main, eng.url, answered, ready)
        if not ready.wait(15):
            raise RuntimeError("auth worker did not connect")
        h.start_callee(eng.url, [ECHO_FN])
        h.start_callee(urls["rbac"], [RBAC_ECHO_FN])  # registers through the RBAC port (allowed: no hook)
        evidence.update(wire.run_loop(_check_rbac(urls["rbac"])))
        auth_before = int(answered.value)
        rbac_callers = 0
        cpu0: list[float] = []

        def before() -> None:
            cpu0[:] = [_engine_cpu(eng)]

        def after(run: dict[str, Any]) -> None:
            run["engine_cpu_us_per_call"] = round((_engine_cpu(eng) - cpu0[0]) * 1e6 / max(1, run["ops"]), 1)

        for rep in range(reps):
            for mode in (MODES if rep % 2 == 0 else tuple(reversed(MODES))):
                for n in INFLIGHTS:
                    label = f"engine {BENCH} {mode}, {n} in flight, session {rep + 1}/{reps}"
                    spec = (call_spec(urls["rbac"], n, fid=RBAC_ECHO_FN) if mode == "rbac_both"
                            else call_spec(urls[mode], n))
                    status, payload = sub.windows(label, spec, after=after, before=before)
                    if status != "ok":
                        raise RuntimeError(f"{mode}, {n} in flight: {status}: {payload}")
                    rbac_callers += mode in ("rbac", "rbac_both")
                    run = dict(core.choose_runs(payload, 1)[0])
                    run.update(session=rep + 1, windows=len(payload), mode=mode)
                    runs[mode][n].append(run)
        evidence.update(rbac_caller_connections=rbac_callers,
                        auth_calls_during_windows=int(answered.value) - auth_before)
    except (RuntimeError, EngineDown, OSError, EOFError) as exc:
        emit({"target": "engine", "bench": BENCH, "variant": "", "status": "error",
              "reason": f"{type(exc).__name__}: {exc}"})
        return
    finally:
        h.stop_all()
        if eng is not None:
            eng.stop()
    ev_note = (f"auth calls {evidence['auth_calls_during_windows']} for {evidence['rbac_caller_connections']}"
               f" rbac caller connections ({sum(r['ops'] for m in ('rbac', 'rbac_both') for n in INFLIGHTS for r in runs[m][n]):,}"
               f" measured calls); ungranted {DENIED_FN} -> {evidence['denied_code']}")
    for n in INFLIGHTS:
        internal = _row("internal", n, runs["internal"][n])
        emit(internal)
        both = attach(_row("rbac_both", n, runs["rbac_both"][n]), internal)
        emit(_noted(both, internal, n, "caller and callee on the RBAC listener, as ws_roundtrip has them on one port",
                    goal=n == GOAL_INFLIGHT, evidence=evidence, ev_note=ev_note))
        second = attach(_row("second", n, runs["second"][n]), internal)
        x2 = (second.get("ratio") or {}).get("throughput")
        second["note"] = (f"x{x2:.2f} of internal port (a caller on another listener: the hop between gateway "
                          f"processes, no RBAC)" if x2 is not None else "no ratio")
        emit(second)
        r = attach(_row("rbac", n, runs["rbac"][n]), internal)
        r["ratio_to_second_port"] = core.compare(r["metrics"], second["metrics"])
        xs = r["ratio_to_second_port"].get("throughput")
        emit(_noted(r, internal, n, "the callee on the internal port" + (
            f"; x{xs:.2f} of second port (the RBAC check on the same hop)" if xs is not None else ""),
            goal=False, evidence=evidence))


def _noted(row: dict[str, Any], internal: dict[str, Any], n: int, what: str, *, goal: bool,
           evidence: dict[str, Any], ev_note: str = "") -> dict[str, Any]:
    """``row`` with its ratio to ``internal`` (and the goal on the goal row) in its note."""
    x = (row.get("ratio") or {}).get("throughput")
    note = f"x{x:.2f} of internal port: {what}" if x is not None else "no ratio"
    if goal and x is not None:
        row["goal"] = {"min_ratio": GOAL, "met": x >= GOAL}
        note = note.replace(": ", f" (goal >= {GOAL:.2f}: {'met' if x >= GOAL else 'NOT met'}): ", 1)
    pairs = _paired(row["runs"], internal["runs"])
    row["paired_ratios"] = pairs
    if pairs:
        note += f"; per session {'/'.join(f'{p:.2f}' for p in pairs)} (median {statistics.median(pairs):.2f})"
    cpu, base = row["metrics"].get("engine_cpu_us_per_call"), internal["metrics"].get("engine_cpu_us_per_call")
    if cpu and base:
        note += f"; engine CPU per call {cpu:.0f} us against {base:.0f} (internal)"
    row["evidence"] = evidence
    if ev_note:
        note += "; " + ev_note
    row["note"] = note
    return row
