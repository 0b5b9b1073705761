"""The gateway's protocol core: WebSocket messages and bus frames in, effects out.

No sockets and no event loop here: effects go through an ``Outbox`` (``ws`` to write to a
connection, ``send`` to send a bus frame, ``close`` to drop a connection, ``arm_grace`` to start
the namespace timer). The shell in ``service.py`` implements it; tests use a recorder.

The call path (protocol.md §5.2) is the hot path: one JSON parse, a route lookup in the
local table, one JSON encode of the delivered call; results are relayed as the bytes the
callee sent. A call between two connections of this process never leaves it.

Invariants:
- registrations of a connection reach the router in arrival order, and not before its
  namespace is fixed (by ``engine::workers::register`` or the grace timer, §4.4);
- every call delivered to a connection is answered exactly once to a waiting caller: by
  the callee's result, or ``invocation_stopped`` when the callee goes away (§4.6);
- a result is accepted only from the connection the call was delivered to (fixes §12.3);
- a call never overtakes a registration sent before it: while the router has not yet
  acknowledged (ACK) every UP of this process, calls to other processes go through the
  router, which applies the registration and publishes its routes first. Without this,
  a worker that registers a function and then enqueues a job for it could have the
  queue broker look the function up before the new route reached it.
"""
from __future__ import annotations

import logging
import uuid
from typing import Any, Protocol

from brokers.kit import frames, wire
from brokers.kit.frames import ROUTER
from brokers.kit.pending import Pending
from brokers.kit.errors import ENQUEUE_ERROR, FUNCTION_NOT_FOUND, INVALID_NAMESPACE, PAYLOAD_TOO_LARGE
from brokers.kit.routes import RouteTable, not_found_message

log = logging.getLogger(__name__)

ENQUEUE_FN = "engine::queue::enqueue"
REGISTER_FN = "engine::workers::register"
REGISTRATIONS = frozenset({"registerfunction", "unregisterfunction", "registertrigger", "unregistertrigger",
                           "registertriggertype", "unregistertriggertype", "registerservice"})
TELEMETRY_PREFIXES = (b"OTLP", b"MTRC", b"LOGS")
SMALL_PEER_LIMIT = 1024 * 1024


class Outbox(Protocol):
    def ws(self, conn: str, data: bytes) -> None: ...
    def send(self, node: str, header: dict, body: bytes = b"") -> None: ...
    def close(self, conn: str) -> None: ...
    def arm_grace(self, conn: str) -> None: ...


class Conn:
    """One worker connection and what it registered (kept for router resync)."""

    __slots__ = ("id", "token", "ip", "ns", "buffer", "held", "meta", "delivered", "outgoing", "small_only")

    def __init__(self, conn_id: str, token: str, ip: str | None) -> None:
        self.id = conn_id
        self.token = token
        self.ip = ip
        self.ns: str | None = None
        self.buffer: list[tuple[dict, bytes]] = []
        self.held: dict[tuple[str, str], bytes] = {}
        self.meta: bytes | None = None
        self.delivered: dict[str, tuple[str | None, str | None, str]] = {}
        self.outgoing: Pending[str] = Pending()
        """Calls this worker made that wait on another node: inv_id -> (node, function id)."""
        self.small_only = False
        """A Python SDK older than 0.25 closes its socket on messages over 1 MiB (§10.4)."""


