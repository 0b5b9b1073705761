"""The public worker object (``register_worker`` → ``III``): the seed's Python API.

Owns argument checking and the shapes of registration messages; everything stateful lives
in ``sdk.core.Core`` and every socket in ``sdk.shell.Shell``. Invariants: ``register_worker``
returns at once (the connection is made in the background); ``trigger`` blocks the calling
thread (never the SDK loop) and ``trigger_async`` awaits from any event loop; errors raised
by calls are ``InvocationError`` (or ``RegistrationRejectedError`` after a fatal rejection).
"""
from __future__ import annotations

import asyncio
import logging
import threading
import uuid
import weakref
from dataclasses import dataclass
from typing import Any, Callable

from sdk.types import HttpInvocationConfig, action_to_wire
from sdk.core import Core, validate_function_id
from sdk.errors import SHUTDOWN, TIMEOUT, InvocationError
from sdk.options import (
    InitOptions, resolve_address, resolve_headers, resolve_namespace, resolve_telemetry, worker_metadata,
)
from sdk.handlers import HandlerSpec, check_provider
from sdk.shell import Shell
from sdk.tracecontext import outgoing
from sdk.waiters import LoopWaiter, SyncWaiter

log = logging.getLogger(__name__)

# The most recent worker of this process: what a bare ``Logger()`` reports through.
_current: weakref.ref[III] | None = None


def current_worker() -> III | None:
    return _current() if _current is not None else None


@dataclass
class FunctionRef:
    id: str
    _unregister: Callable[[], None]

    def unregister(self) -> None:
        self._unregister()


@dataclass
class TriggerRef:
    id: str
    _unregister: Callable[[], None]

    def unregister(self) -> None:
        self._unregister()


@dataclass
class TriggerTypeRef:
    """Handle of a trigger type this worker provides."""

    id: str
    _iii: III

    def register_trigger(self, function_id: str, config: Any = None, metadata: Any = None) -> TriggerRef:
        return self._iii.register_trigger({"type": self.id, "function_id": function_id,
                                           "config": config, "metadata": metadata})

    def register_function(self, function_id: str, handler: Callable[..., Any], **kw: Any) -> FunctionRef:
        return self._iii.register_function(function_id, handler, **kw)

    def unregister(self) -> None:
        self._iii.unregister_trigger_type(self.id)


def _format(fmt: Any) -> Any:
    """A JSON Schema dict as is; a pydantic model class through ``model_json_schema()``."""
    schema = getattr(fmt, "model_json_schema", None)
    return schema() if isinstance(fmt, type) and callable(schema) else fmt


def _get(obj: Any, key: str, default: Any = None) -> Any:
    return obj.get(key, default) if isinstance(obj, dict) else getattr(obj, key, default)


