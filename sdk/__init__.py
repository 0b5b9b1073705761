"""Our Python worker SDK: the implementation behind ``iii``'s public names.

Layout: ``core`` (sans-I/O protocol state), ``events`` (what the core hands the shell),
``shell`` (asyncio thread, reconnect, running handlers), ``handlers`` (how a handler's shape
decides how it is called, and what its failure becomes on the wire), ``transport`` (the
WebSocket connection: direct frame delivery, batched writes), ``waiters`` (cross-thread
mailboxes and call waiters), ``pool`` (threads for ``def`` handlers), ``worker`` (public
``III`` API), ``logger``, ``options``, ``codec``, ``errors``, ``types`` (the wire types,
public as ``iii.iii_types``); telemetry (protocol.md §9): ``tracecontext`` (traceparent,
the handler's span, the current-span contextvar), ``otlp`` (hand-written OTLP JSON),
``workermetrics`` (the worker gauges), ``telemetry`` (the ``/otel`` socket). No
OpenTelemetry package is needed or imported. Importing this package loads websockets but
no engine module (zmq, lmdb, msgpack, ``brokers``); nothing here imports ``iii`` (``iii``
is the public face in front of this package, never the other way round).
"""
from __future__ import annotations

from sdk.types import (
    HttpAuthApiKey, HttpAuthBearer, HttpAuthHmac, HttpInvocationConfig, TriggerAction,
    TriggerActionEnqueue, TriggerActionVoid, TriggerConfig,
)
from sdk.errors import InvocationError, RegistrationRejectedError
from sdk.logger import Logger
from sdk.options import DEFAULT_ENGINE_URL, InitOptions, OtelConfig, ReconnectionConfig
from sdk.worker import III, FunctionRef, TriggerRef, TriggerTypeRef, register_worker

__all__ = [
    "DEFAULT_ENGINE_URL", "FunctionRef", "HttpAuthApiKey", "HttpAuthBearer", "HttpAuthHmac",
    "HttpInvocationConfig", "III", "InitOptions", "InvocationError", "Logger", "OtelConfig",
    "ReconnectionConfig", "RegistrationRejectedError", "TriggerAction", "TriggerActionEnqueue",
    "TriggerActionVoid", "TriggerConfig", "TriggerRef", "TriggerTypeRef", "register_worker",
]
