"""The gateway's RBAC guard on calls (protocol.md Appendix C), and its own calls.

The verdicts are ``rbac.py``'s; this half of the core does what they need: it calls
functions itself (the auth function, the hooks, ``engine::functions::info`` for a
function's metadata, the listings it filters) through the engine like any call, and it
answers a connection with a session (``Conn.rbac``) when a call is denied, deferred,
passed to the middleware or a listing.

Invariants:
- a connection without a session pays one attribute test per call (``calls.py``); all of
  this runs only for connections of a listener with ``rbac`` or a middleware;
- a denied call is answered ``FORBIDDEN`` under its id, or a fresh one for a void call;
- every call of the gateway's own is answered exactly once: by its callee, by
  ``invocation_stopped`` when the callee or its process goes away, or by its timeout;
- what a session may not see it may not learn: a listing through it holds only the
  functions it may call, and a hidden function is described like an absent one.
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from brokers.gateway import rbac
from brokers.gateway.conns import REGISTER_FN, Conn, GatewayState
from brokers.kit import frames, wire
from brokers.kit.errors import FUNCTION_NOT_FOUND, INVOCATION_STOPPED, NOT_FOUND, TIMEOUT, UNKNOWN, EngineError
from brokers.kit.frames import ROUTER
from brokers.kit.routes import not_found_message

log = logging.getLogger(__name__)

FORBIDDEN = "FORBIDDEN"
INFO_FN = "engine::functions::info"
LISTINGS = frozenset({"engine::functions::list", "engine::functions::info", "engine::workers::list",
                      "engine::workers::info", "engine::triggers::list", "engine::triggers::info",
                      "engine::registered-triggers::list", "engine::registered-triggers::info"})
META_CACHE_MAX = 10000


class Guard(GatewayState):
    """Calls of connections with a session, and the gateway's own calls."""

    # ---- the gateway's own calls ----------------------------------------------------------

    def engine_call(self, fid: str, data: Any, ns: str = "default", metadata: Any = None) -> asyncio.Future:
        """Call ``fid`` like a worker would; the future holds its result or an ``EngineError``."""
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        route = self.routes.get(ns, fid)
        if route is None:
            fut.set_exception(EngineError(FUNCTION_NOT_FOUND, not_found_message(fid, ns, self.routes.namespaces_of(fid))))
            return fut
        inv_id = str(uuid.uuid4())
        try:
            body = wire.invoke(inv_id, fid, data, metadata)
        except TypeError as exc:
            fut.set_exception(EngineError(UNKNOWN, f"cannot encode the call: {exc}"))
            return fut
        node, target = route
        self.engine_calls.add(inv_id, node, fut)
        fut.add_done_callback(lambda _: self.engine_calls.pop(inv_id))
        if node == self.node:
            callee = self.conns.get(target)
            if callee is None:
                self._engine_result(inv_id, wire.stopped(inv_id, fid), INVOCATION_STOPPED)
            else:
                self._to_callee(callee, self.node, None, inv_id, fid, body)
        elif self.up_acked < self.up_sent and node != ROUTER:
            self.out.send(ROUTER, frames.inv(inv_id, fid, target, self.node, None, via=node), body)
        else:
            self.out.send(node, frames.inv(inv_id, fid, target, self.node, None), body)
        return fut

    async def engine_call_for(self, fid: str, data: Any, timeout: float, ns: str = "default") -> Any:
        """``engine_call`` that fails with ``TIMEOUT`` after ``timeout`` seconds."""
        try:
            return await asyncio.wait_for(self.engine_call(fid, data, ns), timeout)
        except asyncio.TimeoutError:
            raise EngineError(TIMEOUT, f"{fid} did not answer within {timeout:g} s") from None

    def _engine_result(self, inv_id: str, body: bytes, error: str | None) -> None:
        fut = self.engine_calls.pop(inv_id)
        if fut is None or fut.done():
            return
        try:
            msg = wire.loads(body)
        except ValueError:
            fut.set_exception(EngineError(UNKNOWN, "undecodable result"))
            return
        err = msg.get("error") if isinstance(msg, dict) else None
        if err:
            if isinstance(err, dict):
                fut.set_exception(EngineError(str(err.get("code", UNKNOWN)), str(err.get("message", ""))))
            else:
                fut.set_exception(EngineError(UNKNOWN, str(err)))
        else:
            fut.set_result(msg.get("result") if isinstance(msg, dict) else None)

    def _reset(self, node: str) -> None:
        super()._reset(node)  # type: ignore[misc]
        for _, fut in self.engine_calls.stopped(node):
            if not fut.done():
                fut.set_exception(EngineError(INVOCATION_STOPPED, "Invocation stopped"))

    # ---- calls of a connection with a session ---------------------------------------------

    def _forbid(self, conn: Conn, inv_id: Any, fid: str, message: str) -> None:
        self.out.ws(conn.id, wire.error(inv_id or str(uuid.uuid4()), fid, FORBIDDEN, message))

    def _guard(self, conn: Conn, msg: dict, fid: str, ns: str, inv_id: Any, kind: Any) -> bool:
        """Whether the call was handled here (denied, deferred, listing, middleware);
        False: it goes on as any call."""
        s = conn.rbac
        verdict = rbac.decide(s, self.rules, fid, ns)
        if verdict is None:
            route = self.routes.get(ns, fid)
            if route is None:
                verdict = False
            else:
                cached = self.meta_cache.get((ns, fid))
                if cached is None or cached[0] != route:
                    asyncio.ensure_future(self._guard_later(conn, msg, fid, ns, inv_id, kind, route))
                    return True
                verdict = rbac.decide_meta(s, self.rules, fid, ns, cached[1])
        if not verdict:
            self._forbid(conn, inv_id, fid, rbac.denied_message(s, fid))
            return True
        return self._allowed(conn, msg, fid, ns, inv_id, kind)

    async def function_meta(self, fid: str, ns: str, route: Any) -> Any:
        """A function's metadata (None when it has none or is gone), cached per route."""
        try:
            info = await self.engine_call_for(INFO_FN, {"function_id": fid, "namespace": ns}, self.hook_timeout_s)
            meta = info.get("metadata") if isinstance(info, dict) else None
        except EngineError:
            meta = None
        if len(self.meta_cache) >= META_CACHE_MAX:
            self.meta_cache.clear()
        self.meta_cache[(ns, fid)] = (route, meta)
        return meta

    async def _guard_later(self, conn: Conn, msg: dict, fid: str, ns: str, inv_id: Any, kind: Any, route) -> None:
        meta = await self.function_meta(fid, ns, route)
        if self.conns.get(conn.id) is not conn:
            return
        if not rbac.decide_meta(conn.rbac, self.rules, fid, ns, meta):
            self._forbid(conn, inv_id, fid, rbac.denied_message(conn.rbac, fid))
        elif not self._allowed(conn, msg, fid, ns, inv_id, kind):
            self._invoke(conn, msg, True)

    def _allowed(self, conn: Conn, msg: dict, fid: str, ns: str, inv_id: Any, kind: Any) -> bool:
        if fid == REGISTER_FN:
            denied = rbac.namespace_denied(conn.rbac, msg.get("data"))
            if denied:
                self._forbid(conn, inv_id, fid, denied)
                return True
            return False
        if fid in LISTINGS and kind != "enqueue":
            asyncio.ensure_future(self._listing(conn, msg, fid, inv_id, kind))
            return True
        if self.middleware is not None:
            route = self.routes.get(ns, fid)
            if not (fid.startswith("engine::") and (route is None or route[1] is None)):
                self._through_middleware(conn, msg, fid, ns, inv_id, kind)
                return True
        return False

    def _through_middleware(self, conn: Conn, msg: dict, fid: str, ns: str, inv_id: Any, kind: Any) -> None:
        """The call becomes a call of the middleware in its namespace (Appendix C); the
        caller gets its answer under the call's own id."""
        call = {"type": "invokefunction", "function_id": self.middleware, "namespace": ns,
                "data": {"function_id": fid, "payload": msg.get("data"), "action": msg.get("action"),
                         "context": conn.rbac.context, "namespace": ns}}
        for key in ("metadata", "traceparent", "baggage"):
            if msg.get(key) is not None:
                call[key] = msg[key]
        if inv_id and kind != "void":
            call["invocation_id"] = inv_id
        else:
            call["action"] = {"type": "void"}
        self._invoke(conn, call, True)

    # ---- listings through a session -------------------------------------------------------

    async def _listing(self, conn: Conn, msg: dict, fid: str, inv_id: Any, kind: Any) -> None:
        data = msg.get("data")
        if isinstance(data, dict):
            data.pop(wire.CALLER_KEY, None)
        try:
            result = await self.engine_call_for(fid, data, self.hook_timeout_s)
            result = await self._visible(conn, fid, data, result)
            body = wire.result(inv_id, fid, result) if inv_id else b""
        except EngineError as exc:
            body = wire.error(inv_id, fid, exc.code, exc.message) if inv_id else b""
        if body and kind != "void" and self.conns.get(conn.id) is conn:
            self.out.ws(conn.id, body)

    def _may_see(self, conn: Conn, fid: Any, ns: Any, meta: Any) -> bool:
        if not isinstance(fid, str):
            return False
        return rbac.decide_meta(conn.rbac, self.rules, fid, ns if isinstance(ns, str) else "default", meta)

    async def _metas(self) -> dict[tuple[str, str], Any]:
        rows = (await self.engine_call_for("engine::functions::list", {"include_internal": True},
                                           self.hook_timeout_s)).get("functions", [])
        return {(r.get("namespace"), r.get("function_id")): r.get("metadata") for r in rows if isinstance(r, dict)}

    async def _visible(self, conn: Conn, fid: str, data: Any, result: Any) -> Any:
        """``result`` of the listing ``fid`` with what the session may not call taken out."""
        if not isinstance(result, dict):
            return result
        see = self._may_see
        s = conn.rbac
        if fid == "engine::functions::list":
            result["functions"] = [r for r in result.get("functions", [])
                                   if see(conn, r.get("function_id"), r.get("namespace"), r.get("metadata"))]
        elif fid == "engine::functions::info":
            if "functions" in result and "function_id" not in result:
                result["functions"] = [
                    r if "error" in r or see(conn, r.get("function_id"), r.get("namespace"), r.get("metadata"))
                    else {"function_id": r.get("function_id"), "error": "not_found"}
                    for r in result["functions"]]
            elif not see(conn, result.get("function_id"), result.get("namespace"), result.get("metadata")):
                raise EngineError(NOT_FOUND, f"Function '{result.get('function_id')}' is not registered.")
        elif fid == "engine::workers::list":
            counts: dict[Any, int] = {}
            full = await self.engine_call_for("engine::functions::list", {"include_internal": True},
                                              self.hook_timeout_s)
            for r in full.get("functions", []):
                if see(conn, r.get("function_id"), r.get("namespace"), r.get("metadata")):
                    key = (r.get("worker_name"), r.get("namespace"))
                    counts[key] = counts.get(key, 0) + 1
            for w in result.get("workers", []):
                if isinstance(w, dict) and "function_count" in w:
                    w["function_count"] = counts.get((w.get("name"), w.get("namespace")), 0)
        elif fid == "engine::workers::info":
            result["functions"] = [r for r in result.get("functions", [])
                                   if see(conn, r.get("function_id"), r.get("namespace"), r.get("metadata"))]
            visible = {r.get("function_id") for r in result["functions"]}
            result["registered_triggers"] = [b for b in result.get("registered_triggers", [])
                                             if b.get("function_id") in visible]
            if s.trigger_types is not None:
                result["trigger_types"] = [t for t in result.get("trigger_types", []) if t.get("id") in s.trigger_types]
            if isinstance(result.get("worker"), dict) and "function_count" in result["worker"]:
                result["worker"]["function_count"] = len(result["functions"])
        elif fid == "engine::triggers::list":
            if s.trigger_types is not None:
                result["triggers"] = [t for t in result.get("triggers", []) if t.get("id") in s.trigger_types]
        elif fid == "engine::triggers::info":
            if s.trigger_types is not None and result.get("id") not in s.trigger_types:
                ns = (data.get("namespace") if isinstance(data, dict) else None) or "default"
                raise EngineError(NOT_FOUND, f"Trigger type '{result.get('id')}' is not registered in namespace '{ns}'.")
        elif fid == "engine::registered-triggers::list":
            metas = await self._metas()
            result["registered_triggers"] = [
                b for b in result.get("registered_triggers", [])
                if any(see(conn, b.get("function_id"), ns, meta) for (ns, f), meta in metas.items()
                       if f == b.get("function_id"))]
        elif fid == "engine::registered-triggers::info":
            fn = result.get("function")
            if not isinstance(fn, dict) or not see(conn, fn.get("function_id"), fn.get("namespace"), fn.get("metadata")):
                raise EngineError(NOT_FOUND, f"Registered trigger '{result.get('id')}' was not found.")
        return result
