"""OTLP export of stored spans and logs (workers-b.md §4.1 ``exporter``/``logs_exporter: otlp|both``).

Owns: turning StoredSpan / StoredLog dicts (§4.2) into the OpenTelemetry SDK's own records
(``ReadableSpan``, ``ReadWriteLogRecord``) and handing them to the SDK's batch processors,
which send them with the SDK's OTLP exporters over HTTP/protobuf to ``<endpoint>/v1/traces``
and ``<endpoint>/v1/logs`` (``endpoint`` is a base URL, default ``http://localhost:4318``).
No hand-written encoder: the wire format is the exporters'.

Optional dependency: opentelemetry is imported here only, when an Exporter is built. If the
packages are missing, one error names the ``otlp`` extra and the Exporter does nothing (the
engine keeps its memory stores); the engine itself imports and runs without them.

Invariants: ``spans()`` / ``logs()`` never block the event loop and never raise: they convert
(some 30 µs a span, 50 µs a log, on the loop) and append to the SDK processor's in-memory
queue; export, retries and network I/O happen on the processor's own thread. That queue is bounded by the SDK's
``max_queue_size`` (2048 by default, ``OTEL_BSP_MAX_QUEUE_SIZE`` / ``OTEL_BLRP_MAX_QUEUE_SIZE``,
at least ``logs_batch_size``): when the collector is slow or down, overflow is dropped by the
SDK (its "Queue full" warning is rate-limited here to one per ``_WARN_EVERY_S``). Pending spans
(``pending: true``) are not exported; their completed replacement is. ``close()`` flushes and
stops the threads off the loop. Span kind is not kept in StoredSpan: spans go out as INTERNAL.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

EXTRA = "otlp"
DEFAULT_ENDPOINT = "http://localhost:4318"
_EXPORTING = ("otlp", "both")
_STATUS = {"ok": 1, "error": 2}
_CACHE_MAX = 256
_WARN_EVERY_S = 10.0
GRACE_S = 5.0


class _RateLimit(logging.Filter):
    """Let one SDK "Queue full" warning through per period (the SDK logs one per dropped item)."""

    def __init__(self, every_s: float) -> None:
        super().__init__()
        self.every_s, self.last = every_s, float("-inf")

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("Queue full"):
            return True
        now = time.monotonic()
        if now - self.last < self.every_s:
            return False
        self.last = now
        return True


def wanted(cfg: dict) -> bool:
    """Whether the config asks for any OTLP export (the service builds an Exporter only then)."""
    return cfg.get("exporter") in _EXPORTING or cfg.get("logs_exporter") in _EXPORTING


class Exporter:
    """Spans and logs to an OTLP/HTTP collector through the OpenTelemetry SDK."""

    def __init__(self, cfg: dict) -> None:
        self.cfg = cfg
        self.endpoint = (cfg.get("endpoint") or DEFAULT_ENDPOINT).rstrip("/")
        self.export_spans = cfg.get("exporter") in _EXPORTING
        self.export_logs = cfg.get("logs_exporter") in _EXPORTING
        self.available = False
        self.failed = 0              # items that could not be converted (skipped)
        self._span_proc: Any = None
        self._log_proc: Any = None
        self._exporters: list[Any] = []
        self._cache: dict[tuple, Any] = {}   # resources and scopes, by value
        try:
            import opentelemetry.sdk.trace as sdk_trace
            import opentelemetry.trace as api_trace
            from opentelemetry._logs import LogRecord, SeverityNumber
            from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk._logs import LogRecordLimits, ReadWriteLogRecord
            from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
            from opentelemetry.sdk.util.instrumentation import InstrumentationScope
        except ImportError as exc:
            log.error("OTLP export is configured (exporter=%s, logs_exporter=%s) but the OpenTelemetry "
                      "packages are missing (%s): install them with pip install 'iii-engine[%s]'; "
                      "continuing with the memory stores only",
                      cfg.get("exporter"), cfg.get("logs_exporter"), exc, EXTRA)
            return
        self._t, self._sdk_t = api_trace, sdk_trace
        self._LogRecord, self._Severity, self._ReadWrite = LogRecord, SeverityNumber, ReadWriteLogRecord
        self._Resource, self._Scope = Resource, InstrumentationScope
        self._limits = LogRecordLimits()        # once: its defaults read the environment
        self._make = (OTLPSpanExporter, BatchSpanProcessor, OTLPLogExporter, BatchLogRecordProcessor)
        self.available = True

    # ---- life ---------------------------------------------------------------------------

    def start(self) -> None:
        """Build the exporters and processors (their threads start now). Idempotent."""
        if not self.available or self._span_proc is not None or self._log_proc is not None:
            return
        span_exporter, span_proc, log_exporter, log_proc = self._make
        self._exporters = []
        sdk_log = logging.getLogger("opentelemetry.sdk._shared_internal")
        if not any(isinstance(f, _RateLimit) for f in sdk_log.filters):
            sdk_log.addFilter(_RateLimit(_WARN_EVERY_S))
        if self.export_spans:
            self._exporters.append(span_exporter(endpoint=f"{self.endpoint}/v1/traces"))
            self._span_proc = span_proc(self._exporters[-1])
        if self.export_logs:
            batch = int(self.cfg.get("logs_batch_size") or 100)
            log_proc_kw = {"schedule_delay_millis": int(self.cfg.get("logs_flush_interval_ms") or 5000),
                           "max_export_batch_size": batch}
            queue = getattr(log_proc, "_default_max_queue_size", lambda: 2048)()   # the env-aware default
            if queue < batch:
                log_proc_kw["max_queue_size"] = batch
            self._exporters.append(log_exporter(endpoint=f"{self.endpoint}/v1/logs"))
            self._log_proc = log_proc(self._exporters[-1], **log_proc_kw)
        log.info("OTLP export to %s (spans: %s, logs: %s)", self.endpoint, self.export_spans, self.export_logs)

    def shutdown(self, grace_s: float = GRACE_S) -> None:
        """Flush what is queued and stop the processors' threads (blocking: call off the loop).

        Both processors flush at once; after ``grace_s`` (a slow or dead collector) the
        exporters are shut down, which aborts their retries, and what is left is dropped.
        """
        procs = [p for p in (self._span_proc, self._log_proc) if p is not None]
        self._span_proc = self._log_proc = None
        if not procs:
            return
        threads = [threading.Thread(target=self._stop, args=(p,), name="otlp-shutdown", daemon=True) for p in procs]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + grace_s
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(thread.is_alive() for thread in threads):
            log.warning("OTLP collector at %s did not take the last batches within %.0f s: dropping them",
                        self.endpoint, grace_s)
            for exporter in self._exporters:
                self._stop(exporter)
            for thread in threads:
                thread.join(2.0)

    @staticmethod
    def _stop(part: Any) -> None:
        try:
            part.shutdown()
        except Exception:
            log.exception("OTLP exporter shutdown failed")

    async def close(self, grace_s: float = GRACE_S) -> None:
        """``shutdown()`` on a thread, so the loop keeps running while the last batch goes out."""
        if self._span_proc is not None or self._log_proc is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.shutdown, grace_s)

    def force_flush(self, timeout_ms: int = 5000) -> bool:
        """Export what is queued now (blocking; tests and shutdown paths only)."""
        ok = True
        for proc in (self._span_proc, self._log_proc):
            if proc is not None:
                ok = bool(proc.force_flush(timeout_ms)) and ok
        return ok

    # ---- feed ---------------------------------------------------------------------------

    def spans(self, spans: list[dict]) -> None:
        """Queue completed StoredSpans for export (pending ones are skipped)."""
        proc = self._span_proc
        if proc is None:
            return
        for span in spans:
            if span.get("pending") or not span.get("end_time_unix_nano"):
                continue
            try:
                readable = self._span(span)
            except Exception:
                self.failed += 1
                continue
            proc.on_end(readable)

    def logs(self, logs: list[dict]) -> None:
        """Queue StoredLogs for export."""
        proc = self._log_proc
        if proc is None:
            return
        for entry in logs:
            try:
                record = self._log(entry)
            except Exception:
                self.failed += 1
                continue
            proc.on_emit(record)

    # ---- conversion ---------------------------------------------------------------------

    def _context(self, trace_id: str, span_id: str, flags: Any = None, trace_state: Any = None,
                 remote: bool = False) -> Any:
        t = self._t
        state = t.TraceState.from_header([trace_state]) if isinstance(trace_state, str) and trace_state else None
        sampled = (int(flags) & 0xFF if isinstance(flags, int) else 0) | t.TraceFlags.SAMPLED
        return t.SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=remote,
                             trace_flags=t.TraceFlags(sampled), trace_state=state)

    def _cached(self, key: tuple, make) -> Any:
        value = self._cache.get(key)
        if value is None:
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            value = self._cache[key] = make()
        return value

    def _resource(self, service_name: str, extra: dict | None = None) -> Any:
        key = ("r", service_name, *(extra or {}).items())
        try:
            return self._cache[key]
        except (KeyError, TypeError):
            pass
        attrs = {str(k): str(v) for k, v in (extra or {}).items()}
        attrs["service.name"] = service_name
        if service_name == self.cfg.get("service_name"):
            for name, cfg_key in (("service.version", "service_version"), ("service.namespace", "service_namespace")):
                if self.cfg.get(cfg_key) and name not in attrs:
                    attrs[name] = self.cfg[cfg_key]
        try:
            return self._cached(key, lambda: self._Resource(attrs))
        except TypeError:                      # an unhashable resource value: build it uncached
            return self._Resource(attrs)

    def _scope(self, item: dict) -> Any:
        name = item.get("instrumentation_scope_name")
        if not isinstance(name, str) or not name:
            name, version = "iii", self.cfg.get("service_version")
        else:
            version = item.get("instrumentation_scope_version") or None
        return self._cached(("s", name, version), lambda: self._Scope(name, version))

    def _span(self, span: dict) -> Any:
        t, sdk = self._t, self._sdk_t
        trace_id = span["trace_id"]
        parent_id = span.get("parent_span_id")
        parent = self._context(trace_id, parent_id) if parent_id else None
        status = _STATUS.get(span.get("status"), 0)
        description = span.get("status_description") if status == 2 else None
        events = [sdk.Event(ev.get("name") or "", dict(ev.get("attributes") or ()),
                            ev.get("timestamp_unix_nano") or None) for ev in span.get("events") or ()]
        links = [t.Link(self._context(ln["trace_id"], ln["span_id"], trace_state=ln.get("trace_state")),
                        dict(ln.get("attributes") or ()))
                 for ln in span.get("links") or () if ln.get("trace_id") and ln.get("span_id")]
        return sdk.ReadableSpan(
            name=span["name"],
            context=self._context(trace_id, span["span_id"], span.get("flags"), span.get("trace_state")),
            parent=parent, resource=self._resource(span.get("service_name") or "unknown"),
            attributes=dict(span.get("attributes") or ()), events=events, links=links,
            status=t.Status(t.StatusCode(status), description),
            start_time=span["start_time_unix_nano"], end_time=span["end_time_unix_nano"],
            instrumentation_scope=self._scope(span))

    def _log(self, entry: dict) -> Any:
        t = self._t
        trace_id, span_id = entry.get("trace_id"), entry.get("span_id")
        kw: dict[str, Any] = {}
        if trace_id and span_id:
            ctx = t.NonRecordingSpan(self._context(trace_id, span_id, remote=True))
            kw["context"] = t.set_span_in_context(ctx)
        number = entry.get("severity_number")
        severity = self._Severity(number) if isinstance(number, int) and 0 <= number <= 24 else None
        record = self._LogRecord(
            timestamp=entry.get("timestamp_unix_nano") or None,
            observed_timestamp=entry.get("observed_timestamp_unix_nano") or None,
            severity_text=entry.get("severity_text") or None, severity_number=severity,
            body=entry.get("body"), attributes=dict(entry.get("attributes") or {}), **kw)
        if trace_id and not span_id:
            record.trace_id = int(trace_id, 16)
        resource = entry.get("resource") if isinstance(entry.get("resource"), dict) else {}
        service = entry.get("service_name") or resource.get("service.name") or "unknown"
        return self._ReadWrite(record, self._resource(service, resource), self._scope(entry), self._limits)
