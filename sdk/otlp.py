"""OTLP/JSON documents the SDK sends on its telemetry socket (protocol.md §9.3), written by
hand so that ``iii`` needs no OpenTelemetry package.

Owns the three request shapes and their frame prefixes:
- ``b"OTLP"`` + ``ExportTraceServiceRequest``: ``{"resourceSpans": [{"resource": R,
  "scopeSpans": [{"scope": S, "spans": [{traceId, spanId, parentSpanId?, name, kind,
  startTimeUnixNano, endTimeUnixNano, attributes, status: {code, message?}, flags}]}]}]}``
- ``b"LOGS"`` + ``ExportLogsServiceRequest``: ``{"resourceLogs": [{"resource": R,
  "scopeLogs": [{"scope": S, "logRecords": [{timeUnixNano, observedTimeUnixNano,
  severityNumber, severityText, body: {stringValue}, attributes, traceId?, spanId?,
  flags?}]}]}]}``
- ``b"MTRC"`` + ``ExportMetricsServiceRequest``: ``{"resourceMetrics": [{"resource": R,
  "scopeMetrics": [{"scope": S, "metrics": [{name, description, unit, gauge: {dataPoints:
  [{timeUnixNano, asDouble, attributes}]}}]}]}]}``
with ``R = {"attributes": [...]}`` (``service.name`` first) and ``S = {"name": "iii-py"}``.

Invariants: the OTLP JSON mapping (camelCase keys, lower-case hex ids, 64-bit integers
as decimal strings: times and ``intValue``); attribute values become any-values
(str/bool/int/float/list/dict, anything else its ``str``); pure, no clock (times are
passed in), and encoding never raises for odd user data.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - orjson is an install requirement
    _orjson = None
import json

from sdk.tracecontext import Span

PREFIX_SPANS, PREFIX_LOGS, PREFIX_METRICS = b"OTLP", b"LOGS", b"MTRC"
SCOPE = {"name": "iii-py"}
# level -> (severityNumber, severityText), as OpenTelemetry's SeverityNumber
SEVERITY = {"debug": (5, "DEBUG"), "info": (9, "INFO"), "warn": (13, "WARN"), "error": (17, "ERROR")}
_MAX_DEPTH = 8


def any_value(value: Any, depth: int = 0) -> dict[str, Any]:
    """An OTLP ``AnyValue`` for a Python value."""
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        if -(1 << 63) <= value < (1 << 63):
            return {"intValue": str(value)}
        return {"stringValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value} if math.isfinite(value) else {"stringValue": str(value)}
    if depth < _MAX_DEPTH:
        if isinstance(value, dict):
            return {"kvlistValue": {"values": attributes(value, depth + 1)}}
        if isinstance(value, (list, tuple, set, frozenset)):
            return {"arrayValue": {"values": [any_value(v, depth + 1) for v in value]}}
    if isinstance(value, (bytes, bytearray)):
        return {"stringValue": bytes(value).decode("utf-8", "replace")}
    if value is None:
        return {}
    return {"stringValue": str(value)}


def attributes(mapping: dict[Any, Any] | None, depth: int = 0) -> list[dict[str, Any]]:
    if not mapping:
        return []
    return [{"key": str(k), "value": any_value(v, depth)} for k, v in mapping.items()]


def resource(service_name: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"attributes": attributes({"service.name": service_name, **(extra or {})})}


# attribute entries of low-cardinality keys, built once (a span per call: this is hot)
_CACHED_KEYS = frozenset(("iii.function.id", "iii.worker.id"))
_attr_cache: dict[tuple[str, str], dict[str, Any]] = {}


def _span_attributes(mapping: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for k, v in mapping.items():
        if k in _CACHED_KEYS and type(v) is str:
            entry = _attr_cache.get((k, v))
            if entry is None:
                if len(_attr_cache) > 4096:
                    _attr_cache.clear()
                entry = _attr_cache[(k, v)] = {"key": k, "value": {"stringValue": v}}
            out.append(entry)
        else:
            out.append({"key": str(k), "value": any_value(v)})
    return out


def span_json(span: Span) -> dict[str, Any]:
    status: dict[str, Any] = {"code": span.status}
    if span.status_message:
        status["message"] = span.status_message
    out: dict[str, Any] = {"traceId": span.trace_id, "spanId": span.span_id, "name": span.name,
                           "kind": span.kind, "startTimeUnixNano": str(span.start_ns),
                           "endTimeUnixNano": str(span.end_ns),
                           "attributes": _span_attributes(span.attributes), "flags": span.flags,
                           "status": status}
    if span.parent_span_id:
        out["parentSpanId"] = span.parent_span_id
    return out


def spans_request(spans: Iterable[Span], res: dict[str, Any]) -> dict[str, Any]:
    return {"resourceSpans": [{"resource": res, "scopeSpans": [
        {"scope": SCOPE, "spans": [span_json(s) for s in spans]}]}]}


def log_record(level: str, message: Any, data: Any, span: Span | None, now_ns: int) -> dict[str, Any]:
    """One ``LogRecord``: ``data``'s keys become attributes (a non-dict goes as ``log.data``)."""
    number, text = SEVERITY.get(level, SEVERITY["info"])
    if isinstance(data, dict):
        attrs = attributes(data)
    elif data is not None:
        attrs = attributes({"log.data": data})
    else:
        attrs = []
    rec: dict[str, Any] = {"timeUnixNano": str(now_ns), "observedTimeUnixNano": str(now_ns),
                           "severityNumber": number, "severityText": text,
                           "body": {"stringValue": message if isinstance(message, str) else str(message)},
                           "attributes": attrs}
    if span is not None:
        rec.update(traceId=span.trace_id, spanId=span.span_id, flags=span.flags)
    return rec


def logs_request(records: Iterable[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
    """``records``: ``(resource, logRecord)`` pairs; one resourceLogs entry per resource."""
    groups: dict[int, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
    for res, rec in records:
        groups.setdefault(id(res), (res, []))[1].append(rec)
    return {"resourceLogs": [{"resource": res, "scopeLogs": [{"scope": SCOPE, "logRecords": recs}]}
                             for res, recs in groups.values()]}


def gauge(name: str, value: float, unit: str, description: str, now_ns: int,
          attrs: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "description": description, "unit": unit, "gauge": {"dataPoints": [
        {"timeUnixNano": str(now_ns), "asDouble": float(value), "attributes": attributes(attrs)}]}}


def metrics_request(metrics: list[dict[str, Any]], res: dict[str, Any]) -> dict[str, Any]:
    return {"resourceMetrics": [{"resource": res, "scopeMetrics": [{"scope": SCOPE, "metrics": metrics}]}]}


def frame(prefix: bytes, document: dict[str, Any]) -> bytes:
    """The binary telemetry frame: 4-byte prefix + UTF-8 JSON."""
    if _orjson is not None:
        return prefix + _orjson.dumps(document, default=str)
    return prefix + json.dumps(document, default=str, separators=(",", ":")).encode()
