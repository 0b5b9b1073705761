"""Kill -9 the gateway under a connected worker: it reconnects and re-registers by itself.

The supervisor restarts the gateway; the worker (default reconnect settings: 1 s x2, ±30 %)
sends ``reattach`` and replays its registrations on the new connection, and calls from a
second worker work again within 5 s of the kill.
"""
from __future__ import annotations

import signal
import time
from typing import Any

import pytest

from iii import InitOptions, InvocationError, register_worker


@pytest.mark.slow
def test_worker_survives_gateway_kill(engine: Any):
    served = register_worker(engine.url, InitOptions(worker_name="resilience-callee", daemon=True))
    caller = register_worker(engine.url, InitOptions(worker_name="resilience-caller", daemon=True,
                                                     invocation_timeout_ms=1000))
    try:
        served.register_function("res::echo", lambda d: {"echo": d["n"]})
        assert served.wait_connected(10) and caller.wait_connected(10)
        deadline = time.monotonic() + 5
        while True:  # registration reaches the route table asynchronously
            try:
                assert caller.trigger({"function_id": "res::echo", "payload": {"n": 0}}) == {"echo": 0}
                break
            except InvocationError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        first_id = served.worker_id

        old = engine.kill("gateway", signal.SIGKILL)
        killed_at = time.monotonic()
        engine.wait_running("gateway", timeout=5, not_pid=old)

        last: Exception | None = None
        while time.monotonic() - killed_at < 5.0:
            try:
                if caller.trigger({"function_id": "res::echo", "payload": {"n": 1}}) == {"echo": 1}:
                    break
            except InvocationError as exc:
                last = exc
                time.sleep(0.05)
        else:
            pytest.fail(f"no successful call within 5 s of the kill (last error: {last!r}); "
                        f"callee state={served.get_connection_state()} caller state={caller.get_connection_state()}")
        recovered = time.monotonic() - killed_at
        assert served.worker_id != first_id  # a new connection, registrations replayed
        print(f"calls work again {recovered:.2f} s after kill -9 of the gateway")
    finally:
        served.shutdown()
        caller.shutdown()
