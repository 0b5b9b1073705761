"""The worker's telemetry socket: one extra WebSocket to ``<engine url>/otel`` (protocol.md
§9.2) carrying the SDK's spans, logs and worker metrics as binary OTLP frames (``sdk.otlp``).

Owns the socket (never registered as a worker: it sends nothing but binary frames), its
reconnect loop (1 s doubling to 30 s, ±30 % jitter), the batching of spans and log records
(collected from any thread, encoded on the loop every ``flush_interval_s``: one frame per
kind per batch), the frame buffer and the metrics timer.

Invariants:
- ``add_span`` / ``add_log`` never block and never raise into user code; they take a lock
  for an append and wake the loop at most once per batch.
- At most ``MAX_FRAMES`` (1000) frames wait while the socket is down; the oldest go first
  (counted in ``buffer.dropped``).
- ``close`` flushes what is batched, waits for the buffer to drain at most ``timeout``
  seconds while connected, then closes the socket; nothing is written after it.
"""
from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections import deque
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import connect

from sdk import otlp
from sdk.options import ReconnectionConfig, TelemetryConfig, backoff_delay_ms
from sdk.tracecontext import Span
from sdk.workermetrics import WorkerMetrics

log = logging.getLogger(__name__)

MAX_FRAMES = 1000
MAX_SPANS_PER_FRAME = 512
BACKOFF = ReconnectionConfig(initial_delay_ms=1000, max_delay_ms=30_000)


def otel_url(engine_url: str) -> str:
    """The engine address with ``/otel`` appended to its path (query kept)."""
    parts = urlsplit(engine_url)
    path = parts.path.rstrip("/")
    if not path.endswith("/otel"):
        path += "/otel"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


class FrameBuffer:
    """Frames waiting for the socket: bounded, the oldest dropped (pure)."""

    def __init__(self, limit: int = MAX_FRAMES) -> None:
        self.frames: deque[bytes] = deque()
        self.limit = limit
        self.dropped = 0

    def push(self, data: bytes) -> None:
        if len(self.frames) >= self.limit:
            self.frames.popleft()
            self.dropped += 1
        self.frames.append(data)

    def __len__(self) -> int:
        return len(self.frames)


