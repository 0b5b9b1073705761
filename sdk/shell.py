"""The asyncio shell around ``sdk.core.Core``: one background thread with its own event loop.

Owns the WebSocket (``sdk.transport.SdkConnection``: websockets 17, 64 MiB messages, no
compression), the reconnect loop, the deadline timer and the running of handlers: ``async
def`` handlers on the loop, sync ones in a thread pool (so a sync handler may block in
``iii.trigger`` while the loop keeps reading); which is which, and how a handler is called,
is ``sdk.handlers``'s decision. Channel refs in a handler's input become live
``sdk.channels`` ends bound to this loop before the handler runs (protocol.md §8).

Each handler runs inside its span (``sdk.tracecontext``: the ``execute <function_id>``
child of the call's ``traceparent``, current for the handler's thread or task only), which
``sdk.telemetry`` reports when the handler ends (status error when it raised); that
module's ``/otel`` socket runs on this loop too, unless telemetry is disabled.

With ``InitOptions(run_on_running_loop=True)`` the shell runs on the caller's running loop
instead (no thread of its own): ``trigger_async`` there starts the call directly, with no
thread hop either way.

Invariants: ``Core`` is only touched on the loop thread; other threads reach it through the
``inbox`` mailbox (one loop wake-up per batch, ``sdk.waiters``). Frames leave in batches:
``flush`` writes the whole outbox in one socket write, and is called once per batch of
incoming data (``on_batch``), per inbox drain and per local operation, not per frame. A
waiter is anything with ``done``/``set_result``/``set_exception`` (``SyncWaiter``,
``LoopWaiter``, or an ``asyncio.Future`` of this loop).
"""
from __future__ import annotations

import asyncio
import functools
import logging
import random
import threading
import time
from typing import Any, Callable

from websockets.asyncio.client import connect

from sdk.channel_refs import resolve_refs
from sdk.channels import channel_end
from sdk.codec import MAX_MESSAGE_BYTES
from sdk.core import Core
from sdk.events import Completion, Fatal, Invoke, ProviderCall
from sdk.handlers import HandlerSpec, handler_error_body, is_async, provider_error_body, provider_method
from sdk.pool import HandlerPool
from sdk.telemetry import Telemetry
from sdk.tracecontext import Span, child_span, parse_traceparent, run_coro_in, run_in
from sdk.transport import SdkConnection
from sdk.waiters import Mailbox, settle

log = logging.getLogger(__name__)

HOLD_FALLBACK_S = 5.0


def _settle(c: Completion) -> None:
    settle(c.waiter, c.result, c.error)


