"""The observability process: the stores, what feeds them, and what they feed.

In: every engine process's telemetry batches on the sink (``brokers.kit.sink``): engine
span records, the SDK frames its workers sent (``OTLP``/``LOGS``/``MTRC`` + OTLP JSON, on
``/otel`` or the worker socket) and each process's stats once a second; and the
``engine::log::*`` calls (``api.py`` declares every function of workers-b.md §4.3).
Out: the ``log`` trigger (each stored log, to every binding whose level matches), the
``trace`` trigger (trace ids coalesced over 300 ms), alert actions (``alerting.py``), and
Prometheus ``/metrics``, ``/healthz``, ``/readyz`` on the configured port (``web.py``).

Invariants: ingest never calls out synchronously and never blocks the loop for long (a
batch is parsed and stored in one pass); stores are bounded by the config's counts; a
process that stops sending stats is not ready after ``STALE_S``; this process's own death
costs the others nothing (their links drop and count, see ``brokers.kit.sink``).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import psutil

from brokers.kit import listen
from brokers.kit.broker import Broker, run
from brokers.kit.config import ENGINE_VERSION
from brokers.kit.sink import Sink
from brokers.kit.units import RunContext
from brokers.observability import api, export, otlp, prom
from brokers.observability.alerting import Alerting
from brokers.observability.logs import LogStore, level_matches
from brokers.observability.metrics import MetricStore, engine_metrics
from brokers.observability.spans import SpanStore
from brokers.observability.tracetrigger import TraceCoalescer

if TYPE_CHECKING:
    from brokers.observability.web import MetricsServer

log = logging.getLogger(__name__)
sdk_log = logging.getLogger("iii.sdk")

STALE_S = 3.0
PRUNE_S = 60.0
TRACE_TICK_S = 0.1
_CONSOLE = {1: logging.DEBUG, 5: logging.DEBUG, 9: logging.INFO, 13: logging.WARNING, 17: logging.ERROR}


class Observability(Broker):
    """Spans, logs and metrics of the engine and its SDKs."""

    def __init__(self, ctx: RunContext, **kw: Any) -> None:
        super().__init__(ctx, **kw)
        cfg = self.cfg = ctx.config
        self.resource = {"service.name": cfg["service_name"], "service.version": cfg["service_version"]}
        if cfg["service_namespace"]:
            self.resource["service.namespace"] = cfg["service_namespace"]
        self._spans = SpanStore(cfg["memory_max_spans"], cfg["collapse_spans"])
        self._raw: deque[tuple[str, list]] = deque()
        """Engine span records not yet in the store, by batch: ``(service, records)``."""
        self._raw_count = 0
        self.logs = LogStore(cfg["logs_max_count"], cfg["logs_retention_seconds"])
        self.metrics = MetricStore(cfg["metrics_max_count"], cfg["metrics_retention_seconds"])
        self.alerting = Alerting(self, cfg["alerts"], cfg["webhook_security"])
        self.stats: dict[str, dict] = {}
        self.totals = prom.Totals()
        self.coalescer = TraceCoalescer()
        self.received = {"spans": 0, "logs": 0, "metrics": 0, "undecodable": 0}
        self.sink = Sink(ctx.runtime_dir, self.ingest)
        self.exporter = export.Exporter(cfg) if export.wanted(cfg) else None
        """OTLP export (``exporter`` / ``logs_exporter``: otlp or both), with the OpenTelemetry SDK."""
        self.web: MetricsServer | None = None
        self._timers: list[asyncio.TimerHandle] = []

    # ---- life ---------------------------------------------------------------------------

    async def setup(self) -> None:
        api.declare(self)
        self.trigger_type("log", "Fires for every stored log entry (config: level)",
                          on_register=lambda b: None, on_unregister=lambda i: None)
        self.trigger_type("trace", "Fires with the ids of traces that received spans (config: service_name, status)",
                          on_register=lambda b: None, on_unregister=lambda i: None)
        if self.cfg["prometheus_port"]:
            from brokers.observability.web import MetricsServer  # aiohttp: only with a port
            sock = listen.listener(self.cfg["prometheus_host"], self.cfg["prometheus_port"])
            self.web = MetricsServer(sock, self.exposition, self.readiness)

    async def started(self) -> None:
        self.sink.start()
        if self.exporter is not None:
            self.exporter.start()
        await super().started()
        if self.web is not None:
            await self.web.start()
        loop = asyncio.get_running_loop()
        self._every(loop, PRUNE_S, self.prune)
        self._every(loop, TRACE_TICK_S, self._trace_tick)
        self._every(loop, self.alerting.EVERY_S, self.alerting.tick)

    def _every(self, loop: asyncio.AbstractEventLoop, seconds: float, fn) -> None:
        def tick() -> None:
            try:
                fn()
            except Exception:
                log.exception("periodic %s failed", getattr(fn, "__name__", fn))
            self._timers.append(loop.call_later(seconds, tick))
        self._timers.append(loop.call_later(seconds, tick))

    async def stopping(self) -> None:
        for timer in self._timers:
            timer.cancel()
        if self.web is not None:
            await self.web.close()
        self.sink.close()
        await self.alerting.close()
        if self.exporter is not None:
            await self.exporter.close()

    # ---- ingest -------------------------------------------------------------------------

    def ingest(self, batch: dict) -> None:
        """One process's telemetry batch (``brokers.kit.sink``)."""
        stats = batch.get("stats")
        if isinstance(stats, dict):
            stats.update(process=batch.get("p"), unit=batch.get("u"), pid=batch.get("pid"))
            self.stats[str(batch.get("p"))] = stats
        stored: list[dict] = []
        service = batch.get("svc") or self.cfg["service_name"]
        records = batch.get("spans")
        if records:
            self.received["spans"] += len(records)
            if self.exporter is None and not self.trigger_types["trace"].bindings:
                self._keep_raw(service, records)
            else:
                stored = self._stored(service, records)
        now_ns = time.time_ns()
        for blob in batch.get("blobs") or ():
            parsed = otlp.parse_blob(blob) if isinstance(blob, bytes) else None
            if parsed is None:
                self.received["undecodable"] += 1
                continue
            kind, doc = parsed
            if kind == "OTLP":
                sdk_spans = otlp.spans_from_otlp(doc)
                self.received["spans"] += len(sdk_spans)
                stored += sdk_spans
            elif kind == "LOGS":
                if self.cfg["logs_enabled"]:
                    for entry in otlp.logs_from_otlp(doc, now_ns):
                        self.store_log(entry, console=self.cfg["logs_console_output"])
            elif kind == "MTRC":
                items = otlp.metrics_from_otlp(doc, now_ns)
                self.received["metrics"] += self.metrics.add(items, now_ns)
        if stored:
            self._spans.add(stored)
            if self.exporter is not None:
                self.exporter.spans(stored)
            if self.trigger_types["trace"].bindings:
                self.coalescer.offer(stored, time.monotonic())

    # Engine spans are kept as the records they came as until someone reads the store: at
    # every routed call one arrives, and turning each into a StoredSpan at once cost the
    # observability process 14-36 us per call (tracing_overhead); most are never read.
    # Eagerly only when something consumes them as they come (trace triggers, OTLP export).

    def _keep_raw(self, service: str, records: list) -> None:
        self._raw.append((service, records))
        self._raw_count += len(records)
        cap = self.cfg["memory_max_spans"]
        while self._raw_count - len(self._raw[0][1]) >= cap:  # whole old batches past the cap
            self._raw_count -= len(self._raw.popleft()[1])

    @staticmethod
    def _stored(service: str, records: list) -> list[dict]:
        spans = (otlp.span_from_record(rec, service) for rec in records)
        return [span for span in spans if span is not None]

    @property
    def spans(self) -> SpanStore:
        """The span store, with every record received so far in it."""
        raw = self._raw
        while raw:
            service, records = raw.popleft()
            self._spans.add(self._stored(service, records))
        self._raw_count = 0
        return self._spans

    def store_log(self, entry: dict, console: bool = False) -> dict:
        """Keep a log and fire the ``log`` triggers whose level matches (§4.4)."""
        entry = self.logs.add(entry)
        self.received["logs"] += 1
        if self.exporter is not None:
            self.exporter.logs([entry])
        if console:
            sdk_log.log(_CONSOLE.get(entry.get("severity_number"), logging.INFO), "[%s] %s",
                        entry.get("service_name"), entry.get("body"))
        for binding in self.trigger_types["log"].bindings.values():
            if level_matches(binding.get("config"), entry):
                # the binding's namespace (the reference invokes in "default" whatever it is)
                self.call_void(binding["function_id"], entry, namespace=binding["namespace"],
                               metadata=binding.get("metadata"))
        return entry

    def _trace_tick(self) -> None:
        bindings = self.trigger_types["trace"].bindings
        for binding_id, payload in self.coalescer.due(time.monotonic(), bindings):
            binding = bindings.get(binding_id)
            if binding is not None:
                self.call_void(binding["function_id"], payload, namespace=binding["namespace"],
                               metadata=binding.get("metadata"))

    def prune(self) -> None:
        now_ns = time.time_ns()
        self.logs.prune(now_ns)
        self.metrics.prune(now_ns)

    # ---- figures ------------------------------------------------------------------------

    def engine_metrics(self) -> dict:
        return engine_metrics(self.totals.apply(self.stats), self.spans.durations_ms())

    def exposition(self) -> bytes:
        extra = {"telemetry_batches_received_total": self.sink.received,
                 "telemetry_undecodable_total": self.sink.undecodable + self.received["undecodable"],
                 "spans_received_total": self.received["spans"], "logs_received_total": self.received["logs"],
                 "spans_stored": len(self._spans) + self._raw_count, "logs_stored": len(self.logs),
                 "sdk_metrics_stored": len(self.metrics)}
        return prom.exposition(self.totals.apply(self.stats), time.time(), extra, STALE_S)

    def readiness(self) -> tuple[bool, dict]:
        return prom.readiness(self.ctx.peers, self.stats, time.time(), psutil.pid_exists, STALE_S)

    def health(self) -> dict:
        """``engine::health::check`` (§4.3): never fails."""
        def ok(details: Any) -> dict:
            return {"status": "healthy", "details": details}
        return {"status": "healthy",
                "components": {"otel": ok({"enabled": True, "service_name": self.cfg["service_name"],
                                           "exporter": self.cfg["exporter"]}),
                               "metrics": ok({"stored_metrics": len(self.metrics)}),
                               "logs": ok({"stored_logs": len(self.logs)}),
                               "spans": ok({"stored_spans": len(self.spans), "hot_bytes": self.spans.hot_bytes(),
                                            "archive": self.spans.status()})},
                "timestamp": int(time.time() * 1000), "version": ENGINE_VERSION}


def main(ctx: RunContext) -> None:
    """Entry point of the observability process."""
    run(Observability, ctx)
