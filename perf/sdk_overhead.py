"""Round trips through our Python SDK between two workers on one engine.

``run(url, seconds)`` starts a callee worker (``perf::sdk-echo``, a sync ``def`` handler, as in
the seed examples) and a caller worker in this process, then measures blocking
``iii.trigger`` round trips with 1 and with 16 calls in flight (16 caller threads). Compare
with the harness's minimal protocol client on the same engine to get the SDK's own overhead.
Usage: python perf/sdk_overhead.py ws://127.0.0.1:49134 [seconds]
"""
from __future__ import annotations

import statistics
import sys
import threading
import time
from typing import Any

from iii import InitOptions, InvocationError, register_worker

FUNCTION_ID = "perf::sdk-echo"


def _echo(data: Any) -> Any:
    return data


def _measure(caller: Any, in_flight: int, seconds: float) -> dict[str, float]:
    stop_at = time.perf_counter() + seconds
    lat: list[list[float]] = [[] for _ in range(in_flight)]
    errors = [0] * in_flight

    def loop(i: int) -> None:
        payload = {"n": i}
        samples = lat[i]
        while True:
            t0 = time.perf_counter()
            if t0 >= stop_at:
                return
            try:
                caller.trigger({"function_id": FUNCTION_ID, "payload": payload})
            except InvocationError:
                errors[i] += 1
                continue
            samples.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(in_flight)]
    t_start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t_start
    all_lat = sorted(x for s in lat for x in s)
    n = len(all_lat)
    return {
        "rt_per_s": n / elapsed if elapsed else 0.0,
        "p50_us": statistics.median(all_lat) * 1e6 if n else float("nan"),
        "p99_us": all_lat[min(n - 1, int(n * 0.99))] * 1e6 if n else float("nan"),
        "calls": float(n),
        "errors": float(sum(errors)),
    }


def run(url: str, seconds: float) -> dict[str, Any]:
    """Measure for ``seconds`` at each concurrency; returns flat figures for the report."""
    callee = register_worker(url, InitOptions(worker_name="perf-sdk-callee", daemon=True))
    caller = register_worker(url, InitOptions(worker_name="perf-sdk-caller", daemon=True))
    try:
        callee.register_function(FUNCTION_ID, _echo)
        if not (callee.wait_connected(10) and caller.wait_connected(10)):
            raise RuntimeError(f"could not connect to {url}")
        deadline = time.monotonic() + 10
        while True:  # until the registration is routable
            try:
                caller.trigger({"function_id": FUNCTION_ID, "payload": {"warm": True}, "timeout_ms": 1000})
                break
            except InvocationError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        _measure(caller, 1, min(0.5, seconds / 4))  # warm-up
        one = _measure(caller, 1, seconds)
        sixteen = _measure(caller, 16, seconds)
    finally:
        caller.shutdown()
        callee.shutdown()
    out: dict[str, Any] = {"shape": "python SDK sync trigger, worker -> engine -> worker (sync def handler)"}
    for tag, figures in (("1", one), ("16", sixteen)):
        for key, value in figures.items():
            out[f"sdk_{key}_{tag}"] = round(value, 1)
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(run(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 3.0), indent=2))
