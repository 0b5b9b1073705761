"""Base of a bus process that provides functions and trigger types (state, queue, ...).

A broker looks to the rest of the engine like a worker without a WebSocket: it registers
its functions and trigger types with the router by sending the same worker-protocol JSON
(``registerfunction``, ``registertriggertype``) in UP frames, receives ``invokefunction``
bodies in INV frames and answers with ``invocationresult`` bodies in RES frames, and gets
``registertrigger`` / ``unregistertrigger`` for its trigger types in DOWN frames. It can
call any function itself (trigger fan-out, queue delivery) through its route table copy.

Subclasses declare with ``function()`` / ``trigger_type()`` in ``setup()``. A handler is
``handler(call: Call)``, plain or async: ``call`` carries the data, metadata, trace
context and caller of that one invocation (as arq passes ``ctx`` to every job), so a
broker calling on its caller's behalf passes ``call.trace`` on (protocol §9.1). Handlers
raise ``EngineError`` for a coded failure. Invariants: every INV with a reply node gets
exactly one RES; a call of ours still waiting when its target's process restarts fails
with ``invocation_stopped``.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from brokers.kit import errors, frames, wire
from brokers.kit.errors import EngineError
from brokers.kit.frames import ROUTER
from brokers.kit.inputs import Input
from brokers.kit.pending import Pending
from brokers.kit.process import BusFactory, Process, run  # noqa: F401  (run: entry points)
from brokers.kit.routes import RouteTable, not_found_message
from brokers.kit.units import RunContext

log = logging.getLogger(__name__)

ROUTES_WAIT_S = 5.0

Trace = tuple[str | None, str | None]
"""``(traceparent, baggage)`` of a call (protocol §9.1)."""
NO_TRACE: Trace = (None, None)


@dataclass(slots=True)
class Call:
    """One invocation of a broker's function, as its handler receives it."""

    function_id: str
    data: Any
    metadata: Any = None
    traceparent: str | None = None
    baggage: str | None = None

    @property
    def trace(self) -> Trace:
        """``(traceparent, baggage)``, to pass on to calls made on this caller's behalf."""
        return self.traceparent, self.baggage

    @property
    def caller(self) -> str | None:
        """The calling worker's id, as the gateway stamped it into the data (protocol §5.2)."""
        data = self.data
        value = data.get(wire.CALLER_KEY) if isinstance(data, dict) else None
        return value if isinstance(value, str) else None


Handler = Callable[[Call], Any]


@dataclass
class FunctionSpec:
    """A function this process implements; ``message`` is its ``registerfunction``."""

    handler: Handler
    message: dict[str, Any]
    is_async: bool = False


@dataclass
class TriggerTypeSpec:
    """A trigger type this process provides; callbacks get the binding as a dict
    ``{id, trigger_type, function_id, config, metadata?, namespace}``."""

    message: dict[str, Any]
    on_register: Callable[[dict], Any]
    on_unregister: Callable[[str], Any]
    bindings: dict[str, dict] = field(default_factory=dict)


