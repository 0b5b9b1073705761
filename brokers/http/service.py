"""The HTTP worker process (``iii-http``): the ``http`` trigger type and the HTTP listener.

A broker like the others: it provides the ``http`` trigger type (bindings arrive from the
router and become routes, live), and serves each request through the ``Pipeline``, which
calls the route's functions anywhere in the engine over the bus. Several HTTP processes
may serve one port (``processes``), each with the whole route table: the router delivers
every binding to each of them, as the provider of ``http`` is the trigger type of every
HTTP process.

Invariants: the listener opens only once the route table came back after a (re)start
(at most ``ROUTES_WAIT_S``), so a restarted process answers the routes it had, not 404s;
on stop the listener closes first and in-flight requests finish (``drain_s``).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from brokers.http import routes as routemod
from brokers.http.pipeline import Pipeline
from brokers.http.server import HttpServer
from brokers.http.streams import HubStreams
from brokers.kit import frames, listen
from brokers.kit.channels.hub import Hub
from brokers.kit.broker import Broker, BusFactory, run
from brokers.kit.decode import DecodeError
from brokers.kit.errors import TRIGGER_REGISTRATION_FAILED, EngineError
from brokers.kit.inputs import ARR, STR, Field, Input
from brokers.kit.units import RunContext

log = logging.getLogger(__name__)

TRIGGER_TYPE = "http"
ROUTES_WAIT_S = 2.0

HTTP_CONFIG = Input(TRIGGER_TYPE, "HttpTriggerConfig",
                    Field("api_path", STR, required=False, description="e.g. /users/:id"),
                    Field("http_method", STR, required=False, default="GET"),
                    Field("condition_function_id", STR, required=False),
                    Field("middleware_function_ids", ARR, required=False, default=()))
"""An ``http`` binding's config (workers-b §2.2); its schema is the trigger_request_format."""


def route_of(binding: dict) -> routemod.Route:
    """The route a binding asks for; ``EngineError`` with the spec's message if it cannot be one."""
    try:
        cfg = HTTP_CONFIG.decode(binding.get("config") if isinstance(binding.get("config"), dict) else {})
    except DecodeError as exc:
        raise EngineError(TRIGGER_REGISTRATION_FAILED, f"Failed to parse trigger config: {exc}") from None
    if not cfg["api_path"]:
        raise EngineError(TRIGGER_REGISTRATION_FAILED, "api_path is required for http triggers")
    method = cfg["http_method"].upper()
    if method not in routemod.METHODS:
        log.warning("http trigger %s: method %s is accepted but never routed", binding["id"], method)
    middleware = tuple(m for m in cfg["middleware_function_ids"] or () if isinstance(m, str))
    return routemod.Route(binding["id"], method, cfg["api_path"], binding["function_id"],
                          binding.get("namespace") or "default", binding.get("metadata"),
                          cfg["condition_function_id"], middleware)


class HttpBroker(Broker):
    worker_name = "iii-http"

    def __init__(self, ctx: RunContext, *, bus: BusFactory | None = None) -> None:
        super().__init__(ctx, bus=bus)
        self.cfg: dict[str, Any] = ctx.config
        self.table = routemod.RouteTable()
        self.channels = Hub(ctx.process, ctx.peers, ctx.runtime_dir, self.send)
        self._kinds[frames.CHAN] = lambda sender, header, body: self.channels.on_notice(sender, header)
        self.pipeline = Pipeline(self.table, self.cfg, self._invoke, HubStreams(self.channels), self.telemetry)
        self.server = HttpServer(self.pipeline, self.cfg["max_body_bytes"])
        self._listener = None

    async def _invoke(self, function_id: str, data: Any, *, namespace: str = "default",
                      metadata: Any = None, timeout: float | None = None, traceparent: str | None = None,
                      baggage: str | None = None) -> Any:
        return await self.call(function_id, data, namespace=namespace, metadata=metadata,
                               timeout=timeout, traceparent=traceparent, baggage=baggage)

    async def setup(self) -> None:
        self._listener = listen.listener(self.cfg["host"], self.cfg["port"])  # fail fast
        self.trigger_type(TRIGGER_TYPE, "HTTP API trigger", on_register=self._add_route,
                          on_unregister=self._remove_route, config=HTTP_CONFIG)

    async def started(self) -> None:
        await super().started()
        self.channels.start()
        try:
            await asyncio.wait_for(self.routes_known.wait(), ROUTES_WAIT_S)
        except asyncio.TimeoutError:
            log.warning("no route table within %.0f s; serving HTTP anyway", ROUTES_WAIT_S)
        await asyncio.sleep(0.05)  # the router replays the bindings right behind the table
        await self.server.start(self._listener, listen.BACKLOG)
        log.info("%s serving HTTP on %s:%s (%d routes)", self.name, self.cfg["host"],
                 self.cfg["port"], len(self.table))

    async def stopping(self) -> None:
        await self.server.close(self.ctx.engine.stop_timeout_ms / 1000)  # engine.stop_timeout_ms
        self.channels.close()

    def _add_route(self, binding: dict) -> None:
        route = route_of(binding)
        try:
            replaced = self.table.add(route)
        except routemod.RouteConflict as exc:
            raise EngineError(TRIGGER_REGISTRATION_FAILED, str(exc)) from None
        if replaced is not None and replaced.binding_id != route.binding_id:
            log.info("http route %s %s now goes to %s (was %s)", route.method, route.api_path,
                     route.function_id, replaced.function_id)

    def _remove_route(self, binding_id: str) -> None:
        self.table.remove(binding_id)


def main(ctx: RunContext) -> None:
    """Entry point of an HTTP process."""
    run(HttpBroker, ctx)
