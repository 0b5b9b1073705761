"""The asyncio shell around ``sdk.core.Core``: one background thread with its own event loop.

Owns the WebSocket (websockets 17 asyncio client, 64 MiB messages, no compression), the
reconnect loop, the writer task, the deadline timer and the running of handlers: ``async
def`` handlers on the loop, sync ones in a thread pool (so a sync handler may block in
``iii.trigger`` while the loop keeps reading). Invariants: ``Core`` is only touched on the
loop thread; every other thread goes through ``call_soon_threadsafe``; a waiter is either a
``concurrent.futures.Future`` (sync callers) or an ``asyncio.Future`` of this loop.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import random
import threading
from typing import Any, Callable

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from sdk.codec import MAX_MESSAGE_BYTES
from sdk.core import Completion, Core, Fatal, Invoke, ProviderCall, handler_error_body
from sdk.pool import HandlerPool

log = logging.getLogger(__name__)

HOLD_FALLBACK_S = 5.0


class HandlerSpec:
    """A user handler with what the shell needs to call it (decided once, at registration)."""

    __slots__ = ("fn", "is_async", "meta_mode")

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None))
        self.meta_mode = metadata_mode(fn)

    def call(self, data: Any, metadata: Any) -> Any:
        if self.meta_mode == "positional":
            return self.fn(data, metadata)
        if self.meta_mode == "keyword":
            return self.fn(data, metadata=metadata)
        return self.fn(data)


def metadata_mode(fn: Callable[..., Any]) -> str:
    """§5.6: only a parameter literally named ``metadata`` receives the sidecar."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return "none"
    param = params.get("metadata")
    if param is None:
        return "none"
    if param.kind == inspect.Parameter.KEYWORD_ONLY:
        return "keyword"
    positional = [p for p in params.values()
                  if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    return "positional" if len(positional) >= 2 and positional[1].name == "metadata" else "none"


def _settle(c: Completion) -> None:
    w = c.waiter
    if w is None or w.done():
        return
    if c.error is not None:
        w.set_exception(c.error)
    else:
        w.set_result(c.result)


class Shell:
    def __init__(self, core: Core, url: str, headers: dict[str, str], *, daemon: bool = False,
                 handler_threads: int = 64, use_uvloop: bool = True) -> None:
        self.core = core
        self.url = url
        self.headers = headers
        self.loop = _new_loop(use_uvloop)
        self.pool = HandlerPool(handler_threads)
        self.connected = threading.Event()
        self._ws: ClientConnection | None = None
        self._wake: asyncio.Event | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._main: asyncio.Task[None] | None = None
        self._listeners: list[Callable[[str], None]] = []
        self.thread = threading.Thread(target=self._run, name="iii-sdk-loop", daemon=daemon)
        self.thread.start()

    # -- thread plumbing -----------------------------------------------------------------
    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self._main = self.loop.create_task(self._connection_loop())
        self.loop.run_forever()
        # drain callbacks that were scheduled during shutdown, then close
        self.loop.run_until_complete(asyncio.sleep(0))
        self.loop.close()

    def on_loop(self) -> bool:
        return threading.current_thread() is self.thread

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop thread (now if already there), then flush frames."""
        if self.on_loop():
            fn(*args)
            self.flush()
        else:
            self.loop.call_soon_threadsafe(self._submitted, fn, args)

    def _submitted(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("SDK operation failed")
        self.flush()

    def add_listener(self, fn: Callable[[str], None]) -> None:
        self._listeners.append(fn)

    def _notify(self, state: str) -> None:
        for fn in list(self._listeners):
            try:
                fn(state)
            except Exception:
                log.exception("connection state listener failed")

    # -- calls -----------------------------------------------------------------------------
    def start_call(self, kwargs: dict[str, Any], waiter: Any) -> None:
        """Loop thread: hand one call to the core and arm its deadline."""
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
        self.flush()

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
                                   open_timeout=10)
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
            self._wake = asyncio.Event()
            core.connection_made()
            # If the engine never answers the metadata call, stop holding calls after the
            # engine's own namespace grace period (5 s, protocol.md §4.1).
            self.loop.call_later(HOLD_FALLBACK_S, self._release_hold, core.epoch)
            writer = asyncio.create_task(self._writer(ws, self._wake))
            self.connected.set()
            self._notify("connected")
            log.info("connected to %s", self.url)
            try:
                async for raw in ws:
                    self._on_frame(raw)
            except ConnectionClosed:
                pass
            finally:
                writer.cancel()
                self._ws = self._wake = None
                self.connected.clear()
            core.connection_lost()
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
        if self.core.outbox and self._wake is not None:
            self._wake.set()

    async def _writer(self, ws: ClientConnection, wake: asyncio.Event) -> None:
        frames: list[str] = []
        i = 0
        try:
            while True:
                await wake.wait()
                wake.clear()
                while self.core.outbox:
                    frames, i = self.core.take_outbox(), 0
                    for i, text in enumerate(frames):
                        await ws.send(text)
                    frames = []
        except (ConnectionClosed, asyncio.CancelledError):
            if frames:
                self.core.requeue(frames[i:])
            raise

    def _on_frame(self, raw: str | bytes) -> None:
        for ev in self.core.receive(raw):
            try:
                self._dispatch(ev)
            except Exception:  # one bad event must not end the receive loop
                log.exception("failed to handle %s", type(ev).__name__)
        self.flush()

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
    def _invoke(self, ev: Invoke) -> None:
        spec: HandlerSpec = ev.handler
        if spec.is_async:
            fut: asyncio.Future[Any] = self.loop.create_task(spec.call(ev.data, ev.metadata))
        else:
            fut = self.pool.run(self.loop, spec.call, ev.data, ev.metadata)
        fut.add_done_callback(lambda f: self._finish(ev, f))

    def _finish(self, ev: Invoke, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled():
            exc: BaseException | None = asyncio.CancelledError("handler cancelled")
        else:
            exc = fut.exception()
        if exc is not None:
            if ev.invocation_id is None:
                log.error("void call of %s failed: %s", ev.function_id, exc)
            else:
                self.core.result(ev.invocation_id, ev.function_id, error=handler_error_body(exc))
        elif ev.invocation_id is not None:
            self.core.result(ev.invocation_id, ev.function_id, result=fut.result())
        self.flush()

    def _provider(self, ev: ProviderCall) -> None:
        method = getattr(ev.handler, "register_trigger" if ev.kind == "register" else "unregister_trigger")
        if inspect.iscoroutinefunction(method):
            fut: asyncio.Future[Any] = self.loop.create_task(method(ev.trigger))
        else:
            fut = self.pool.run(self.loop, method, ev.trigger)

        def done(f: asyncio.Future[Any]) -> None:
            exc = f.exception() if not f.cancelled() else asyncio.CancelledError()
            if ev.kind == "register":
                err = None if exc is None else {"code": "trigger_registration_failed", "message": str(exc)}
                self.core.trigger_registration_result(ev.trigger, err)
                self.flush()
            elif exc is not None:
                log.error("unregister_trigger %s failed: %s", ev.trigger.id, exc)
        fut.add_done_callback(done)

    # -- shutdown --------------------------------------------------------------------------
    async def shutdown_async(self) -> None:
        for c in self.core.shutdown():
            _settle(c)
        ws = self._ws
        if ws is not None:
            for _ in range(100):  # let the writer flush what is already queued (≤ 1 s)
                if not self.core.outbox:
                    break
                self.flush()
                await asyncio.sleep(0.01)
            await ws.close(1000)
        if self._main is not None:
            self._main.cancel()
            await asyncio.gather(self._main, return_exceptions=True)

    def shutdown(self, timeout: float = 5.0) -> None:
        if self.on_loop():
            raise RuntimeError("shutdown() cannot run on the SDK loop; use shutdown_async()")
        if self.loop.is_closed():
            return
        try:
            asyncio.run_coroutine_threadsafe(self.shutdown_async(), self.loop).result(timeout)
        finally:
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