class Telemetry:
    def __init__(self, loop: asyncio.AbstractEventLoop, engine_url: str, headers: dict[str, str],
                 config: TelemetryConfig, worker_id: Callable[[], str | None] = lambda: None) -> None:
        self.loop = loop
        self.url = otel_url(engine_url)
        self.headers = headers
        self.config = config
        self.resource = otlp.resource(config.service_name, config.resource_attributes)
        self._resources: dict[str, dict[str, Any]] = {config.service_name: self.resource}
        self.buffer = FrameBuffer()
        self.metrics = WorkerMetrics(time.monotonic(), time.process_time())
        self._worker_id = worker_id
        self._lock = threading.Lock()
        self._spans: list[Span] = []
        self._logs: list[tuple[dict[str, Any], dict[str, Any]]] = []
        self._scheduled = False
        self._closed = False
        self._ws: Any = None
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self.connected = False

    # -- any thread ------------------------------------------------------------------------
    def add_span(self, span: Span) -> None:
        if span.sampled:
            self._add(self._spans, span)

    def add_log(self, level: str, message: Any, data: Any, span: Span | None,
                service_name: str | None = None) -> None:
        try:
            rec = otlp.log_record(level, message, data, span, time.time_ns())
            self._add(self._logs, (self._resource_for(service_name), rec))
        except Exception:  # a log line must never break its caller
            log.debug("telemetry log dropped", exc_info=True)

    def _resource_for(self, service_name: str | None) -> dict[str, Any]:
        if not service_name:
            return self.resource
        res = self._resources.get(service_name)
        if res is None:
            res = otlp.resource(service_name, self.config.resource_attributes)
            self._resources[service_name] = res
        return res

    def _add(self, bucket: list[Any], item: Any) -> None:
        with self._lock:
            if self._closed:
                return
            bucket.append(item)
            wake = not self._scheduled
            self._scheduled = True
        if wake:
            try:
                self.loop.call_soon_threadsafe(self._schedule)
            except RuntimeError:  # the loop is closed: the worker shut down meanwhile
                pass

    # -- loop thread -----------------------------------------------------------------------
    def start(self) -> None:
        self._tasks.append(self.loop.create_task(self._connection_loop()))
        if self.config.metrics_enabled and self.config.metrics_interval_s > 0:
            self._tasks.append(self.loop.create_task(self._metrics_loop()))

    def _schedule(self) -> None:
        self.loop.call_later(self.config.flush_interval_s, self.flush_batches)

    def flush_batches(self) -> None:
        """Encode what was collected into frames and hand them to the writer."""
        with self._lock:
            spans, self._spans = self._spans, []
            logs, self._logs = self._logs, []
            self._scheduled = False
        try:
            for i in range(0, len(spans), MAX_SPANS_PER_FRAME):
                self._push(otlp.frame(otlp.PREFIX_SPANS,
                                      otlp.spans_request(spans[i:i + MAX_SPANS_PER_FRAME], self.resource)))
            if logs:
                self._push(otlp.frame(otlp.PREFIX_LOGS, otlp.logs_request(logs)))
        except Exception:
            log.warning("telemetry batch dropped: encoding failed", exc_info=True)

    def _push(self, data: bytes) -> None:
        self.buffer.push(data)
        self._wake.set()

    def push_metrics(self) -> None:
        wid = self._worker_id()
        attrs = {"iii.worker.id": wid} if wid else None
        gauges = self.metrics.sample(time.monotonic(), time.process_time(), time.time_ns(), attrs)
        self._push(otlp.frame(otlp.PREFIX_METRICS, otlp.metrics_request(gauges, self.resource)))

    async def _metrics_loop(self) -> None:
        interval = self.config.metrics_interval_s
        probe = min(1.0, interval)
        next_export = self.loop.time() + interval
        while not self._closed:
            expected = self.loop.time() + probe
            await asyncio.sleep(probe)
            self.metrics.lag((self.loop.time() - expected) * 1000.0)
            if self.loop.time() >= next_export:
                next_export += interval
                try:
                    self.push_metrics()
                except Exception:
                    log.debug("worker metrics sample failed", exc_info=True)

    async def _connection_loop(self) -> None:
        attempt = 0
        while not self._closed:
            try:
                ws = await connect(self.url, additional_headers=self.headers or None, compression=None,
                                   proxy=None, open_timeout=10, max_size=2 ** 20)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # warned once per outage, then quietly retried
                log.log(logging.WARNING if attempt == 0 else logging.DEBUG, "telemetry connect to %s failed: "
                        "%s: %s (retrying, 1 s to 30 s)", self.url, type(exc).__name__, exc)
                await asyncio.sleep(backoff_delay_ms(BACKOFF, attempt, random.random()) / 1000.0)
                attempt += 1
                continue
            attempt = 0
            self._ws, self.connected = ws, True
            try:
                await self._write_until_closed(ws)
            finally:
                self._ws, self.connected = None, False
            if not self._closed:
                log.info("telemetry connection to %s closed (code=%s)", self.url, ws.close_code)
                await asyncio.sleep(backoff_delay_ms(BACKOFF, 0, random.random()) / 1000.0)

    async def _write_until_closed(self, ws: Any) -> None:
        closed = asyncio.ensure_future(ws.wait_closed())
        try:
            while True:
                while self.buffer.frames:
                    data = self.buffer.frames[0]
                    try:
                        await ws.send(data)
                    except Exception:  # closed meanwhile: the frame stays for the next socket
                        return
                    if self.buffer.frames and self.buffer.frames[0] is data:
                        self.buffer.frames.popleft()
                self._wake.clear()
                woke = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait({woke, closed}, return_when=asyncio.FIRST_COMPLETED)
                woke.cancel()
                if closed.done():
                    return
        finally:
            closed.cancel()

    async def close(self, timeout: float = 1.0) -> None:
        """Flush what is batched, wait (bounded) for the buffer to drain, close the socket."""
        self.flush_batches()
        with self._lock:
            self._closed = True
        deadline = self.loop.time() + timeout
        while self.buffer.frames and self.connected and self.loop.time() < deadline:
            await asyncio.sleep(0.01)
        ws = self._ws
        if ws is not None:
            try:
                await asyncio.wait_for(ws.close(1000), max(0.1, deadline - self.loop.time()))
            except Exception:
                pass
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
