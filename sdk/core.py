"""Sans-I/O connection core of the worker SDK: frames in, frames out (protocol.md §3-§5).

Owns the local registries (functions, triggers, trigger types) replayed on every connection,
the offline queue, the pending calls with their client-side deadlines, and the reconnect
attempt counter. It never touches a socket, an event loop or a clock: ``now`` is passed in
(seconds, any monotonic base), frames leave through ``outbox`` as JSON text, and what the
shell must do comes back as the events of ``sdk.events``.

Invariants:
- On connect the frames go out in the §4.2 order (reattach, trigger types, functions,
  triggers), then the ``engine::workers::register`` call; calls (queued or new) are held
  until that call answers (see ``connection_made`` for why this deviates from §4.2).
- Registrations are never queued while offline (they are replayed); calls and results are,
  at most ``MAX_QUEUE`` of them, the oldest dropped first.
- A pending call completes exactly once: by its result, its deadline, a fatal rejection or
  shutdown. Handlers and waiters are opaque values here; the shell runs/settles them.
"""
from __future__ import annotations

import logging
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

from sdk import errors
from sdk.codec import encode, decode
from sdk.errors import InvocationError, RegistrationRejectedError
from sdk.events import Completion, Fatal, Invoke, ProviderCall
from sdk.options import ReconnectionConfig, backoff_delay_ms
from sdk.types import TriggerConfig

log = logging.getLogger(__name__)

MAX_QUEUE = 1000
WORKERS_REGISTER = "engine::workers::register"
_ENGINE_DEFAULT_PREFIXES = ("engine::", "configuration::")


@dataclass(slots=True)
class Pending:
    function_id: str
    waiter: Any
    deadline: float
    timeout_ms: int


def validate_function_id(function_id: Any) -> None:
    if not isinstance(function_id, str):
        raise TypeError(f"function_id must be str, got {type(function_id).__name__}")
    if not function_id.strip():
        raise ValueError("function id is required")
    if function_id.startswith("iii::"):
        raise ValueError(f"function id {function_id!r}: the iii:: prefix is reserved for the engine")


