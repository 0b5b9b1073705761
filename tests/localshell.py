"""A process shell under test on the in-memory bus (``brokers.kit.localbus``): no sockets.

``running(make, hub)`` builds the process with ``bus=hub.factory``, runs its ``serve()`` as
a task on the test's loop, waits until it announced itself (its HELLO reached ``router``,
a ``Peer`` of the test unless the process is the router), and stops it at the end.
``context(...)`` builds the ``RunContext`` a supervisor would hand it. ``invoke`` sends an
``invokefunction`` from a peer and returns the decoded ``invocationresult``.
"""
from __future__ import annotations

import asyncio
import uuid
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any, AsyncIterator, Callable

import orjson

from brokers.kit import frames, wire
from brokers.kit.localbus import LocalHub, Peer
from brokers.kit.units import RunContext, Unit


def context(unit: Unit, raw_config: Any = None, *, process: str | None = None,
            data_dir: str = "/nonexistent", peers: tuple[str, ...] = (),
            grace_ms: int = 5000) -> RunContext:
    name = process or unit.name
    return RunContext(process=name, unit=unit, config=unit.parse_config(raw_config, "test"),
                      engine=SimpleNamespace(registration_namespace_grace_ms=grace_ms, workers=(), shared={}, stop_timeout_ms=10000),
                      runtime_dir="/nonexistent", data_dir=data_dir,
                      peers=[frames.ROUTER, name, *peers])


@asynccontextmanager
async def running(make: Callable[..., Any], ctx: RunContext, hub: LocalHub) -> AsyncIterator[Any]:
    proc = make(ctx, bus=hub.factory)
    task = asyncio.ensure_future(proc.serve())
    deadline = asyncio.get_running_loop().time() + 5
    while not any(h.get("k") == frames.HELLO and s == ctx.process for s, _, h, _ in hub.sent):
        assert not task.done(), task.exception()
        assert asyncio.get_running_loop().time() < deadline, "process never said HELLO"
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.01)  # let its announcement land
    try:
        yield proc
    finally:
        proc.stop()
        await asyncio.wait_for(task, 5)


def registrations(router: Peer) -> dict[str, list[dict]]:
    """The UP bodies the router peer got so far, by message type."""
    out: dict[str, list[dict]] = {}
    for _, header, body in router.received:
        if header.get("k") == frames.UP and body:
            msg = orjson.loads(body)
            out.setdefault(msg.get("type"), []).append(msg)
    return out


async def invoke(peer: Peer, node: str, function_id: str, data: Any, *, conn: str = "C1",
                 traceparent: str | None = None) -> dict:
    """A sync call from connection ``conn`` of ``peer`` to ``node``; the result message."""
    inv_id = str(uuid.uuid4())
    peer.send(node, frames.inv(inv_id, function_id, None, peer.name, conn),
              wire.invoke(inv_id, function_id, data, traceparent=traceparent))
    _, header, body = await peer.next(frames.RES, where=lambda h: h.get("id") == inv_id)
    assert header["to"] == conn
    return orjson.loads(body)


def route(router: Peer, nodes: list[str], function_id: str, node: str, conn: str | None) -> None:
    """The router peer publishes a route ``function_id -> (node, conn)`` to ``nodes``."""
    for n in nodes:
        router.send(n, frames.routes([["+", "default", function_id, node, conn]]))


def answer(peer: Peer, header: dict, result: Any) -> None:
    """Answer a delivered INV with ``result``."""
    if header.get("rn") is not None:
        peer.send(header["rn"], frames.res(header["id"], header.get("rc")),
                  wire.result(header["id"], header["fn"], result))
