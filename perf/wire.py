"""Minimal iii protocol clients used by every benchmark: a caller and a callee worker.

They speak the raw wire protocol of protocol.md §3-§5 (JSON text frames, orjson), over the
`websockets` asyncio client with compression off, so that the engine and the baselines are
driven by exactly the same code. Invariants:
- a call is matched to its answer by ``invocation_id`` only (a uuid4 per call), whatever the
  frame type, so the same caller also drives a bare echo server;
- the callee answers every ``invokefunction`` that carries an ``invocation_id`` with exactly
  one ``invocationresult`` and counts every delivery (void and enqueue deliveries included).
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any, Awaitable, Callable

import orjson
from websockets.asyncio.client import ClientConnection, connect

from brokers.kit.errors import FUNCTION_NOT_FOUND

from . import core

log = logging.getLogger(__name__)

MAX_SIZE = 64 * 1024 * 1024


def run_loop(main: Awaitable[Any]) -> Any:
    """Run a coroutine on uvloop when it is installed (it is in our venv), else asyncio."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a hard dependency on Linux
        return asyncio.run(main)
    return uvloop.run(main)


async def open_ws(url: str, timeout: float = 10.0) -> ClientConnection:
    """Connect, retrying while the server is still starting."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await connect(url, compression=None, max_size=MAX_SIZE, open_timeout=5,
                                 ping_interval=None)
        except (OSError, asyncio.TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


def local_port(ws: ClientConnection) -> int:
    return int(ws.transport.get_extra_info("sockname")[1])


def worker_hello(role: str) -> bytes:
    # Unique names: two live workers with one name in one namespace are a conflict and the
    # engine closes the second connection (protocol.md §4.3).
    name = f"{role}-{uuid.uuid4().hex[:8]}"
    # Sent first so the engine fixes the namespace at once instead of after the 5 s grace
    # timer that buffers registrations (protocol.md §4.4).
    return orjson.dumps({"type": "invokefunction", "function_id": "engine::workers::register",
                         "action": {"type": "void"},
                         "data": {"runtime": "python", "name": name, "namespace": None,
                                  "version": "perf",
                                  # we accept 64 MiB (MAX_SIZE), so the engine may send us
                                  # more than 1 MiB (protocol.md §10.4)
                                  "features": ["large-messages.v1"]}})


class Caller:
    """One connection issuing ``invokefunction`` calls; any number may be in flight."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                frame = orjson.loads(msg)
                fut = self.pending.pop(frame.get("invocation_id"), None)
                if fut is not None and not fut.done():
                    fut.set_result(frame)
        except Exception as exc:  # connection lost: fail everything still waiting
            log.debug("caller reader stopped: %s", exc)
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(ConnectionError("connection closed"))
        self.pending.clear()

    async def call(self, function_id: str, data: Any, action: dict[str, Any] | None = None,
                   timeout: float = 30.0) -> dict[str, Any]:
        iid = str(uuid.uuid4())
        frame: dict[str, Any] = {"type": "invokefunction", "function_id": function_id,
                                 "data": data, "invocation_id": iid}
        if action is not None:
            frame["action"] = action
        fut = asyncio.get_running_loop().create_future()
        self.pending[iid] = fut
        await self.ws.send(orjson.dumps(frame), text=True)
        return await asyncio.wait_for(fut, timeout)

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()


def error_code(frame: dict[str, Any]) -> str | None:
    err = frame.get("error")
    if not err:
        return None
    return str(err.get("code")) if isinstance(err, dict) else "UNKNOWN"


async def probe(caller: Caller, function_id: str, data: Any, timeout: float,
                action: dict[str, Any] | None = None) -> str | None:
    """Call until the function answers without ``function_not_found``.

    Returns None when it works, else the last error code seen (the feature is missing)."""
    deadline = time.monotonic() + timeout
    last: str | None = "no answer"
    while time.monotonic() < deadline:
        try:
            frame = await caller.call(function_id, data, action, timeout=2.0)
        except asyncio.TimeoutError:
            last = "timeout"
            continue
        last = error_code(frame)
        if last is None:
            return None
        if last != FUNCTION_NOT_FOUND:
            return last
        await asyncio.sleep(0.05)
    return last


async def measure(callers: list[Caller], inflight: int, seconds: float,
                  make_call: Callable[[Caller, int], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    """``inflight`` lanes per connection, each issuing calls back to back for ``seconds``."""
    latencies: list[int] = []
    errors = 0
    counter = 0
    start = time.perf_counter()
    stop = start + seconds

    async def lane(caller: Caller) -> None:
        nonlocal errors, counter
        while time.perf_counter() < stop:
            counter += 1
            t0 = time.perf_counter_ns()
            frame = await make_call(caller, counter)
            latencies.append(time.perf_counter_ns() - t0)
            if frame.get("error"):
                errors += 1

    await asyncio.gather(*(lane(c) for c in callers for _ in range(inflight)))
    elapsed = time.perf_counter() - start
    out = core.summarize_window(latencies, elapsed, errors)
    out["started_monotonic"] = time.monotonic() - elapsed
    return out


async def serve_callee(url: str, function_ids: list[str], triggers: list[dict[str, Any]],
                       on_delivery: Callable[[], None], on_port: Callable[[int], None],
                       stop: asyncio.Event | None = None, echo: bool = True) -> None:
    """Register ``function_ids`` (and trigger bindings) and answer every delivery."""
    ws = await open_ws(url)
    on_port(local_port(ws))
    await ws.send(worker_hello("perf-callee"), text=True)
    for fid in function_ids:
        await ws.send(orjson.dumps({"type": "registerfunction", "id": fid}), text=True)
    for trig in triggers:
        await ws.send(orjson.dumps({"type": "registertrigger", "id": str(uuid.uuid4()), **trig}),
                      text=True)
    closer = None
    if stop is not None:
        async def _close() -> None:
            await stop.wait()
            await ws.close()
        closer = asyncio.get_running_loop().create_task(_close())
    dumps, loads = orjson.dumps, orjson.loads
    try:
        async for msg in ws:
            frame = loads(msg)
            if frame.get("type") != "invokefunction":
                continue
            on_delivery()
            iid = frame.get("invocation_id")
            if iid:
                await ws.send(dumps({"type": "invocationresult", "invocation_id": iid,
                                     "function_id": frame.get("function_id"),
                                     "result": frame.get("data") if echo else None}), text=True)
    except Exception as exc:
        log.debug("callee stopped: %s", exc)
    if closer is not None:
        closer.cancel()
