"""The gateway's call relay: a worker's call to its callee, and the answer back (protocol §5).

The hot path: one JSON parse (done by the core), a route lookup in the local table, one
JSON encode of the delivered call; results are relayed as the bytes the callee sent. A
call between two connections of this process never leaves it.

Invariants:
- every call delivered to a connection is answered exactly once to a waiting caller: by
  the callee's result, or ``invocation_stopped`` when the callee or its process goes away
  (§4.6);
- a result is accepted only from the connection the call was delivered to (fixes §12.3);
- an in-flight call is known by (caller, the caller's id): the id a callee sees is unique
  among the calls in flight on it. It is the caller's own id (no re-encoding) unless
  another call with that id is in flight there; then the callee gets a fresh id and its
  answer is re-encoded with the caller's before it is relayed (issue 11, item 5);
- memory for a worker that does not read stays bounded: a call to a connection with more
  than ``send_budget`` bytes waiting to be sent to it (``Conn.queued``, see conns.py) is
  not written; a waiting caller gets ``callee_overloaded``, a void call is dropped and
  counted (one log line when that starts; the shell logs the counts when it drains);
- a call to another host's worker (a route of the cluster node whose owner's gateway is in
  ``remote_peers``) goes to that gateway over TCP, with this gateway's name there as the
  reply node; its answer comes back the same way, RESET of that name stops it;
- while the router has not acknowledged every UP of this process (``up_acked <
  up_sent``), a call to another process goes through the router (INV with ``via``), so
  it cannot overtake a registration sent before it (the fence of registrations.py).
"""
from __future__ import annotations

import logging
import uuid
from typing import Any, Callable

from brokers.gateway.conns import ENQUEUE_FN, REGISTER_FN, SMALL_PEER_LIMIT, Conn, GatewayState
from brokers.kit import frames, wire
from brokers.kit.errors import (CALLEE_OVERLOADED, ENQUEUE_ERROR, FUNCTION_NOT_FOUND, INVALID_NAMESPACE,
                                INVOCATION_STOPPED, PAYLOAD_TOO_LARGE, SERIALIZATION_ERROR, UNKNOWN,
                                EngineError, NotServedHere)
from brokers.kit.frames import CLUSTER, ROUTER
from brokers.kit.routes import not_found_message

log = logging.getLogger(__name__)


