"""The two baselines every engine figure is divided by: a bare echo server and a bare relay.

Both run in their own process on the same event loop (uvloop) and WebSocket library
(`websockets`, compression off) as the clients. Invariants:
- echo sends every message back unchanged: the floor cost of one WebSocket round trip;
- the relay parses only what routing needs and forwards the original message bytes:
  ``invokefunction`` goes to the connection that registered the function id (no namespaces,
  no ownership, no bookkeeping beyond one dict), ``invocationresult`` goes back to the caller
  that used the invocation id. It is the least work any engine process can do per call.
"""
from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson
from websockets.asyncio.server import ServerConnection, serve

from brokers.kit.errors import FUNCTION_NOT_FOUND

from .wire import MAX_SIZE, run_loop


async def _echo(ws: ServerConnection) -> None:
    try:
        async for msg in ws:
            await ws.send(msg)
    except Exception:
        pass


class Relay:
    """caller -> relay -> callee -> relay -> caller, by function id and invocation id."""

    def __init__(self) -> None:
        self.functions: dict[str, ServerConnection] = {}
        self.pending: dict[str, ServerConnection] = {}

    async def handle(self, ws: ServerConnection) -> None:
        await ws.send(orjson.dumps({"type": "workerregistered", "worker_id": str(uuid.uuid4())}),
                      text=True)
        loads = orjson.loads
        try:
            async for msg in ws:
                frame: dict[str, Any] = loads(msg)
                kind = frame.get("type")
                if kind == "invokefunction":
                    await self._invoke(ws, msg, frame)
                elif kind == "invocationresult":
                    caller = self.pending.pop(frame.get("invocation_id"), None)
                    if caller is not None:
                        await caller.send(msg)
                elif kind == "registerfunction":
                    self.functions[frame["id"]] = ws
                elif kind == "unregisterfunction":
                    if self.functions.get(frame.get("id")) is ws:
                        del self.functions[frame["id"]]
        except Exception:
            pass
        finally:
            for fid in [f for f, owner in self.functions.items() if owner is ws]:
                del self.functions[fid]

    async def _invoke(self, ws: ServerConnection, msg: Any, frame: dict[str, Any]) -> None:
        iid = frame.get("invocation_id")
        if iid is None:  # void: nobody waits; the bench never relies on it
            return
        target = self.functions.get(frame.get("function_id"))
        if target is None:
            await ws.send(orjson.dumps({
                "type": "invocationresult", "invocation_id": iid,
                "function_id": frame.get("function_id"),
                "error": {"code": FUNCTION_NOT_FOUND, "message": "not registered"}}), text=True)
            return
        self.pending[iid] = ws
        await target.send(msg)


async def _serve(kind: str, port: int, ready: Any) -> None:
    handler = _echo if kind == "echo" else Relay().handle
    async with serve(handler, "127.0.0.1", port, compression=None, max_size=MAX_SIZE,
                     ping_interval=None) as server:
        ready.set()
        await server.serve_forever()


def server_main(kind: str, port: int, ready: Any) -> None:
    """Process entry point: serve ``kind`` ("echo" or "relay") until terminated."""
    run_loop(_serve(kind, port, ready))


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _NoEvent:
    def set(self) -> None:
        pass


if __name__ == "__main__":  # `python -m perf.servers relay|echo PORT`: used to time startup
    import sys

    server_main(sys.argv[1], int(sys.argv[2]), _NoEvent())