class III:
    def __init__(self, address: str, options: InitOptions | None = None) -> None:
        global _current
        self.options = options or InitOptions()
        self.address = address
        self.core = Core(metadata=worker_metadata(self.options), namespace=resolve_namespace(self.options),
                         invocation_timeout_ms=self.options.invocation_timeout_ms,
                         reconnect=self.options.reconnection_config)
        loop = None
        if self.options.run_on_running_loop:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                raise RuntimeError("run_on_running_loop=True needs register_worker() to be called "
                                   "inside a running event loop") from None
        telemetry = resolve_telemetry(self.options, str(self.core.metadata.get("name") or "iii-py"))
        self.shell = Shell(self.core, address, resolve_headers(self.options.headers),
                           daemon=self.options.daemon, handler_threads=self.options.handler_threads,
                           use_uvloop=self.options.use_uvloop, loop=loop, telemetry=telemetry)
        self._fn_tokens: dict[str, object] = {}
        self._lock = threading.Lock()
        self._log_probe: tuple[int, Any] | None = None  # (epoch, set of engine::log::* ids | None)
        _current = weakref.ref(self)

    # -- state ---------------------------------------------------------------------------
    @property
    def worker_id(self) -> str | None:
        return self.core.worker_id

    def get_address(self) -> str:
        return self.address

    def get_connection_state(self) -> str:
        return self.core.state

    def add_connection_state_listener(self, fn: Callable[[str], None]) -> None:
        """``fn(state)`` runs on the SDK loop thread; keep it short."""
        self.shell.add_listener(fn)

    def wait_connected(self, timeout: float = 30.0) -> bool:
        if self.shell.on_loop():
            raise RuntimeError("wait_connected() blocks the SDK loop; use await wait_connected_async()")
        return self.shell.connected.wait(timeout)

    async def wait_connected_async(self, timeout: float = 30.0) -> bool:
        deadline = asyncio.get_running_loop().time() + timeout
        while not self.shell.connected.is_set():
            if asyncio.get_running_loop().time() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    # -- functions -----------------------------------------------------------------------
    def register_function(self, function_id: str, handler: Callable[..., Any] | HttpInvocationConfig, *,
                          description: str | None = None, metadata: dict[str, Any] | None = None,
                          request_format: Any = None, response_format: Any = None) -> FunctionRef:
        validate_function_id(function_id)
        msg: dict[str, Any] = {"id": function_id}
        if description is not None:
            msg["description"] = description
        if request_format is not None:
            msg["request_format"] = _format(request_format)
        if response_format is not None:
            msg["response_format"] = _format(response_format)
        if metadata is not None:
            msg["metadata"] = metadata
        if isinstance(handler, HttpInvocationConfig):
            msg["invocation"] = handler.to_wire()
            spec: HandlerSpec | None = None
        elif callable(handler):
            spec = HandlerSpec(handler)
        else:
            raise TypeError(f"handler must be callable or HttpInvocationConfig, got {type(handler).__name__}")
        msg["type"] = "registerfunction"
        token = spec if spec is not None else object()
        with self._lock:  # checked on the caller's thread so that the caller gets the error
            if function_id in self._fn_tokens:
                raise ValueError(f"function id {function_id!r} already registered")
            self._fn_tokens[function_id] = token
        self.shell.submit(self.core.register_function, function_id, spec, msg)

        def unregister() -> None:
            with self._lock:
                if self._fn_tokens.get(function_id) is token:
                    del self._fn_tokens[function_id]
            self.shell.submit(self.core.unregister_function, function_id, spec)
        return FunctionRef(function_id, unregister)

    # -- triggers ------------------------------------------------------------------------
    def register_trigger(self, trigger: Any) -> TriggerRef:
        """``{"type", "function_id", "config"?, "metadata"?, "namespace"?, "trigger_namespace"?}``."""
        trigger_type = _get(trigger, "type") or _get(trigger, "trigger_type")
        function_id = _get(trigger, "function_id")
        if not trigger_type or not function_id:
            raise ValueError("register_trigger needs 'type' and 'function_id'")
        trigger_id = str(uuid.uuid4())
        msg: dict[str, Any] = {"id": trigger_id, "trigger_type": trigger_type, "function_id": function_id}
        for key in ("config", "metadata"):
            value = _get(trigger, key)
            if value is not None:
                msg[key] = value
        namespace = self.core.call_namespace(_get(trigger, "namespace"), "")
        if namespace is not None:
            msg["namespace"] = namespace
        trigger_namespace = _get(trigger, "trigger_namespace")
        if trigger_namespace is not None:
            msg["trigger_namespace"] = trigger_namespace
        msg["type"] = "registertrigger"
        self.shell.submit(self.core.register_trigger, msg)
        return TriggerRef(trigger_id, lambda: self.shell.submit(self.core.unregister_trigger, trigger_id))

    def register_trigger_type(self, trigger_type: Any, handler: Any) -> TriggerTypeRef:
        """``handler`` has ``register_trigger(config)`` / ``unregister_trigger(config)`` (sync or async)."""
        type_id = _get(trigger_type, "id")
        description = _get(trigger_type, "description")
        if not type_id or description is None:
            raise ValueError("a trigger type needs 'id' and 'description'")
        check_provider(handler)
        msg: dict[str, Any] = {"id": type_id, "description": description}
        for key in ("trigger_request_format", "call_request_format"):
            value = _get(trigger_type, key)
            if value is not None:
                msg[key] = _format(value)
        namespace = _get(trigger_type, "namespace")
        if namespace is not None:
            msg["namespace"] = namespace
        msg["type"] = "registertriggertype"
        self.shell.submit(self.core.register_trigger_type, msg, handler)
        return TriggerTypeRef(type_id, self)

    def unregister_trigger_type(self, trigger_type: Any) -> None:
        type_id = trigger_type if isinstance(trigger_type, str) else _get(trigger_type, "id")
        namespace = None if isinstance(trigger_type, str) else _get(trigger_type, "namespace")
        self.shell.submit(self.core.unregister_trigger_type, type_id, namespace)

    # -- calls ---------------------------------------------------------------------------
    @staticmethod
    def _call_args(request: Any) -> dict[str, Any]:
        function_id = _get(request, "function_id")
        if not isinstance(function_id, str) or not function_id:
            raise ValueError("trigger needs a function_id")
        args = {"function_id": function_id, "payload": _get(request, "payload"),
                "action": action_to_wire(_get(request, "action")), "metadata": _get(request, "metadata"),
                "namespace": _get(request, "namespace"), "timeout_ms": _get(request, "timeout_ms")}
        traceparent, baggage = outgoing()  # inside a handler: its span's context (§9.1)
        if traceparent is not None:
            args["traceparent"] = traceparent
            if baggage is not None:
                args["baggage"] = baggage
        return args

    def _check_open(self, function_id: str) -> None:
        # after shutdown() nothing would run the call (a stopped loop would strand it)
        if self.core.state == "closed" or self.shell.loop.is_closed():
            raise InvocationError(SHUTDOWN, "iii worker is shut down", function_id=function_id)

    def trigger(self, request: Any) -> Any:
        """Call a function and block for its result (``None`` for void, a receipt for enqueue)."""
        if self.shell.on_loop():
            raise RuntimeError("iii.trigger() blocks; inside an async handler use await iii.trigger_async()")
        args = self._call_args(request)
        self._check_open(args["function_id"])
        waiter = SyncWaiter()
        self.shell.post_call(args, waiter)
        # The core times the call out; the margin only guards against a dead loop thread.
        if not waiter.wait((args["timeout_ms"] or self.core.invocation_timeout_ms) / 1000.0 + 10.0):
            raise InvocationError(TIMEOUT, "the SDK loop did not answer", function_id=args["function_id"])
        return waiter.result()

    async def trigger_async(self, request: Any) -> Any:
        args = self._call_args(request)
        if self.shell.on_loop():
            fut: asyncio.Future[Any] = self.shell.loop.create_future()
            self.shell.start_call(args, fut)
            return await fut
        self._check_open(args["function_id"])
        # another loop: one hop there (batched in the inbox), one back (batched in its mailbox)
        fut = asyncio.get_running_loop().create_future()
        self.shell.post_call(args, LoopWaiter(fut))
        return await fut

    # -- engine log functions (used by Logger) ----------------------------------------------
    def engine_log_functions(self) -> set[str] | None:
        """``engine::log::*`` ids the engine has on this connection; None while unknown.

        Probed once per connection with ``engine::functions::list`` in the background; the
        first lines of a connection go to Python logging meanwhile (cheap, never blocks).
        """
        epoch = self.core.epoch
        probe = self._log_probe
        if probe is not None and probe[0] == epoch:
            return probe[1]
        self._log_probe = (epoch, None)
        if epoch > 0:
            self.shell.submit(self._start_probe, epoch)
        return None

    def _start_probe(self, epoch: int) -> None:
        fut: asyncio.Future[Any] = self.shell.loop.create_future()

        def done(f: asyncio.Future[Any]) -> None:
            found: set[str] = set()
            if not f.cancelled() and f.exception() is None:
                for fn in (_get(f.result(), "functions") or []):
                    fid = _get(fn, "function_id")
                    if isinstance(fid, str) and fid.startswith("engine::log::"):
                        found.add(fid)
            if self._log_probe is not None and self._log_probe[0] == epoch:
                self._log_probe = (epoch, found)
        fut.add_done_callback(done)
        self.shell.start_call({"function_id": "engine::functions::list", "payload": {"include_internal": True},
                               "timeout_ms": 5000}, fut)

    # -- shutdown ------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Fail pending calls with SHUTDOWN, close the socket (1000) and stop the loop thread."""
        self.shell.shutdown()

    async def shutdown_async(self) -> None:
        if self.shell.on_loop():
            await self.shell.shutdown_async()
        else:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self.shell.shutdown_async(), self.shell.loop))


def register_worker(address: str | None = None, options: InitOptions | None = None) -> III:
    """Create a worker and connect in the background; returns at once."""
    return III(resolve_address(address), options)