class CallRelay(GatewayState):
    """Calls out of and into this gateway's connections."""

    def _invoke(self, conn: Conn, msg: dict, checked: bool = False) -> None:
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
        if conn.rbac is not None and not checked and self._guard(conn, msg, fid, ns, inv_id, kind):
            return  # RBAC (guard.py): denied, deferred, a listing, or through the middleware
        if fid == REGISTER_FN and kind != "enqueue":
            self._register_worker(conn, msg.get("data"), inv_id)
            return
        if conn.ns is None and conn.buffer and self._waits_for_buffer(conn, fid):
            conn.buffer.append((msg, b""))
            return
        if kind == "enqueue":
            self._enqueue(conn, msg, fid, ns, inv_id, action)
            return
        local = self.local_functions.get(fid)
        if local is not None:
            result = local(msg.get("data"))
            if inv_id and kind != "void":
                self.out.ws(conn.id, wire.result(inv_id, fid, result))
            return
        route = self.routes.get(ns, fid)
        if route is None:
            if inv_id:
                self.out.ws(conn.id, wire.error(inv_id, fid, FUNCTION_NOT_FOUND, not_found_message(
                    fid, ns, self.routes.namespaces_of(fid))))
            return
        here = self.in_place.get(fid)
        if here is not None and route[0] == here[0] and self._serve_here(conn, msg, fid, inv_id, kind, here):
            return
        data = msg.get("data")
        if isinstance(data, dict):
            data[wire.CALLER_KEY] = conn.id
        void = kind == "void" or not inv_id
        if void:
            inv_id = str(uuid.uuid4())
        rec, traceparent, baggage = self.telemetry.begin(fid, msg.get("traceparent"), msg.get("baggage"))
        try:
            body = wire.invoke(inv_id, fid, data, msg.get("metadata"), traceparent, baggage)
        except TypeError as exc:  # nested deeper than can be encoded again (wire docstring)
            self._unrelayable(conn, None if void else inv_id, fid, exc)
            return
        if rec is None:
            self._send_call(conn, None if void else conn.id, route, inv_id, fid, body)
            return
        rec[10:] = route[1] or route[0], conn.id, inv_id, "void" if void else "sync"
        if void:
            self._send_call(conn, None, route, inv_id, fid, body)
            self.telemetry.finish(rec, void=True)
        else:
            conn.spans[inv_id] = rec  # before the send: a callee that is gone answers at once
            self._send_call(conn, conn.id, route, inv_id, fid, body)

    def _serve_here(self, conn: Conn, msg: dict, fid: str, inv_id: Any, kind: Any,
                    here: tuple[str, Callable[..., None]]) -> bool:
        """A call of ``in_place`` served here as its owner would serve it, with the
        engine's span of the call; False when the handler declines (the call goes on)."""
        node, handler = here
        rec, traceparent, baggage = self.telemetry.begin(fid, msg.get("traceparent"), msg.get("baggage"))
        void = kind == "void" or not inv_id
        conn_id = conn.id

        def done(result: Any, exc: EngineError | None) -> None:
            if not void:
                if exc is None:
                    body = wire.result(inv_id, fid, result)
                else:
                    body = wire.error(inv_id, fid, exc.code, exc.message)
                self.out.ws(conn_id, body)  # a connection gone meanwhile is skipped by the shell
            if rec is not None:
                rec[10:] = node, conn_id, inv_id, "void" if void else "sync"
                self.telemetry.finish(rec, exc is not None, void=void,
                                      description=None if exc is None else exc.code)

        try:
            handler(msg.get("data"), (traceparent, baggage), done)
        except NotServedHere:
            return False
        except EngineError as exc:
            done(None, exc)
        return True

    def _unrelayable(self, conn: Conn, inv_id: str | None, fid: str, exc: Exception) -> None:
        """A payload the engine parsed but cannot encode again: the caller is told, never
        left waiting (a void call is dropped)."""
        if inv_id:
            self.out.ws(conn.id, wire.error(inv_id, fid, SERIALIZATION_ERROR,
                                            f"the payload cannot be relayed: {exc}"))

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
        if node == CLUSTER and self.remote_peers:  # another host's worker: called there directly
            peer, _, conn = target.rpartition("/")
            if peer in self.remote_peers:
                if reply_conn is not None:
                    caller.outgoing.add(inv_id, peer, fid)
                self.out.send(peer, frames.inv(inv_id, fid, conn, None if reply_conn is None else self.remote_as,
                                               reply_conn, ra=self.remote_addr), body)
                return
        rnode = None
        if reply_conn is not None:
            rnode = self.node
            caller.outgoing.add(inv_id, node, fid)
        if node == self.node:
            callee = self.conns.get(target)
            if callee is None:
                self._answer(rnode, reply_conn, inv_id, wire.stopped(inv_id, fid), INVOCATION_STOPPED)
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
        call_id = inv_id or str(uuid.uuid4())
        try:
            body = wire.invoke(call_id, ENQUEUE_FN, job)
        except TypeError as exc:
            self._unrelayable(conn, inv_id, fid, exc)
            return
        self._send_call(conn, reply, route, call_id, ENQUEUE_FN, body)

    def _result(self, conn: Conn, msg: dict, raw: str | bytes) -> None:
        inv_id = msg["invocation_id"]
        entry = conn.delivered.pop(inv_id, None)
        if entry is None:
            return  # unknown, late, or not delivered to this connection: dropped
        rnode, rconn, _, caller_id = entry
        if rnode is None:
            return  # void: the engine discards the reply
        err = msg.get("error")
        code = None if err is None else str(err.get("code", UNKNOWN) if isinstance(err, dict) else UNKNOWN)
        if caller_id is None:
            self._answer(rnode, rconn, inv_id, raw if isinstance(raw, bytes) else raw.encode(), code)
        else:  # the callee knew this call by a fresh id: the caller gets its own back
            msg["invocation_id"] = caller_id
            self._answer(rnode, rconn, caller_id, wire.dumps(msg), code)

    def _answer(self, rnode: str | None, rconn: str | None, inv_id: str, body: bytes,
                error: str | None = None) -> None:
        """Relay a result to its caller; ``error``: its code when it is a failure."""
        if rnode is None:
            return
        if rnode == self.node:
            self._relayed(rconn, inv_id, body, error)
            return
        self.out.send(rnode, frames.res(inv_id, rconn, error), body)

    def _relayed(self, rconn: str | None, inv_id: str, body: bytes, error: str | None) -> None:
        """A result for a caller of this process: written to it if it still waits, and
        the engine's span of the call closed."""
        caller = self.conns.get(rconn) if rconn else None
        if caller is not None and caller.outgoing.pop(inv_id) is not None:
            if caller.spans:
                rec = caller.spans.pop(inv_id, None)
                if rec is not None:
                    self.telemetry.finish(rec, error is not None, description=error)
            self.out.ws(rconn, body)
        elif rconn is None and self.engine_calls:
            self._engine_result(inv_id, body, error)  # a call of the gateway's own (guard.py)

    def _deliver(self, header: dict, body: bytes) -> None:
        target = header.get("to")
        callee = self.conns.get(target) if target else None
        rnode, rconn, inv_id = header.get("rn"), header.get("rc"), header["id"]
        if callee is None:
            self._answer(rnode, rconn, inv_id, wire.stopped(inv_id, header.get("fn", "")), INVOCATION_STOPPED)
            return
        self._to_callee(callee, rnode, rconn, inv_id, header.get("fn", ""), body)

    def _to_callee(self, callee: Conn, rnode: str | None, rconn: str | None, inv_id: str, fid: str,
                   body: bytes) -> None:
        if callee.small_only and len(body) > SMALL_PEER_LIMIT:
            self._answer(rnode, rconn, inv_id, wire.error(
                inv_id, fid, PAYLOAD_TOO_LARGE, "payload over 1 MiB for a worker that did not declare "
                "large-messages.v1"), PAYLOAD_TOO_LARGE)
            return
        if callee.queued > self.send_budget:
            self._refuse(callee, rnode, rconn, inv_id, fid)
            return
        if rnode is not None:  # a void call leaves no entry: nobody waits for its answer
            entry = (rnode, rconn, fid, None)
            if callee.delivered.setdefault(inv_id, entry) is not entry:
                # Another caller's call with this id is in flight on this callee (ids are
                # the callers' choice): give this one a fresh id, so neither answer is lost.
                alias = str(uuid.uuid4())
                callee.delivered[alias] = (rnode, rconn, fid, inv_id)
                msg = wire.loads(body)
                msg["invocation_id"] = alias
                body = wire.dumps(msg)
        if callee.rbac is not None and callee.rbac.aliases:
            own = callee.rbac.aliases.get(fid)
            if own is not None:  # registered under its session's prefix: called by its own name
                msg = wire.loads(body)
                msg["function_id"] = own
                body = wire.dumps(msg)
        callee.queued += len(body)
        self.out.ws(callee.id, body)

    def _refuse(self, callee: Conn, rnode: str | None, rconn: str | None, inv_id: str, fid: str) -> None:
        """``callee`` is over its send budget: the call is not written to it."""
        if not (callee.refused or callee.dropped):
            log.warning("worker %s is not keeping up: %d bytes wait to be sent to it (budget %d); calls to "
                        "it are refused (%s) and void calls dropped until it drains",
                        callee.id, callee.queued, self.send_budget, CALLEE_OVERLOADED)
        if rnode is None:
            callee.dropped += 1
            return
        callee.refused += 1
        self._answer(rnode, rconn, inv_id, wire.error(
            inv_id, fid, CALLEE_OVERLOADED, f"worker {callee.id} is not keeping up: {callee.queued} bytes "
            f"wait to be sent to it (budget {self.send_budget}); the call was not delivered"), CALLEE_OVERLOADED)

    def _stop_delivered(self, conn: Conn) -> None:
        """``conn`` is gone: every caller waiting on a call delivered to it is stopped (§4.6)."""
        for inv_id, (rnode, rconn, fid, caller_id) in conn.delivered.items():
            own = caller_id or inv_id
            self._answer(rnode, rconn, own, wire.stopped(own, fid), INVOCATION_STOPPED)

    def _reset(self, node: str) -> None:
        """``node`` restarted: calls waiting on it will never be answered (§4.6)."""
        for conn in self.conns.values():
            for inv_id, fid in conn.outgoing.stopped(node):
                rec = conn.spans.pop(inv_id, None) if conn.spans else None
                if rec is not None:
                    self.telemetry.finish(rec, True, description=INVOCATION_STOPPED)
                self.out.ws(conn.id, wire.stopped(inv_id, fid))
            for inv_id, entry in list(conn.delivered.items()):
                if entry[0] == node:  # kept, as void: the id stays taken while the callee works on it
                    conn.delivered[inv_id] = (None, None, entry[2], None)