class Broker(Process):
    """One engine process on the bus with functions and trigger types of its own."""

    worker_name = "engine"

    def __init__(self, ctx: RunContext, *, bus: BusFactory | None = None) -> None:
        super().__init__(ctx, bus=bus)
        self.routes = RouteTable()
        self.functions: dict[str, FunctionSpec] = {}
        self.trigger_types: dict[str, TriggerTypeSpec] = {}
        self._pending: Pending[asyncio.Future] = Pending()
        self.served: dict[str, int] = {}
        """Calls served per function id since this process started (Prometheus)."""
        self.routes_known = asyncio.Event()
        """Set by the first route table: before it, every function looks missing (a
        restarted broker must not fire a trigger into that gap)."""
        self._kinds: dict[str, Callable[[str, dict, bytes], None]] = {
            frames.INV: self._on_inv,
            frames.RES: self._on_res,
            frames.ROUTES: self._on_routes,
            frames.DOWN: self._on_down,
            frames.HELLO: self._on_hello,
            frames.RESET: self._on_reset,
        }

    # ---- declarations -------------------------------------------------------------------

    def function(self, function_id: str, handler: Handler, *, description: str | None = None,
                 metadata: dict | None = None, input: Input | None = None,
                 request_format: Any = None, response_format: Any = None) -> None:
        """Declare a function; it is announced to the router on start and on resync.
        ``input``: its declared input, whose schema is its ``request_format``."""
        if input is not None and request_format is None:
            request_format = input.schema()
        msg: dict[str, Any] = {"type": "registerfunction", "id": function_id}
        for key, value in (("description", description), ("metadata", metadata),
                           ("request_format", request_format), ("response_format", response_format)):
            if value is not None:
                msg[key] = value
        self.functions[function_id] = FunctionSpec(handler, msg, inspect.iscoroutinefunction(handler))

    def trigger_type(self, type_id: str, description: str, *, on_register: Callable[[dict], Any],
                     on_unregister: Callable[[str], Any], config: Input | None = None,
                     trigger_request_format: Any = None, call_request_format: Any = None) -> None:
        """Declare a trigger type; bindings arrive through ``on_register``. ``config``: the
        declared binding config, whose schema is its ``trigger_request_format``."""
        if config is not None and trigger_request_format is None:
            trigger_request_format = config.schema()
        msg: dict[str, Any] = {"type": "registertriggertype", "id": type_id, "description": description}
        if trigger_request_format is not None:
            msg["trigger_request_format"] = trigger_request_format
        if call_request_format is not None:
            msg["call_request_format"] = call_request_format
        self.trigger_types[type_id] = TriggerTypeSpec(msg, on_register, on_unregister)

    # ---- lifecycle ----------------------------------------------------------------------

    async def started(self) -> None:
        self.hello(fresh=True)
        self.announce()

    def announce(self) -> None:
        """(Re)send every registration to the router: on start and when it restarts."""
        for spec in self.trigger_types.values():
            self.up(spec.message)
        for spec in self.functions.values():
            self.up(spec.message)

    def up(self, message: dict) -> None:
        """Send a registration message of this process to the router."""
        self.send(ROUTER, frames.up(None, "default"), wire.dumps(message))

    # ---- calling other functions --------------------------------------------------------

    def _route(self, function_id: str, namespace: str):
        route = self.routes.get(namespace, function_id)
        if route is None:
            raise EngineError(errors.FUNCTION_NOT_FOUND, not_found_message(
                function_id, namespace, self.routes.namespaces_of(function_id)))
        return route

    def call_future(self, function_id: str, data: Any, *, namespace: str = "default",
                    metadata: Any = None, traceparent: str | None = None,
                    baggage: str | None = None) -> asyncio.Future:
        """Invoke a function anywhere in the engine; the future settles with its result.
        Costs no task, so a broker delivering many calls adds a callback per call.
        ``traceparent``/``baggage`` go on the ``invokefunction`` as given (protocol §9.1:
        a call made on behalf of a traced caller, such as a queue delivery, carries its
        context). The call gets its engine span, as a gateway's calls do
        (``brokers.kit.telemetry``): the callee sees it as its parent."""
        node, conn = self._route(function_id, namespace)
        inv_id = str(uuid.uuid4())
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending.add(inv_id, node, fut)
        header = frames.inv(inv_id, function_id, conn, self.name, None)
        rec, traceparent, baggage = self.telemetry.begin(function_id, traceparent, baggage)
        if rec is not None:
            rec[10:] = conn or node, self.name, inv_id, "sync"
        self.send(node, header, wire.invoke(inv_id, function_id, data, metadata, traceparent, baggage))

        def done(f: asyncio.Future) -> None:
            self._pending.pop(inv_id)  # _on_res popped it; a call stopped by RESET or cancelled is dropped here
            if rec is not None:
                exc = None if f.cancelled() else f.exception()
                self.telemetry.finish(rec, f.cancelled() or exc is not None,
                                      description=exc.code if isinstance(exc, EngineError) else None)
        fut.add_done_callback(done)
        return fut

    async def call(self, function_id: str, data: Any, *, namespace: str = "default",
                   metadata: Any = None, timeout: float | None = None,
                   traceparent: str | None = None, baggage: str | None = None) -> Any:
        """Invoke a function anywhere in the engine and return its result (waiting up to
        ``ROUTES_WAIT_S`` for the first route table of this process)."""
        if not self.routes_known.is_set():
            try:
                await asyncio.wait_for(self.routes_known.wait(), ROUTES_WAIT_S)
            except asyncio.TimeoutError:
                pass  # the router is late: the lookup below says what is missing
        fut = self.call_future(function_id, data, namespace=namespace, metadata=metadata,
                               traceparent=traceparent, baggage=baggage)
        return await asyncio.wait_for(fut, timeout) if timeout else await fut

    def call_void(self, function_id: str, data: Any, *, namespace: str = "default",
                  metadata: Any = None, traceparent: str | None = None,
                  baggage: str | None = None) -> None:
        """Invoke a function without waiting for (or receiving) its result."""
        node, conn = self._route(function_id, namespace)
        inv_id = str(uuid.uuid4())
        header = frames.inv(inv_id, function_id, conn, None, None)
        rec, traceparent, baggage = self.telemetry.begin(function_id, traceparent, baggage)
        self.send(node, header, wire.invoke(inv_id, function_id, data, metadata, traceparent, baggage))
        if rec is not None:
            rec[10:] = conn or node, self.name, inv_id, "void"
            self.telemetry.finish(rec, void=True)

    # ---- frames -------------------------------------------------------------------------

    def on_frame(self, sender: str, header: dict, body: bytes) -> None:
        handler = self._kinds.get(header["k"])
        if handler is None:
            log.debug("ignoring frame kind %r from %s", header["k"], sender)
            return
        handler(sender, header, body)

    def _on_routes(self, sender: str, header: dict, body: bytes) -> None:
        self.routes.apply(header["ops"])
        self.routes_known.set()

    def _on_hello(self, sender: str, header: dict, body: bytes) -> None:
        if sender == ROUTER:  # the router (re)started: tell it who we are and everything again
            self.hello()
            self.announce()
            self.on_router_restart()

    def on_router_restart(self) -> None:
        """Hook for subclasses that hold more registrations (none by default)."""

    def _on_reset(self, sender: str, header: dict, body: bytes) -> None:
        for _, fut in self._pending.stopped(header["node"]):
            if not fut.done():
                fut.set_exception(EngineError(errors.INVOCATION_STOPPED, "Invocation stopped"))

    def _on_res(self, sender: str, header: dict, body: bytes) -> None:
        fut = self._pending.pop(header["id"])
        if fut is None or fut.done():
            return
        try:
            msg = wire.loads(body)
        except ValueError:
            fut.set_exception(EngineError(errors.INVALID_RESPONSE, "undecodable result"))
            return
        err = msg.get("error")
        if err:
            if isinstance(err, dict):
                fut.set_exception(EngineError(str(err.get("code", errors.UNKNOWN)), str(err.get("message", "")),
                                              err.get("stacktrace")))
            else:
                fut.set_exception(EngineError(errors.UNKNOWN, str(err)))
        else:
            fut.set_result(msg.get("result"))

    def telemetry_figures(self) -> dict[str, Any]:
        """``<unit>_operations_total{op=<function id>}``: the calls this process served."""
        return {"counters": {f"{self.ctx.unit.name}_operations_total":
                             [[{"op": fid}, n] for fid, n in self.served.items()]}}

    def _on_inv(self, sender: str, header: dict, body: bytes) -> None:
        function_id = header["fn"]
        spec = self.functions.get(function_id)
        if spec is not None:
            self.served[function_id] = self.served.get(function_id, 0) + 1
        if spec is None:
            self._reply_error(header, EngineError(errors.FUNCTION_NOT_FOUND,
                                                  f"Function {function_id} not found in namespace default."))
            return
        try:
            msg = wire.loads(body)
        except ValueError as exc:
            self._reply_error(header, errors.deserialization_error(function_id, str(exc)))
            return
        tp, bg = msg.get("traceparent"), msg.get("baggage")
        call = Call(function_id, msg.get("data"), msg.get("metadata"),
                    tp if isinstance(tp, str) else None, bg if isinstance(bg, str) else None)
        if spec.is_async:
            asyncio.ensure_future(self._run_async(header, spec.handler(call)))
            return
        try:
            value = spec.handler(call)
        except Exception as exc:
            self._reply_error(header, exc)
            return
        if isinstance(value, asyncio.Future):
            # A handler that parks the call (group commit) costs a callback, not a task.
            value.add_done_callback(lambda fut: self._settle(header, fut))
        elif inspect.isawaitable(value):
            asyncio.ensure_future(self._run_async(header, value))
        else:
            self._reply(header, value)

    def _settle(self, header: dict, fut: asyncio.Future) -> None:
        if fut.cancelled():
            self._reply_error(header, EngineError(errors.INVOCATION_STOPPED, "Invocation stopped"))
        elif fut.exception() is not None:
            self._reply_error(header, fut.exception())
        else:
            self._reply(header, fut.result())

    async def _run_async(self, header: dict, awaitable: Awaitable) -> None:
        try:
            value = await awaitable
        except Exception as exc:
            self._reply_error(header, exc)
            return
        self._reply(header, value)

    def _reply(self, header: dict, value: Any) -> None:
        node = header.get("rn")
        if node is None:
            return
        try:
            body = wire.result(header["id"], header["fn"], value)
        except TypeError as exc:
            body = wire.error(header["id"], header["fn"], errors.SERIALIZATION_ERROR, str(exc))
            self.send(node, frames.res(header["id"], header.get("rc"), errors.SERIALIZATION_ERROR), body)
            return
        self.send(node, frames.res(header["id"], header.get("rc")), body)

    def _reply_error(self, header: dict, exc: BaseException) -> None:
        if not isinstance(exc, EngineError):
            log.error("%s failed: %s", header["fn"], exc, exc_info=exc)
            exc = EngineError(errors.INVOCATION_FAILED, str(exc),
                              "".join(traceback.format_exception(exc)))
        node = header.get("rn")
        if node is None:
            if exc.code != errors.FUNCTION_NOT_FOUND:
                log.warning("void call of %s failed: %s %s", header["fn"], exc.code, exc.message)
            return
        body = wire.error(header["id"], header["fn"], exc.code, exc.message, exc.stacktrace)
        self.send(node, frames.res(header["id"], header.get("rc"), exc.code), body)

    # ---- trigger bindings from the router -----------------------------------------------

    def _on_down(self, sender: str, header: dict, body: bytes) -> None:
        try:
            msg = wire.loads(body)
        except ValueError:
            return
        kind = msg.get("type")
        if kind == "registertrigger":
            self._bind_trigger(msg)
        elif kind == "unregistertrigger":
            spec = self.trigger_types.get(msg.get("trigger_type", ""))
            specs = [spec] if spec else list(self.trigger_types.values())
            for s in specs:
                if s.bindings.pop(msg.get("id"), None) is not None:
                    s.on_unregister(msg["id"])

    def _bind_trigger(self, msg: dict) -> None:
        """Install a binding now, before the next frame is read: a call that the router
        passes on after it (a worker's publish right after its registertrigger) must find
        it. Only an ``async`` provider callback finishes later, in a task."""
        type_id = msg.get("trigger_type", "")
        binding = {"id": msg.get("id"), "trigger_type": type_id, "function_id": msg.get("function_id"),
                   "config": msg.get("config"), "metadata": msg.get("metadata"),
                   "namespace": msg.get("namespace") or "default"}
        answer = {"type": "triggerregistrationresult", "id": binding["id"], "trigger_type": type_id,
                  "function_id": binding["function_id"]}
        spec = self.trigger_types.get(type_id)
        try:
            if spec is None:
                raise EngineError(errors.TRIGGER_TYPE_NOT_FOUND, f"Trigger type {type_id} not found")
            outcome = spec.on_register(binding)
        except Exception as exc:
            self._bound(answer, exc)
            return
        if inspect.isawaitable(outcome):
            asyncio.ensure_future(self._bind_later(spec, binding, answer, outcome))
        else:
            spec.bindings[binding["id"]] = binding
            self._bound(answer, None)

    async def _bind_later(self, spec: TriggerTypeSpec, binding: dict, answer: dict,
                          outcome: Awaitable) -> None:
        try:
            await outcome
        except Exception as exc:
            self._bound(answer, exc)
            return
        spec.bindings[binding["id"]] = binding
        self._bound(answer, None)

    def _bound(self, answer: dict, exc: BaseException | None) -> None:
        """Tell the router how a binding went (a provider bug still answers the binder)."""
        if isinstance(exc, EngineError):
            answer["error"] = {"code": errors.TRIGGER_REGISTRATION_FAILED
                               if exc.code == errors.DESERIALIZATION_ERROR else exc.code,
                               "message": exc.message}
        elif exc is not None:
            log.error("trigger registration failed: %r", exc, exc_info=exc)
            answer["error"] = {"code": errors.TRIGGER_REGISTRATION_FAILED, "message": str(exc)}
        self.up(answer)