class GatewayCore:
    """All connections of one gateway process and its copy of the routes."""

    def __init__(self, node: str, out: Outbox, epoch: str = "") -> None:
        self.node = node
        self.epoch = epoch
        self.out = out
        self.routes = RouteTable()
        self.conns: dict[str, Conn] = {}
        self.up_sent = 0
        """Sequence number of the last UP sent to the router."""
        self.up_acked = 0
        """The highest UP sequence number the router has applied (ACK)."""
        self.synced = False
        """Whether a route table came from the router (the shell listens only then)."""

    # ---- connection lifecycle -----------------------------------------------------------

    def open(self, conn_id: str, ip: str | None = None) -> Conn:
        """A worker connected (the shell picked ``conn_id`` and can already write to it)."""
        conn = Conn(conn_id, str(uuid.uuid4()), ip)
        self.conns[conn.id] = conn
        self.out.send(ROUTER, frames.conn_open(conn.id, conn.token, ip))
        self.out.ws(conn.id, wire.dumps({"type": "workerregistered", "worker_id": conn.id,
                                         "reattach_token": conn.token}))
        self.out.arm_grace(conn.id)
        return conn

    def closed(self, conn_id: str) -> None:
        """The socket is gone: stop its calls, tell the router (§4.6)."""
        conn = self.conns.pop(conn_id, None)
        if conn is None:
            return
        for inv_id, (rnode, rconn, fid) in conn.delivered.items():
            self._answer(rnode, rconn, inv_id, wire.stopped(inv_id, fid))
        self.routes.apply([["-", conn.ns, key, self.node, conn.id]
                           for kind, key in conn.held if kind == "registerfunction"])
        self.out.send(ROUTER, frames.conn_close(conn.id))

    def grace_expired(self, conn_id: str) -> None:
        conn = self.conns.get(conn_id)
        if conn is not None and conn.ns is None:
            self._fix_namespace(conn, "default")

    # ---- messages from a worker ---------------------------------------------------------

    def on_message(self, conn_id: str, raw: str | bytes) -> None:
        conn = self.conns.get(conn_id)
        if conn is None:
            return
        if isinstance(raw, bytes) and raw[:4] in TELEMETRY_PREFIXES:
            return  # telemetry on the worker socket (§9.3): accepted and dropped for now
        if not raw or raw.isspace():
            return  # empty / whitespace-only frames are ignored (§1.3), silently
        try:
            msg, clean = wire.parse(raw)
        except (ValueError, UnicodeDecodeError):
            log.warning("dropping undecodable frame from %s", conn_id)
            return
        if not isinstance(msg, dict):
            return
        kind = msg.get("type")
        try:
            if kind == "invokefunction":
                self._invoke(conn, msg)
            elif kind == "invocationresult":
                self._result(conn, msg, raw if clean else wire.dumps(msg))
            elif kind in REGISTRATIONS:
                self._registration(conn, msg, raw if isinstance(raw, bytes) else raw.encode())
            elif kind in ("triggerregistrationresult", "reattach"):
                self._up(conn, wire.dumps(msg))
            elif kind == "ping":
                self.out.ws(conn.id, b'{"type":"pong"}')
        except (KeyError, TypeError, AttributeError) as exc:
            log.warning("dropping malformed %s frame from %s: %r", kind, conn_id, exc)

    def _invoke(self, conn: Conn, msg: dict) -> None:
        fid = msg["function_id"]
        if not isinstance(fid, str):
            raise TypeError("function_id must be a string")
        inv_id = msg.get("invocation_id")
        action = msg.get("action")
        ns = msg.get("namespace")
        if ns is None:
            ns = "default"
        elif not isinstance(ns, str) or not ns.strip():
            if inv_id:
                self.out.ws(conn.id, wire.error(inv_id, fid, INVALID_NAMESPACE, "namespace must not be blank"))
            return
        kind = action.get("type") if isinstance(action, dict) else None
        if fid == REGISTER_FN and kind != "enqueue":
            self._register_worker(conn, msg.get("data"), inv_id)
            return
        if conn.ns is None and conn.buffer and self._waits_for_buffer(conn, fid):
            conn.buffer.append((msg, b""))
            return
        if kind == "enqueue":
            self._enqueue(conn, msg, fid, ns, inv_id, action)
            return
        route = self.routes.get(ns, fid)
        if route is None:
            if inv_id:
                self.out.ws(conn.id, wire.error(inv_id, fid, FUNCTION_NOT_FOUND, not_found_message(
                    fid, ns, self.routes.namespaces_of(fid))))
            return
        data = msg.get("data")
        if isinstance(data, dict):
            data["_caller_worker_id"] = conn.id
        void = kind == "void" or not inv_id
        if void:
            inv_id = str(uuid.uuid4())
        body = wire.invoke(inv_id, fid, data, msg.get("metadata"), msg.get("traceparent"), msg.get("baggage"))
        self._send_call(conn, None if void else conn.id, route, inv_id, fid, body)

    @staticmethod
    def _waits_for_buffer(conn: Conn, fid: str) -> bool:
        """Whether a call of a connection whose registrations are still buffered (§4.4)
        waits behind them instead of overtaking them. It does once the worker has declared
        itself (the router's answer, a round trip away, releases the buffer), and when it
        names a function of the buffer: Node 0.22 sends its queued calls before
        ``engine::workers::register``, and such a call or job would otherwise fail or burn
        an attempt as ``function_not_found``. Other calls of an undeclared worker go on at
        once, as the spec has it, rather than wait up to the 5 s grace timer."""
        return conn.meta is not None or any(
            m.get("type") == "registerfunction" and m.get("id") == fid for m, _ in conn.buffer)

    def _send_call(self, caller: Conn, reply_conn: str | None, route, inv_id: str, fid: str, body: bytes) -> None:
        node, target = route
        rnode = None
        if reply_conn is not None:
            rnode = self.node
            caller.outgoing.add(inv_id, node, fid)
        if node == self.node:
            callee = self.conns.get(target)
            if callee is None:
                self._answer(rnode, reply_conn, inv_id, wire.stopped(inv_id, fid))
            else:
                self._to_callee(callee, rnode, reply_conn, inv_id, fid, body)
            return
        if self.up_acked < self.up_sent and node != ROUTER:
            # a registration is still on its way: the router passes the call on after it
            self.out.send(ROUTER, frames.inv(inv_id, fid, target, rnode, reply_conn, via=node), body)
        else:
            self.out.send(node, frames.inv(inv_id, fid, target, rnode, reply_conn), body)

    def _enqueue(self, conn: Conn, msg: dict, fid: str, ns: str, inv_id: Any, action: dict) -> None:
        """§5.5: the call goes to the queue broker; the caller gets its receipt."""
        route = self.routes.get("default", ENQUEUE_FN)
        if route is None:
            if inv_id:
                self.out.ws(conn.id, wire.error(inv_id, fid, ENQUEUE_ERROR,
                                                "No queue worker is installed: add iii-queue to the engine config."))
            return
        job: dict[str, Any] = {"queue": action.get("queue"), "function_id": fid, "data": msg.get("data"),
                               "messageReceiptId": str(uuid.uuid4())}
        for key in ("traceparent", "baggage", "metadata"):
            if msg.get(key) is not None:
                job[key] = msg[key]
        if ns != "default":
            job["namespace"] = ns
        reply = conn.id if inv_id else None
        inv_id = inv_id or str(uuid.uuid4())
        self._send_call(conn, reply, route, inv_id, ENQUEUE_FN, wire.invoke(inv_id, ENQUEUE_FN, job))

    def _result(self, conn: Conn, msg: dict, raw: str | bytes) -> None:
        inv_id = msg["invocation_id"]
        entry = conn.delivered.pop(inv_id, None)
        if entry is None:
            return  # unknown, late, or not delivered to this connection: dropped
        rnode, rconn, _ = entry
        if rnode is None:
            return  # void: the engine discards the reply
        self._answer(rnode, rconn, inv_id, raw if isinstance(raw, bytes) else raw.encode())

    def _answer(self, rnode: str | None, rconn: str | None, inv_id: str, body: bytes) -> None:
        if rnode is None:
            return
        if rnode == self.node:
            caller = self.conns.get(rconn) if rconn else None
            if caller is not None and caller.outgoing.pop(inv_id) is not None:
                self.out.ws(rconn, body)
            return
        self.out.send(rnode, frames.res(inv_id, rconn), body)

    # ---- registrations ------------------------------------------------------------------

    def _registration(self, conn: Conn, msg: dict, raw: bytes) -> None:
        if conn.ns is None:
            conn.buffer.append((msg, raw))
            return
        self._forward_registration(conn, msg, raw)

    def _forward_registration(self, conn: Conn, msg: dict, raw: bytes) -> None:
        kind = msg["type"]
        key = msg.get("id")
        if kind in ("registerfunction", "registertrigger", "registertriggertype") and isinstance(key, str):
            conn.held[(kind, key)] = raw
        elif kind in ("unregisterfunction", "unregistertrigger", "unregistertriggertype"):
            conn.held.pop(("register" + kind[len("unregister"):], key), None)
        if kind == "registerfunction" and isinstance(key, str):
            self._claim_locally(conn, key)
        elif kind == "unregisterfunction":
            self.routes.apply([["-", conn.ns, key, self.node, conn.id]])
        self._up(conn, raw)

    def _up(self, conn: Conn | None, raw: bytes = b"") -> None:
        """Send a registration message of ``conn`` to the router, numbered for its ACK
        (no connection and no body: a request for an ACK only)."""
        self.up_sent += 1
        c, ns = (conn.id, conn.ns) if conn is not None else (None, None)
        self.out.send(ROUTER, frames.up(c, ns, self.up_sent), raw)

    def _claim_locally(self, conn: Conn, function_id: str) -> None:
        """Route a new function of ours at once, as the reference engine registers
        synchronously: a worker may call its function right after registering it. Only a
        free id is claimed; the router stays the judge and a rejection withdraws the claim."""
        if function_id.startswith("engine::") and conn.ns != "default":
            return
        if self.routes.get(conn.ns, function_id) is None:
            self.routes.apply([["+", conn.ns, function_id, self.node, conn.id]])

    def _register_worker(self, conn: Conn, data: Any, inv_id: Any) -> None:
        if isinstance(data, dict):
            ns = data.get("namespace")
            if ns is not None and (not isinstance(ns, str) or not ns.strip()):
                if inv_id:
                    self.out.ws(conn.id, wire.error(inv_id, REGISTER_FN, INVALID_NAMESPACE,
                                                    "namespace must not be blank"))
                return
            data["_caller_worker_id"] = conn.id
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

    # ---- frames from the bus ------------------------------------------------------------

    def on_frame(self, sender: str, header: dict, body: bytes) -> None:
        kind = header["k"]
        if kind == frames.INV:
            self._deliver(header, body)
        elif kind == frames.RES:
            rconn = header.get("to")
            caller = self.conns.get(rconn) if rconn else None
            if caller is not None and caller.outgoing.pop(header["id"]) is not None:
                self.out.ws(rconn, body)
        elif kind == frames.ROUTES:
            self.routes.apply(header["ops"])
            self.synced = True
        elif kind == frames.ACK:
            self.up_acked = max(self.up_acked, header["s"])
        elif kind == frames.DOWN:
            conn = self.conns.get(header.get("c"))
            if conn is not None:
                if body.startswith(b'{"type":"registrationrejected"'):
                    self._withdraw_claim(conn, body)
                self.out.ws(conn.id, body)
        elif kind == frames.METAOK:
            self._meta_ok(header)
        elif kind == frames.CLOSE:
            if header.get("c") in self.conns:
                self.out.close(header["c"])
                self.closed(header["c"])
        elif kind == frames.HELLO and sender == ROUTER:
            self.resync()
        elif kind == frames.RESET and header.get("node") != self.node:
            self._reset(header["node"])

    def _withdraw_claim(self, conn: Conn, body: bytes) -> None:
        msg = wire.loads(body)
        if msg.get("function_id"):
            self.routes.apply([["-", msg.get("namespace"), msg["function_id"], self.node, conn.id]])

    def _deliver(self, header: dict, body: bytes) -> None:
        target = header.get("to")
        callee = self.conns.get(target) if target else None
        rnode, rconn, inv_id = header.get("rn"), header.get("rc"), header["id"]
        if callee is None:
            self._answer(rnode, rconn, inv_id, wire.stopped(inv_id, header.get("fn", "")))
            return
        self._to_callee(callee, rnode, rconn, inv_id, header.get("fn", ""), body)

    def _to_callee(self, callee: Conn, rnode: str | None, rconn: str | None, inv_id: str, fid: str,
                   body: bytes) -> None:
        if callee.small_only and len(body) > SMALL_PEER_LIMIT:
            self._answer(rnode, rconn, inv_id, wire.error(
                inv_id, fid, PAYLOAD_TOO_LARGE, "payload over 1 MiB for a worker that did not declare "
                "large-messages.v1"))
            return
        callee.delivered[inv_id] = (rnode, rconn, fid)
        self.out.ws(callee.id, body)

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

    def _reset(self, node: str) -> None:
        """``node`` restarted: calls waiting on it will never be answered (§4.6)."""
        for conn in self.conns.values():
            for inv_id, fid in conn.outgoing.stopped(node):
                self.out.ws(conn.id, wire.stopped(inv_id, fid))
            for inv_id, entry in list(conn.delivered.items()):
                if entry[0] == node:
                    conn.delivered[inv_id] = (None, None, entry[2])

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
