"""The gateway's registrations: namespace buffering, the order fence, and router resync.

Invariants:
- registrations of a connection reach the router in arrival order, and not before its
  namespace is fixed (by ``engine::workers::register`` or the grace timer, §4.4);
- a call never overtakes a registration sent before it: each UP is numbered and the
  router ACKs it once its route changes are out; until then calls to other processes go
  through the router (calls.py). Without this, a worker that registers a function and
  then enqueues a job for it could have the queue broker look the function up before
  the new route reached it;
- a local claim (a worker's new function routed at once, ``_claim_locally``) outlives a
  full route snapshot that the router took before it applied the claim's UP (``reclaim``);
- what a connection registered is held (``Conn.held``) so that a restarted router gets
  it all again (``resync``), types before functions before triggers.
"""
from __future__ import annotations

from typing import Any

from brokers.gateway.conns import REGISTER_FN, Conn, GatewayState
from brokers.kit import frames, reserved, wire
from brokers.kit.errors import INVALID_NAMESPACE
from brokers.kit.frames import ROUTER


class Registrations(GatewayState):
    """Registration messages of this gateway's connections, and their replay."""

    def _registration(self, conn: Conn, msg: dict, raw: bytes) -> None:
        if conn.ns is None:
            conn.buffer.append((msg, raw))
            return
        self._forward_registration(conn, msg, raw)

    def _forward_registration(self, conn: Conn, msg: dict, raw: bytes, checked: bool = False) -> None:
        if conn.rbac is not None and not checked:
            self._guard_registration(conn, msg, raw)  # RBAC: allowances, hooks, prefix (hooks.py)
            return
        kind = msg["type"]
        key = msg.get("id")
        if kind in ("registerfunction", "registertrigger", "registertriggertype") and isinstance(key, str):
            conn.held[(kind, key)] = raw
        elif kind in ("unregisterfunction", "unregistertrigger", "unregistertriggertype"):
            conn.held.pop(("register" + kind[len("unregister"):], key), None)
        if kind == "registerfunction" and isinstance(key, str):
            self._claim_locally(conn, key, msg.get("invocation"))
        elif kind == "unregisterfunction":
            self.routes.apply([["-", conn.ns, key, self.node, conn.id]])
        self._up(conn, raw)

    def _up(self, conn: Conn | None, raw: bytes = b"") -> None:
        """Send a registration message of ``conn`` to the router, numbered for its ACK
        (no connection and no body: a request for an ACK only)."""
        self.up_sent += 1
        c, ns = (conn.id, conn.ns) if conn is not None else (None, None)
        self.out.send(ROUTER, frames.up(c, ns, self.up_sent), raw)

    def _claim_locally(self, conn: Conn, function_id: str, invocation: Any = None) -> None:
        """Route a new function of ours at once, as the reference engine registers
        synchronously: a worker may call its function right after registering it. Only a
        free id is claimed; the router stays the judge and a rejection withdraws the claim.
        An HTTP-invoked function (``invocation``) is served by the HTTP functions process,
        as the router routes it: claimed there, or not at all when the engine has none."""
        if reserved.function(function_id):
            return  # the router refuses it: never route it here, even for a moment
        if self.routes.get(conn.ns, function_id) is not None:
            return
        if invocation is None:
            node = self.node
        elif self.http_functions_node is not None:
            node = self.http_functions_node
        else:
            return
        self.routes.apply([["+", conn.ns, function_id, node, conn.id]])
        key = (conn.ns, function_id)
        self.claims.pop(key, None)  # insertion order stays UP order (acked_claims)
        self.claims[key] = (self.up_sent + 1, (node, conn.id))  # its UP is next

    def acked_claims(self) -> None:
        """Forget the claims whose UP the router acknowledged: they are the oldest ones."""
        claims = self.claims
        while claims:
            key = next(iter(claims))
            if claims[key][0] > self.up_acked:
                return
            del claims[key]

    def reclaim(self) -> None:
        """A full route snapshot ("=") replaced the table: the claims whose UP the router
        had not applied when it took the snapshot are not in it, and a call of the worker
        right after its registration would find nothing until the router's own route
        arrives. Apply them again, still only where the id is free and the registration
        still held."""
        for (ns, fid), (_, route) in self.claims.items():
            conn = self.conns.get(route[1])
            if conn is not None and ("registerfunction", fid) in conn.held and self.routes.get(ns, fid) is None:
                self.routes.apply([["+", ns, fid, *route]])

    def _register_worker(self, conn: Conn, data: Any, inv_id: Any) -> None:
        if isinstance(data, dict):
            ns = data.get("namespace")
            if ns is not None and (not isinstance(ns, str) or not ns.strip()):
                if inv_id:
                    self.out.ws(conn.id, wire.error(inv_id, REGISTER_FN, INVALID_NAMESPACE,
                                                    "namespace must not be blank"))
                return
            data[wire.CALLER_KEY] = conn.id
            features = data.get("features")
            conn.small_only = data.get("runtime") == "python" and not (
                isinstance(features, list) and "large-messages.v1" in features)
        conn.meta = wire.dumps(data)
        self.out.send(ROUTER, frames.meta(conn.id, inv_id, conn.ns), conn.meta)

    def _fix_namespace(self, conn: Conn, ns: str) -> None:
        conn.ns = ns
        buffered, conn.buffer = conn.buffer, []
        for msg, raw in buffered:
            if msg["type"] == "invokefunction":
                self._invoke(conn, msg)
            else:
                self._forward_registration(conn, msg, raw)

    def _withdraw_claim(self, conn: Conn, body: bytes) -> None:
        msg = wire.loads(body)
        if msg.get("function_id"):
            self.routes.apply([["-", msg.get("namespace"), msg["function_id"], self.node, conn.id]])

    def _meta_ok(self, header: dict) -> None:
        conn = self.conns.get(header.get("c"))
        if conn is None:
            return
        inv_id = header.get("id")
        if not header.get("ok"):
            if inv_id:
                self.out.ws(conn.id, wire.result(inv_id, REGISTER_FN, {"success": False}))
            self.out.close(conn.id)
            self.closed(conn.id)
            return
        if conn.ns is None:
            self._fix_namespace(conn, header.get("ns") or "default")
        if inv_id:
            self.out.ws(conn.id, wire.result(inv_id, REGISTER_FN, {"success": True}))

    def resync(self) -> None:
        """The router restarted: say who we are, then replay every connection and its
        registrations (the HELLO lets it tell our next restart from this life)."""
        self.out.send(ROUTER, frames.hello(self.epoch))
        for conn in self.conns.values():
            self.out.send(ROUTER, frames.conn_open(conn.id, conn.token, conn.ip))
            if conn.meta is not None:
                self.out.send(ROUTER, frames.meta(conn.id, None, conn.ns), conn.meta)
            for (kind, _), raw in sorted(conn.held.items(), key=lambda kv: _REPLAY_ORDER[kv[0][0]]):
                self._up(conn, raw)
        # An UP the dead router never applied would keep the ACK fence up until our next
        # registration; an empty UP is acknowledged and clears it (frames.ACK).
        self._up(None)


_REPLAY_ORDER = {"registertriggertype": 0, "registerfunction": 1, "registertrigger": 2}