class Shell:
    def __init__(self, core: Core, url: str, headers: dict[str, str], *, daemon: bool = False,
                 handler_threads: int = 64, use_uvloop: bool = True,
                 loop: asyncio.AbstractEventLoop | None = None, telemetry: Any = None) -> None:
        """``loop``: run on this (running, current-thread) loop instead of an own thread;
        ``telemetry``: a ``TelemetryConfig`` (the /otel socket runs on this loop) or None."""
        self.core = core
        self.url = url
        self.headers = headers
        self.loop = loop if loop is not None else _new_loop(use_uvloop)
        self.pool = HandlerPool(handler_threads)
        self.connected = threading.Event()
        self.inbox = Mailbox(self.loop)
        self.inbox.after_drain = self.flush
        self._ws: SdkConnection | None = None
        self._drain_task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._main: asyncio.Task[None] | None = None
        self._listeners: list[Callable[[str], None]] = []
        # channel refs in a handler's input become live ends on this loop (protocol.md §8)
        self._channel_end = functools.partial(channel_end, url, headers, self.loop)
        self.telemetry: Telemetry | None = None
        if telemetry is not None:
            self.telemetry = Telemetry(self.loop, url, headers, telemetry, lambda: self.core.worker_id)
        self.thread: threading.Thread | None = None
        if loop is not None:  # the caller's loop, and we are on its thread now
            self._loop_ident = threading.get_ident()
            self._main = loop.create_task(self._connection_loop())
            if self.telemetry is not None:
                self.telemetry.start()
        else:
            self.thread = threading.Thread(target=self._run, name="iii-sdk-loop", daemon=daemon)
            self.thread.start()
            self._loop_ident = self.thread.ident

    # -- thread plumbing -----------------------------------------------------------------
    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self._main = self.loop.create_task(self._connection_loop())
        if self.telemetry is not None:
            self.telemetry.start()
        self.loop.run_forever()
        # drain callbacks that were scheduled during shutdown, then close
        self.loop.run_until_complete(asyncio.sleep(0))
        self.loop.close()

    def on_loop(self) -> bool:
        return threading.get_ident() == self._loop_ident

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop thread (now if already there), then flush frames."""
        if self.on_loop():
            fn(*args)
            self.flush()
        else:
            self.inbox.post(fn, *args)

    def add_listener(self, fn: Callable[[str], None]) -> None:
        self._listeners.append(fn)

    def _notify(self, state: str) -> None:
        for fn in list(self._listeners):
            try:
                fn(state)
            except Exception:
                log.exception("connection state listener failed")

    # -- calls -----------------------------------------------------------------------------
    def post_call(self, kwargs: dict[str, Any], waiter: Any) -> None:
        """Any thread: start a call on the loop (batched with other threads' calls)."""
        self.inbox.post(self._start_call, kwargs, waiter)

    def start_call(self, kwargs: dict[str, Any], waiter: Any) -> None:
        """Loop thread: start one call and send it now."""
        self._start_call(kwargs, waiter)
        self.flush()

    def _start_call(self, kwargs: dict[str, Any], waiter: Any) -> None:
        """Loop thread: hand one call to the core and arm its deadline (the caller flushes)."""
        try:
            iid = self.core.call(waiter=waiter, now=self.loop.time(), **kwargs)
        except BaseException as exc:  # noqa: BLE001 - the waiter carries it to the caller
            if not waiter.done():
                waiter.set_exception(exc)
            return
        if iid is None:
            if not waiter.done():
                waiter.set_result(None)
        else:
            self._arm(self.core.pending[iid].deadline)

    def _arm(self, deadline: float) -> None:
        if self._timer_at is not None and self._timer_at <= deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        for c in self.core.expire(self.loop.time()):
            _settle(c)
        nxt = self.core.next_deadline()
        if nxt is not None:
            self._arm(nxt)

    # -- the connection --------------------------------------------------------------------
    async def _connection_loop(self) -> None:
        core = self.core
        while core.state not in ("closed", "failed"):
            try:
                ws = await connect(self.url, additional_headers=self.headers or None,
                                   max_size=MAX_MESSAGE_BYTES, compression=None, proxy=None,
                                   open_timeout=10, create_connection=functools.partial(
                                       SdkConnection, on_batch=self.flush))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any connect failure must keep the loop alive
                log.warning("connect to %s failed: %s: %s", self.url, type(exc).__name__, exc)
                if not await self._backoff():
                    return
                continue
            if core.state in ("closed", "failed"):
                await ws.close()
                return
            self._ws = ws
            core.connection_made()
            ws.attach(self._on_frame)
            # If the engine never answers the metadata call, stop holding calls after the
            # engine's own namespace grace period (5 s, protocol.md §4.1).
            self.loop.call_later(HOLD_FALLBACK_S, self._release_hold, core.epoch)
            self.connected.set()
            self._notify("connected")
            log.info("connected to %s", self.url)
            self.flush()
            try:
                await ws.wait_closed()
            finally:
                self._ws = None
                self.connected.clear()
                # frames not written on this connection: calls are kept, the rest is replayed
                unsent = core.take_outbox()
                core.connection_lost()
                core.requeue(unsent)
            log.info("connection to %s closed (code=%s)", self.url, ws.close_code)
            self._notify(core.state)
            if not await self._backoff():
                return

    def _release_hold(self, epoch: int) -> None:
        if self.core.epoch == epoch and self.core.holding:
            log.warning("no answer to engine::workers::register in %.0f s; sending calls anyway", HOLD_FALLBACK_S)
            self.core.release()
            self.flush()

    async def _backoff(self) -> bool:
        delay = self.core.next_reconnect_delay(random.random())
        if delay is None:
            self._notify(self.core.state)
            return False
        self._notify("reconnecting")
        await asyncio.sleep(delay)
        return self.core.state not in ("closed", "failed")

    def flush(self) -> None:
        """Loop thread: write every queued frame now, in one socket write when possible."""
        ws = self._ws
        if ws is None or not self.core.outbox or self._drain_task is not None:
            return
        frames = self.core.take_outbox()
        taken = ws.write_frames(frames)
        if taken < len(frames):
            self.core.outbox[:0] = frames[taken:]  # keep the order for the next write
            if ws.paused:  # flow control: resume once the socket buffer drained
                self._drain_task = self.loop.create_task(self._drain(ws))

    async def _drain(self, ws: SdkConnection) -> None:
        try:
            await ws.drain()
        except Exception:  # closed meanwhile: the connection loop requeues the outbox
            pass
        finally:
            self._drain_task = None
        self.flush()

    def _on_frame(self, raw: bytes) -> None:
        """One whole incoming message (from ``data_received``; ``on_batch`` flushes after)."""
        for ev in self.core.receive(raw):
            try:
                self._dispatch(ev)
            except Exception:  # one bad event must not end the receive loop
                log.exception("failed to handle %s", type(ev).__name__)

    def _dispatch(self, ev: object) -> None:
        if isinstance(ev, Completion):
            _settle(ev)
        elif isinstance(ev, Invoke):
            self._invoke(ev)
        elif isinstance(ev, ProviderCall):
            self._provider(ev)
        elif isinstance(ev, Fatal):
            self._notify("failed")
            if self._ws is not None:
                self.loop.create_task(self._ws.close())

    # -- running handlers ------------------------------------------------------------------
    def _span_for(self, ev: Invoke) -> Span | None:
        """The span the handler runs in (``sdk.tracecontext``): its own ``execute <fn>`` span
        with telemetry on; with it off, the received context passed through unchanged (as the
        OpenTelemetry API without an SDK does), or none."""
        if self.telemetry is None:
            parent = parse_traceparent(ev.traceparent)
            if parent is None:
                return None
            return Span(parent[0], parent[1], None, "", start_ns=0, flags=parent[2],
                        baggage=ev.baggage if isinstance(ev.baggage, str) else None)
        attrs: dict[str, Any] = {"iii.function.id": ev.function_id}
        if ev.invocation_id:
            attrs["iii.invocation.id"] = ev.invocation_id
        if self.core.worker_id:
            attrs["iii.worker.id"] = self.core.worker_id
        span = child_span(f"execute {ev.function_id}", ev.traceparent, ev.baggage, time.time_ns(), attrs)
        span.sink = self.telemetry
        return span

    def _invoke(self, ev: Invoke) -> None:
        spec: HandlerSpec = ev.handler
        data = resolve_refs(ev.data, self._channel_end)
        span = self._span_for(ev)
        if spec.is_async:
            coro = spec.call(data, ev.metadata)
            task = self.loop.create_task(coro if span is None else run_coro_in(span, coro))
            task.add_done_callback(functools.partial(self._task_done, ev, span))
        elif span is None:
            self.pool.submit(spec.call, (data, ev.metadata), functools.partial(self._handler_done, ev, span))
        else:
            self.pool.submit(run_in, (span, spec.call, data, ev.metadata),
                             functools.partial(self._handler_done, ev, span))

    def _handler_done(self, ev: Invoke, span: Span | None, value: Any, exc: BaseException | None) -> None:
        """Pool thread: hand the outcome to the loop (batched; the drain flushes)."""
        try:
            self.inbox.post(self._finish, ev, value, exc, span)
        except RuntimeError:
            pass  # the loop is closed: the worker shut down meanwhile

    def _task_done(self, ev: Invoke, span: Span | None, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            self._finish(ev, None, asyncio.CancelledError("handler cancelled"), span)
        else:
            exc = task.exception()
            self._finish(ev, None if exc is not None else task.result(), exc, span)
        self.flush()

    def _finish(self, ev: Invoke, value: Any, exc: BaseException | None, span: Span | None = None) -> None:
        if span is not None and self.telemetry is not None:
            span.end(time.time_ns(), exc)
            self.telemetry.add_span(span)
        if exc is not None:
            if ev.invocation_id is None:
                log.error("void call of %s failed: %s", ev.function_id, exc)
            else:
                self.core.result(ev.invocation_id, ev.function_id, error=handler_error_body(exc))
        elif ev.invocation_id is not None:
            self.core.result(ev.invocation_id, ev.function_id, result=value)

    def _provider(self, ev: ProviderCall) -> None:
        method = provider_method(ev.handler, ev.kind)
        if is_async(method):
            fut: asyncio.Future[Any] = self.loop.create_task(method(ev.trigger))
        else:
            fut = self.pool.run(self.loop, method, ev.trigger)

        def done(f: asyncio.Future[Any]) -> None:
            exc = f.exception() if not f.cancelled() else asyncio.CancelledError()
            if ev.kind == "register":
                err = None if exc is None else provider_error_body(exc)
                self.core.trigger_registration_result(ev.trigger, err)
                self.flush()
            elif exc is not None:
                log.error("unregister_trigger %s failed: %s", ev.trigger.id, exc)
        fut.add_done_callback(done)

    # -- shutdown --------------------------------------------------------------------------
    async def shutdown_async(self) -> None:
        for c in self.core.shutdown():
            _settle(c)
        if self.telemetry is not None:  # what is batched goes out first (≤ 1 s)
            try:
                await self.telemetry.close(1.0)
            except Exception:
                log.debug("telemetry close failed", exc_info=True)
        ws = self._ws
        if ws is not None:
            for _ in range(100):  # write what is already queued (≤ 1 s if flow control holds it)
                self.flush()
                if not self.core.outbox:
                    break
                await asyncio.sleep(0.01)
            await ws.close(1000)
        if self._main is not None:
            self._main.cancel()
            await asyncio.gather(self._main, return_exceptions=True)
        if self.thread is None:  # the caller's loop lives on; only our threads end
            self.pool.shutdown()

    def shutdown(self, timeout: float = 5.0) -> None:
        if self.on_loop():
            raise RuntimeError("shutdown() cannot run on the SDK loop; use shutdown_async()")
        if self.loop.is_closed():
            return
        try:
            asyncio.run_coroutine_threadsafe(self.shutdown_async(), self.loop).result(timeout)
        finally:
            if self.thread is not None:
                self.loop.call_soon_threadsafe(self.loop.stop)
                self.thread.join(timeout)
                self.pool.shutdown()


def _new_loop(use_uvloop: bool) -> asyncio.AbstractEventLoop:
    if use_uvloop:
        try:
            import uvloop

            return uvloop.new_event_loop()
        except ImportError:
            pass
    return asyncio.new_event_loop()
