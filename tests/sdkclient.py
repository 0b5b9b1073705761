"""Helpers for tests that drive the engine with our own SDK (``import iii``)."""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Iterator


@contextmanager
def our_worker(url: str, name: str, timeout_ms: int = 10_000) -> Iterator[Any]:
    """A connected worker of our SDK, shut down afterwards."""
    from iii import InitOptions, register_worker

    iii = register_worker(url, InitOptions(worker_name=name, daemon=True, invocation_timeout_ms=timeout_ms))
    assert iii.wait_connected(10)
    try:
        yield iii
    finally:
        iii.shutdown()


def trigger_when_found(iii: Any, function_id: str, payload: Any, within: float = 5.0) -> Any:
    """``iii.trigger``, retried while the answer is function_not_found: the registration of
    a worker in another process may still be on its way."""
    deadline = time.monotonic() + within
    while True:
        try:
            return iii.trigger({"function_id": function_id, "payload": payload})
        except Exception as exc:
            if getattr(exc, "code", None) != "function_not_found" or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def wait_registered(iii: Any, function_id: str, within: float = 5.0) -> None:
    """Until the engine knows ``function_id`` (``engine::functions::info`` answers it), before
    a call that must not be retried (it hands over a one-use channel ref, say)."""
    deadline = time.monotonic() + within
    while True:
        try:
            iii.trigger({"function_id": "engine::functions::info", "payload": {"function_id": function_id}})
            return
        except Exception as exc:
            if str(getattr(exc, "code", "")).lower() != "not_found" or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