class Core:
    """One worker's protocol state across any number of connections."""

    def __init__(
        self,
        *,
        metadata: dict[str, Any],
        namespace: str | None = None,
        invocation_timeout_ms: int = 30_000,
        reconnect: ReconnectionConfig | None = None,
    ) -> None:
        self.metadata = metadata
        self.namespace = namespace
        self.invocation_timeout_ms = invocation_timeout_ms
        self.reconnect = reconnect or ReconnectionConfig()
        self.state = "disconnected"  # connected | disconnected | failed | closed
        self.worker_id: str | None = None
        self.reattach_token: str | None = None
        self.engine_features: list[str] = []
        self.epoch = 0  # bumped per connection
        self.attempt = 0
        self.fatal: RegistrationRejectedError | None = None
        self.functions: dict[str, tuple[dict[str, Any], Any]] = {}
        self.trigger_types: dict[str, tuple[dict[str, Any], Any]] = {}
        self.triggers: dict[str, dict[str, Any]] = {}
        self.pending: dict[str, Pending] = {}
        self.queue: deque[str] = deque()
        self.dropped = 0
        self.outbox: list[str] = []
        self.register_id: str | None = None  # the metadata call of this connection
        self.holding = False  # calls wait in ``queue`` until the metadata call answered

    # -- output --------------------------------------------------------------------------
    def take_outbox(self) -> list[str]:
        out, self.outbox = self.outbox, []
        return out

    def _emit(self, text: str, *, queue_if_offline: bool, call: bool = False) -> None:
        if self.state == "connected" and not (call and self.holding):
            self.outbox.append(text)
        elif queue_if_offline and self.state in ("disconnected", "connected"):
            if len(self.queue) >= MAX_QUEUE:
                self.queue.popleft()
                self.dropped += 1
                log.warning("offline queue full (%d): dropped the oldest message", MAX_QUEUE)
            self.queue.append(text)

    def requeue(self, frames: list[str]) -> None:
        """Frames the transport could not write: keep the calls, drop the rest (replayed)."""
        for text in frames:
            if '"type":"invokefunction"' in text and WORKERS_REGISTER not in text:
                self._emit(text, queue_if_offline=True, call=True)

    # -- connection lifecycle ------------------------------------------------------------
    def connection_made(self) -> None:
        """The socket is open: queue the §4.2 frames in their exact order."""
        self.state = "connected"
        self.epoch += 1
        out = self.outbox
        if self.worker_id:
            reattach: dict[str, Any] = {"type": "reattach", "previous_worker_id": self.worker_id}
            if self.reattach_token:
                reattach["reattach_token"] = self.reattach_token
            out.append(encode(reattach))
        out.extend(encode(msg) for msg, _ in self.trigger_types.values())
        out.extend(encode(msg) for msg, _ in self.functions.values())
        out.extend(encode(msg) for msg in self.triggers.values())
        # §4.2 puts the metadata call (void) after the queued messages. But the engine buffers
        # this connection's registrations until the metadata fixes its namespace, and calls are
        # never buffered: a call queued before the first connect (register_worker returns at
        # once here) to one of our own functions overtakes its registration and fails with
        # function_not_found. The official SDK mostly escapes this because its register_worker
        # blocks until connected. So we send the metadata call WITH an invocation id and hold
        # every call (queued or new) until its result: the engine answers only after it fixed
        # the namespace and applied the buffered registrations (§4.3 steps 5 and 7).
        self.register_id = str(uuid.uuid4())
        self.holding = True
        out.append(encode({
            "function_id": WORKERS_REGISTER, "data": self.metadata,
            "invocation_id": self.register_id, "type": "invokefunction",
        }))
        self.attempt = 0  # reset only after a successful setup (as both SDKs do)

    def connection_lost(self) -> None:
        if self.state == "connected":
            self.state = "disconnected"
        self.holding = False
        self.register_id = None

    def release(self) -> None:
        """Stop holding calls: the metadata call answered (or the shell gave up waiting)."""
        if self.holding and self.state == "connected":
            self.holding = False
            self.outbox.extend(self.queue)
            self.queue.clear()

    def next_reconnect_delay(self, rand: float) -> float | None:
        """Seconds to wait before the next attempt, or None when retries are exhausted."""
        if self.state in ("closed", "failed"):
            return None
        cfg = self.reconnect
        if cfg.max_retries != -1 and self.attempt >= cfg.max_retries:
            self.state = "failed"
            return None
        delay = backoff_delay_ms(cfg, self.attempt, rand)
        self.attempt += 1
        return delay / 1000.0

    def shutdown(self) -> list[Completion]:
        self.state = "closed"
        self.queue.clear()
        return self._fail_all(lambda p: InvocationError(
            errors.SHUTDOWN, "iii worker is shutting down", function_id=p.function_id))

    def _fail_all(self, make: Any) -> list[Completion]:
        done = [Completion(p.waiter, error=make(p)) for p in self.pending.values()]
        self.pending.clear()
        return done

    # -- registrations (store always, send only when connected: replay covers the rest) ----
    def register_function(self, function_id: str, handler: Any, message: dict[str, Any]) -> None:
        validate_function_id(function_id)
        if function_id in self.functions:
            raise ValueError(f"function id {function_id!r} already registered")
        text = encode(message)
        self.functions[function_id] = (message, handler)
        self._emit(text, queue_if_offline=False)

    def unregister_function(self, function_id: str, handler: Any) -> None:
        entry = self.functions.get(function_id)
        if entry is not None and entry[1] is handler:
            del self.functions[function_id]
        self._emit(encode({"id": function_id, "type": "unregisterfunction"}), queue_if_offline=False)

    def register_trigger(self, message: dict[str, Any]) -> None:
        text = encode(message)
        self.triggers[message["id"]] = message
        self._emit(text, queue_if_offline=False)

    def unregister_trigger(self, trigger_id: str) -> None:
        msg = self.triggers.pop(trigger_id, None)
        if msg is None:
            return
        self._emit(encode({"id": trigger_id, "type": "unregistertrigger",
                           "trigger_type": msg["trigger_type"]}), queue_if_offline=False)

    def register_trigger_type(self, message: dict[str, Any], handler: Any) -> None:
        text = encode(message)
        self.trigger_types[message["id"]] = (message, handler)
        self._emit(text, queue_if_offline=False)

    def unregister_trigger_type(self, type_id: str, namespace: str | None = None) -> None:
        self.trigger_types.pop(type_id, None)
        msg: dict[str, Any] = {"id": type_id, "type": "unregistertriggertype"}
        if namespace is not None:
            msg["namespace"] = namespace
        self._emit(encode(msg), queue_if_offline=False)

    # -- outgoing calls --------------------------------------------------------------------
    def call_namespace(self, explicit: str | None, function_id: str) -> str | None:
        if explicit is not None:
            if not explicit.strip():
                raise ValueError(f"namespace is empty: {explicit!r}")
            return explicit
        if function_id.startswith(_ENGINE_DEFAULT_PREFIXES):
            return "default"
        return self.namespace

    def call(
        self,
        function_id: str,
        payload: Any,
        *,
        waiter: Any,
        now: float,
        action: dict[str, Any] | None = None,
        metadata: Any = None,
        namespace: str | None = None,
        timeout_ms: int | None = None,
        traceparent: str | None = None,
        baggage: str | None = None,
    ) -> str | None:
        """Send (or queue) one ``invokefunction``; returns the invocation id, None for void.

        Raises before anything is recorded if the call cannot be encoded or the worker was
        rejected; the caller settles its own waiter then.
        """
        if self.fatal is not None:
            raise self.fatal
        if self.state == "closed":
            raise InvocationError(errors.SHUTDOWN, "iii worker is shut down", function_id=function_id)
        ns = self.call_namespace(namespace, function_id)
        msg: dict[str, Any] = {"function_id": function_id}
        if payload is not None:
            msg["data"] = payload
        if metadata is not None:
            msg["metadata"] = metadata
        void = action is not None and action.get("type") == "void"
        invocation_id = None if void else str(uuid.uuid4())
        if invocation_id is not None:
            msg["invocation_id"] = invocation_id
        if action is not None:
            msg["action"] = action
        if ns is not None:
            msg["namespace"] = ns
        if traceparent is not None:
            msg["traceparent"] = traceparent
        if baggage is not None:
            msg["baggage"] = baggage
        msg["type"] = "invokefunction"
        text = encode(msg, invocation_id=invocation_id, function_id=function_id)
        if invocation_id is not None:
            timeout = timeout_ms or self.invocation_timeout_ms
            self.pending[invocation_id] = Pending(function_id, waiter, now + timeout / 1000.0, timeout)
        self._emit(text, queue_if_offline=True, call=True)
        return invocation_id

    def cancel(self, invocation_id: str) -> None:
        self.pending.pop(invocation_id, None)

    def expire(self, now: float) -> list[Completion]:
        late = [iid for iid, p in self.pending.items() if p.deadline <= now]
        out = []
        for iid in late:
            p = self.pending.pop(iid)
            out.append(Completion(p.waiter, error=InvocationError(
                errors.TIMEOUT, f"invocation timed out after {p.timeout_ms}ms",
                function_id=p.function_id, invocation_id=iid)))
        return out

    def next_deadline(self) -> float | None:
        return min((p.deadline for p in self.pending.values()), default=None)

    # -- answers we send -----------------------------------------------------------------
    def result(self, invocation_id: str, function_id: str, *, result: Any = None,
               error: dict[str, Any] | None = None) -> None:
        """Answer an incoming call; an unencodable result becomes an error, never silence."""
        msg: dict[str, Any] = {"invocation_id": invocation_id, "function_id": function_id}
        if error is not None:
            msg["error"] = error
        else:
            msg["result"] = result
        msg["type"] = "invocationresult"
        try:
            text = encode(msg)
        except InvocationError as exc:
            text = encode({"invocation_id": invocation_id, "function_id": function_id,
                           "error": {"code": exc.code, "message": exc.message},
                           "type": "invocationresult"})
        self._emit(text, queue_if_offline=True)

    def trigger_registration_result(self, trigger: TriggerConfig, error: dict[str, Any] | None) -> None:
        msg: dict[str, Any] = {"type": "triggerregistrationresult", "id": trigger.id,
                               "trigger_type": trigger.trigger_type, "function_id": trigger.function_id}
        if error is not None:
            msg["error"] = error
        self._emit(encode(msg), queue_if_offline=True)

    # -- incoming frames -----------------------------------------------------------------
    def receive(self, raw: str | bytes) -> list[Any]:
        """Decode one engine frame; returns the events for the shell. Bad frames are dropped."""
        try:
            msg = decode(raw)
        except ValueError:
            log.warning("dropping an undecodable frame (%d bytes)", len(raw))
            return []
        if not isinstance(msg, dict):
            return []
        kind = msg.get("type")
        if kind == "invocationresult":
            iid = msg.get("invocation_id")
            if iid is not None and iid == self.register_id:
                if msg.get("error"):
                    log.warning("engine::workers::register failed: %s", msg.get("error"))
                self.register_id = None
                self.release()
                return []
            p = self.pending.pop(iid, None) if isinstance(iid, str) else None
            if p is None:
                return []  # unknown, late or timed out: dropped
            error = msg.get("error")
            if error:
                return [Completion(p.waiter, error=errors.from_wire(
                    error, function_id=p.function_id, invocation_id=iid))]
            return [Completion(p.waiter, result=msg.get("result"))]
        if kind == "invokefunction":
            return self._incoming_call(msg)
        if kind == "workerregistered":
            self.worker_id = msg.get("worker_id") or self.worker_id
            self.reattach_token = msg.get("reattach_token")
            features = msg.get("features")
            self.engine_features = list(features) if isinstance(features, list) else []
            return []
        if kind in ("registertrigger", "unregistertrigger"):
            return self._provider_call(kind, msg)
        if kind == "triggerregistrationresult":
            if msg.get("error"):
                log.error("trigger registration failed for %r (%s): %s", msg.get("id"),
                          msg.get("trigger_type"), msg.get("error"))
            return []
        if kind == "registrationrejected":
            return self._rejected(msg)
        return []

    def _incoming_call(self, msg: dict[str, Any]) -> list[Any]:
        iid = msg.get("invocation_id") or None
        fid = msg.get("function_id", "")
        entry = self.functions.get(fid)
        if entry is None or entry[1] is None:
            if entry is None:
                code, text = errors.FUNCTION_NOT_FOUND, f"Function '{fid}' not found"
            else:
                code, text = errors.FUNCTION_NOT_INVOKABLE, "Function is HTTP-invoked and cannot be invoked locally"
            log.warning("%s", text)
            if iid:
                self.result(iid, fid, error={"code": code, "message": text})
            return []
        return [Invoke(iid, fid, entry[1], msg.get("data"), msg.get("metadata"),
                       msg.get("traceparent"), msg.get("baggage"))]

    def _provider_call(self, kind: str, msg: dict[str, Any]) -> list[Any]:
        type_id = msg.get("trigger_type")
        entry = self.trigger_types.get(type_id) if type_id else None
        if entry is None:
            return []  # as Python 0.25: bindings for types we do not provide are ignored
        trigger = TriggerConfig(id=msg.get("id", ""), function_id=msg.get("function_id", ""),
                                config=msg.get("config"), metadata=msg.get("metadata"),
                                namespace=msg.get("namespace"), trigger_type=type_id)
        return [ProviderCall("register" if kind == "registertrigger" else "unregister", entry[1], trigger)]

    def _rejected(self, msg: dict[str, Any]) -> list[Any]:
        code = msg.get("code", "")
        if code == "FUNCTION_NAMESPACE_CONFLICT":
            log.warning("function %r rejected in namespace %r: owned by worker %r",
                        msg.get("function_id"), msg.get("namespace"), msg.get("owner_worker_id"))
            return []
        error = RegistrationRejectedError(code, msg.get("namespace", ""), msg.get("worker_name", ""),
                                          msg.get("owner_worker_id", ""))
        log.error("worker registration rejected (%s); not reconnecting", code)
        self.fatal = error
        self.state = "failed"
        self.queue.clear()
        return [*self._fail_all(lambda _p: error), Fatal(error)]
