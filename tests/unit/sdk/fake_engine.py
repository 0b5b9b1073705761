"""A tiny in-process engine over a real WebSocket, for the SDK shell tests only.

Owns just enough of protocol.md to exercise the SDK: ``workerregistered`` on accept,
function ownership, routing of sync/void calls with the caller's invocation id and
``_caller_worker_id``, results relayed back, ``function_not_found``, a ``state::set/get``
built-in and ``engine::functions::list``. Every frame a connection sent is recorded in
``frames`` (per connection, in order) so tests can check the wire. A connection to
``/otel`` is a telemetry socket, not a worker (protocol.md §9.2): its binary frames go to
``otel_frames`` (all sockets, in order) and ``otel_connections`` counts them. Runs its own loop on a
daemon thread; ``drop_all()`` closes every connection (as a killed gateway would).
"""
from __future__ import annotations

import asyncio
import json
import threading
import uuid
from typing import Any

from websockets.asyncio.server import ServerConnection, serve


class FakeEngine:
    def __init__(self, *, log_functions: bool = False) -> None:
        self.frames: list[list[dict[str, Any]]] = []  # per connection
        self.owners: dict[str, ServerConnection] = {}
        self.pending: dict[str, ServerConnection] = {}
        self.state: dict[tuple[str, str], Any] = {}
        self.log_functions = log_functions
        self.conns: list[ServerConnection] = []
        self.ids: dict[ServerConnection, str] = {}
        self.accepting = True
        self.otel_frames: list[bytes] = []
        self.otel_connections = 0
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self._ready.wait(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self._ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        self.server = await serve(self._handle, "127.0.0.1", 0, compression=None)
        self.port = self.server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{self.port}"

    def stop(self) -> None:
        async def close() -> None:
            self.server.close()
            await self.server.wait_closed()
        asyncio.run_coroutine_threadsafe(close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)

    def drop_all(self) -> None:
        async def drop() -> None:
            for ws in list(self.conns):
                ws.transport.abort()
        asyncio.run_coroutine_threadsafe(drop(), self.loop).result(5)

    def send_to(self, index: int, msg: dict[str, Any]) -> None:
        ws = self.conns[index]
        asyncio.run_coroutine_threadsafe(ws.send(json.dumps(msg)), self.loop).result(5)

    async def _handle(self, ws: ServerConnection) -> None:
        if not self.accepting:
            await ws.close(1011)
            return
        if ws.request is not None and ws.request.path.split("?", 1)[0].rstrip("/").endswith("/otel"):
            self.otel_connections += 1
            try:
                async for raw in ws:
                    if isinstance(raw, bytes):
                        self.otel_frames.append(raw)
            except Exception:
                pass
            return
        wid = str(uuid.uuid4())
        self.ids[ws] = wid
        self.conns.append(ws)
        log: list[dict[str, Any]] = []
        self.frames.append(log)
        await ws.send(json.dumps({"type": "workerregistered", "worker_id": wid,
                                  "reattach_token": str(uuid.uuid4())}))
        try:
            async for raw in ws:
                msg = json.loads(raw)
                log.append(msg)
                await self._on(ws, msg)
        except Exception:
            pass
        finally:
            for fid, owner in list(self.owners.items()):
                if owner is ws:
                    del self.owners[fid]

    async def _reply(self, ws: ServerConnection, msg: dict[str, Any], result: Any = None,
                     error: dict[str, Any] | None = None) -> None:
        iid = msg.get("invocation_id")
        if not iid:
            return
        out: dict[str, Any] = {"type": "invocationresult", "invocation_id": iid, "function_id": msg["function_id"]}
        if error is not None:
            out["error"] = error
        else:
            out["result"] = result
        await ws.send(json.dumps(out))

    async def _on(self, ws: ServerConnection, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "registerfunction":
            self.owners[msg["id"]] = ws
        elif kind == "unregisterfunction":
            if self.owners.get(msg["id"]) is ws:
                del self.owners[msg["id"]]
        elif kind == "invocationresult":
            caller = self.pending.pop(msg["invocation_id"], None)
            if caller is not None:
                await caller.send(json.dumps(msg))
        elif kind == "invokefunction":
            await self._invoke(ws, msg)

    async def _invoke(self, ws: ServerConnection, msg: dict[str, Any]) -> None:
        fid = msg["function_id"]
        data = msg.get("data")
        if fid == "engine::workers::register":
            return await self._reply(ws, msg, {"success": True})
        if fid == "state::set":
            self.state[(data["scope"], data["key"])] = data["value"]
            return await self._reply(ws, msg, {"new_value": data["value"]})
        if fid == "state::get":
            return await self._reply(ws, msg, self.state.get((data["scope"], data["key"])))
        if fid == "engine::functions::list":
            names = list(self.owners) + (["engine::log::info", "engine::log::warn"] if self.log_functions else [])
            return await self._reply(ws, msg, {"functions": [{"function_id": n} for n in names]})
        if fid.startswith("engine::log::") and self.log_functions:
            return await self._reply(ws, msg, None)
        owner = self.owners.get(fid)
        if owner is None:
            return await self._reply(ws, msg, error={"code": "function_not_found",
                                                     "message": f"Function {fid} not found in namespace default."})
        if isinstance(data, dict):
            data = {**data, "_caller_worker_id": self.ids[ws]}
        iid = msg.get("invocation_id") or str(uuid.uuid4())
        if msg.get("invocation_id"):
            self.pending[iid] = ws
        out = {"type": "invokefunction", "invocation_id": iid, "function_id": fid, "data": data}
        if msg.get("metadata") is not None:
            out["metadata"] = msg["metadata"]
        await owner.send(json.dumps(out))
