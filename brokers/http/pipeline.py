"""One HTTP request's way through the engine (workers-b §2.3), over an ``invoke`` seam.

    preflight (CORS) -> route (404 / 405) -> global middleware by priority -> body ->
    condition (422 CONDITION_NOT_MET) -> route middleware -> handler -> response

``invoke(function_id, data, namespace, metadata, timeout, traceparent, baggage)`` calls a
function anywhere in the engine (the broker's ``call``), in the trace of the request's
server span (``HTTP`` ``"<METHOD> <api_path>"``, §2.9, parented on the request's
``traceparent`` header); it raises ``EngineError`` for the callee's failure
and ``asyncio.TimeoutError``. No socket here: requests and replies are the server's
``Request`` / ``Responder``, so the pipeline is tested with plain fakes.

Invariants: ``default_timeout`` bounds each middleware call (then 504 MIDDLEWARE_TIMEOUT)
and the handler until its response starts (then 504 with an empty body); at
most ``concurrency_request_limit`` requests are in the pipeline, the rest wait (no
503); a function's failure is a 500 envelope with its own code and message and an
``error_id``; middleware never sees the body; the condition sees the request without its
channel refs; a handler that returns null and never claims its response channel is
answered 200 ``{}`` after at most ``CLAIM_GRACE_S`` (the reference hung until the timeout).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, Protocol

from brokers.http import request as reqmod
from brokers.http import response as resp
from brokers.http.cors import Cors
from brokers.http.routes import Route, RouteTable, path_params
from brokers.kit.errors import EngineError
from brokers.kit.telemetry import Recorder

log = logging.getLogger(__name__)

Invoke = Callable[..., Awaitable[Any]]
CLAIM_GRACE_S = 1.0
"""How long a null result waits for its response channel to be claimed before the 200 ``{}``
fallback: the official SDKs connect that socket only when the handler first writes it,
and the handler's result can overtake the connect (the Node SDK's ``http()`` handlers)."""


class Streams(Protocol):
    """The two channels of a request (request body, response), or none (tests)."""

    def open(self) -> tuple[dict | None, dict | None, Any]: ...


class Pipeline:
    def __init__(self, routes: RouteTable, cfg: dict[str, Any], invoke: Invoke,
                 streams: Any = None, telemetry: Recorder | None = None) -> None:
        self.routes = routes
        self.telemetry = telemetry if telemetry is not None else Recorder(on=False)
        self.cfg = cfg
        self.invoke = invoke
        self.streams = streams
        self.cors = Cors(cfg.get("cors"))
        self.timeout_s = cfg["default_timeout"] / 1000
        self.slots = asyncio.Semaphore(cfg["concurrency_request_limit"])

    async def __call__(self, req: Any, out: Any) -> None:
        preflight = self.cors.preflight(req.method, req.headers)
        if preflight is not None:
            out.send(resp.Reply(200, preflight, b""))
            return
        route, found = self.routes.match(req.method, req.path)
        if route is None:
            reply = resp.method_not_allowed(found) if found else resp.not_found()
            self._send(req, out, reply)
            return
        async with self.slots:
            await self._handle(route, found, req, out)

    def _send(self, req: Any, out: Any, reply: resp.Reply) -> None:
        reply.headers.extend(self.cors.actual(req.headers))
        out.send(reply)

    def _failure(self, exc: EngineError, what: str) -> resp.Reply:
        log.warning("%s failed: %s: %s", what, exc.code, exc.message)
        return resp.error(500, exc.code, exc.message, with_id=True)

    async def _middleware(self, fid: str, route: Route, data: dict, trace: tuple) -> resp.Reply | None:
        """``None`` to continue, else the reply that ends the request."""
        try:
            out = await self.invoke(fid, data, namespace=route.namespace, timeout=self.timeout_s,
                                    traceparent=trace[0], baggage=trace[1])
        except asyncio.TimeoutError:
            return resp.error(504, *resp.MIDDLEWARE_TIMEOUT)
        except EngineError as exc:
            return self._failure(exc, f"middleware {fid}")
        if isinstance(out, dict) and out.get("action") == "respond":
            return resp.from_middleware(out.get("response"))
        if not (isinstance(out, dict) and out.get("action") == "continue"):
            log.warning("middleware %s answered neither continue nor respond: continuing", fid)
        return None

    async def _handle(self, route: Route, segments: list[str], req: Any, out: Any) -> None:
        hdrs = reqmod.headers(req.raw_headers)
        span, traceparent = self.telemetry.span(f"{req.method} {route.api_path}", hdrs.get("traceparent"),
                                                reqmod.span_attributes(route, req.method, req.query, hdrs, req.path))
        trace = (traceparent, hdrs.get("baggage"))
        try:
            await self._serve(route, segments, req, out, hdrs, trace)
        finally:
            if span is not None:
                status = getattr(out, "status", 0)
                if span[0] is not None:
                    span[7]["http.response.status_code"] = status
                self.telemetry.finish(span, status >= 400 or not status, description=None)

    async def _serve(self, route: Route, segments: list[str], req: Any, out: Any, hdrs: dict,
                     trace: tuple) -> None:
        mw_input = reqmod.middleware_input(req.method, req.query, hdrs, path_params(route, segments))
        for entry in self.cfg["middleware"]:
            reply = await self._middleware(entry["function_id"], route, mw_input, trace)
            if reply is not None:
                self._send(req, out, reply)
                return
        body_ref, response_ref, io = self.streams.open() if self.streams else (None, None, None)
        try:
            await self._call(route, segments, req, out, hdrs, mw_input, body_ref, response_ref, io, trace)
        finally:
            if io is not None:
                io.close()

    async def _call(self, route: Route, segments: list[str], req: Any, out: Any, hdrs: dict,
                    mw_input: dict, body_ref: dict | None, response_ref: dict | None, io: Any,
                    trace: tuple) -> None:
        if reqmod.is_json(hdrs.get("content-type")):
            raw = await req.read()
            body = reqmod.json_body(raw)
            if io is not None:
                await io.feed_body([raw] if raw else [])
        else:
            body = None
            if io is None:
                await req.read()
            elif req.at_end():
                io.no_body()
            else:
                io.stream_body(req.chunks())
        request = reqmod.build(route, segments, req.method, req.query, hdrs, body, body_ref, response_ref)
        if route.condition_function_id:
            try:
                verdict = await self.invoke(route.condition_function_id, reqmod.without_channels(request),
                                            namespace=route.namespace, traceparent=trace[0], baggage=trace[1])
            except EngineError as exc:
                self._send(req, out, self._failure(exc, f"condition {route.condition_function_id}"))
                return
            if verdict is False:
                self._send(req, out, resp.condition_not_met())
                return
        for fid in route.middleware_function_ids:
            reply = await self._middleware(fid, route, mw_input, trace)
            if reply is not None:
                self._send(req, out, reply)
                return
        call = asyncio.ensure_future(self.invoke(route.function_id, request, namespace=route.namespace,
                                                 metadata=route.metadata, timeout=self.timeout_s,
                                                 traceparent=trace[0], baggage=trace[1]))
        outcome = await self._first_of(call, io, route.function_id)
        if outcome == "stream":
            await io.stream_response(out, self.cors.actual(req.headers))
        elif outcome is not None:
            self._send(req, out, outcome)

    async def _first_of(self, call: asyncio.Future, io: Any, function_id: str) -> Any:
        """Whichever decides first (§2.5): the handler's non-null result, or the response
        channel's first binary chunk (or close). ``"stream"``, a ``Reply``, or None.

        The common case costs no task: until a writer claims the response channel only
        the call and that claim are raced; reading the channel starts once it is claimed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        started: asyncio.Future | None = None
        try:
            if io is not None:
                claim = io.claim()
                await _first((call, claim), self.timeout_s)
                if claim.done() and not call.done():  # claimed while the handler runs
                    started = asyncio.ensure_future(io.response_started())
                    await _first((call, started), max(deadline - loop.time(), 0.0))
            else:
                await _first((call,), self.timeout_s)
            if not call.done():
                if started is not None and started.done():  # the response started first
                    call.add_done_callback(_consume)
                    return "stream"
                call.cancel()
                return resp.timeout()
            try:
                result = call.result()
            except asyncio.TimeoutError:
                return resp.timeout()
            except EngineError as exc:
                return self._failure(exc, f"handler {function_id}")
            if result is not None:
                return resp.from_result(result)
            if io is None:
                return resp.from_result({"status_code": 200, "body": {}})
            if started is None:
                # SDKs open the response socket lazily, at the handler's first write: its
                # attach may still be on its way when the null result arrives
                claim = io.claim()
                await _first((claim,), min(CLAIM_GRACE_S, max(deadline - loop.time(), 0.0)))
                if not claim.done():
                    return resp.from_result({"status_code": 200, "body": {}})
                started = asyncio.ensure_future(io.response_started())
            await _first((started,), max(deadline - loop.time(), 0.0))
            return "stream" if started.done() else resp.timeout()
        finally:
            if started is not None and not started.done():
                started.cancel()


async def _first(futures: tuple[asyncio.Future, ...], timeout: float) -> None:
    """Until one of ``futures`` is done or ``timeout`` passed: ``asyncio.wait`` without its
    per-call task and sets (this runs for every HTTP request)."""
    if any(f.done() for f in futures):
        return
    loop = asyncio.get_running_loop()
    either = loop.create_future()

    def wake(_: Any = None) -> None:
        if not either.done():
            either.set_result(None)

    for f in futures:
        f.add_done_callback(wake)
    timer = loop.call_later(timeout, wake)
    try:
        await either
    finally:
        timer.cancel()
        for f in futures:
            f.remove_done_callback(wake)


def _consume(fut: asyncio.Future) -> None:
    """A handler result nobody waits for any more (the response had started): read its
    exception, if any, so that asyncio does not log it as never retrieved."""
    if not fut.cancelled():
        fut.exception()
