"""OTLP JSON telemetry → the stored shapes of workers-b §4.2/§4.3 (StoredSpan, StoredLog, StoredMetric).

Owns: splitting an SDK telemetry blob (``b"OTLP"|b"LOGS"|b"MTRC"`` + OTLP JSON, protocol §9.3),
decoding OTLP any-values, and converting the three export requests and the engine's own span
records (obs-contract "Engine span records") into plain dicts ready for the stores.

Pure: no clock (``now_ns`` is passed in), no I/O. Lenient by contract: a malformed item (a span
without ids, a data point that is not an object, a non-numeric time) is skipped, and no public
function raises on any input. Keys are accepted in camelCase (the JS/Python OTLP JSON
exporters) and snake_case (some SDKs).

Value decoding (any-values, string-encoded integers, ids) is ``otlpvalue``. Span, event, link
and metric data point attributes become ``[key, str]`` pairs; log attributes keep decoded JSON
values; resource attributes of a log are stringified.
"""
from __future__ import annotations

from typing import Any

import orjson

from brokers.kit.telemetry import CALL_FIELDS, function_kind

from brokers.observability.otlpvalue import (
    dicts, get, kv_dict, kv_pairs, lst, nonzero_id, hex_id, any_value, stringify, to_float, to_int, to_uint,
)

PREFIXES = ("OTLP", "LOGS", "MTRC")
_SEVERITY_TEXT = ((1, "TRACE"), (5, "DEBUG"), (9, "INFO"), (13, "WARN"), (17, "ERROR"), (21, "FATAL"))
_STATUS_NAMES = {"STATUS_CODE_UNSET": "unset", "STATUS_CODE_OK": "ok", "STATUS_CODE_ERROR": "error",
                 "UNSET": "unset", "OK": "ok", "ERROR": "error"}
_STATUS_CODES = {0: "unset", 1: "ok", 2: "error"}


def parse_blob(blob: bytes) -> tuple[str, dict] | None:
    """Split a telemetry frame into (prefix, document); None for an unknown prefix or bad JSON."""
    try:
        prefix = bytes(blob[:4]).decode("ascii")
    except (UnicodeDecodeError, TypeError):
        return None
    if prefix not in PREFIXES:
        return None
    try:
        doc = orjson.loads(blob[4:])
    except (orjson.JSONDecodeError, TypeError):
        return None
    return (prefix, doc) if isinstance(doc, dict) else None


def _resource(group: dict) -> tuple[dict[str, Any], str]:
    resource = group.get("resource")
    attrs = kv_dict(lst(resource, "attributes")) if isinstance(resource, dict) else {}
    name = attrs.get("service.name")
    return attrs, (stringify(name) if name is not None else "unknown")


def _scope(scoped: dict) -> dict[str, str]:
    scope = scoped.get("scope")
    out: dict[str, str] = {}
    if isinstance(scope, dict):
        if isinstance(scope.get("name"), str) and scope["name"]:
            out["instrumentation_scope_name"] = scope["name"]
        if isinstance(scope.get("version"), str) and scope["version"]:
            out["instrumentation_scope_version"] = scope["version"]
    return out


def _status(status: Any) -> tuple[str, str | None]:
    if not isinstance(status, dict):
        return "unset", None
    code = status.get("code")
    if isinstance(code, str):
        text = _STATUS_NAMES.get(code.upper())
        if text is None:
            number = to_int(code)
            text = _STATUS_CODES.get(number, "unset") if number is not None else "unset"
    else:
        text = _STATUS_CODES.get(to_int(code) if code is not None else 0, "unset")
    message = status.get("message")
    return text, (message if isinstance(message, str) and message else None)


def _span(raw: dict, service_name: str, scope: dict[str, str]) -> dict | None:
    trace_id = hex_id(get(raw, "traceId", "trace_id"), 32)
    span_id = hex_id(get(raw, "spanId", "span_id"), 16)
    name = raw.get("name")
    start = to_uint(get(raw, "startTimeUnixNano", "start_time_unix_nano", 0))
    end = to_uint(get(raw, "endTimeUnixNano", "end_time_unix_nano", 0))
    if not trace_id or not span_id or not isinstance(name, str) or start is None or end is None:
        return None
    status, description = _status(raw.get("status"))
    span: dict[str, Any] = {
        "trace_id": trace_id, "span_id": span_id,
        "parent_span_id": nonzero_id(get(raw, "parentSpanId", "parent_span_id"), 16),
        "name": name, "start_time_unix_nano": start, "end_time_unix_nano": end, "status": status,
    }
    if description is not None:
        span["status_description"] = description
    span["attributes"] = kv_pairs(lst(raw, "attributes"))
    span["service_name"] = service_name
    span["events"] = [
        {"name": ev.get("name") if isinstance(ev.get("name"), str) else "",
         "timestamp_unix_nano": to_uint(get(ev, "timeUnixNano", "time_unix_nano", 0)) or 0,
         "attributes": kv_pairs(lst(ev, "attributes"))}
        for ev in dicts(raw, "events")
    ]
    span["links"] = [
        {"trace_id": hex_id(get(ln, "traceId", "trace_id"), 32) or "",
         "span_id": hex_id(get(ln, "spanId", "span_id"), 16) or "",
         "trace_state": get(ln, "traceState", "trace_state") if isinstance(get(ln, "traceState", "trace_state"), str) else None,
         "attributes": kv_pairs(lst(ln, "attributes"))}
        for ln in dicts(raw, "links")
    ]
    span.update(scope)
    flags = to_uint(raw.get("flags"))
    if flags is not None:
        span["flags"] = flags
    trace_state = get(raw, "traceState", "trace_state")
    if isinstance(trace_state, str) and trace_state:
        span["trace_state"] = trace_state
    if end == 0:
        span["pending"] = True
    return span


def spans_from_otlp(doc: dict) -> list[dict]:
    """ExportTraceServiceRequest → StoredSpan dicts (end time 0 → pending)."""
    out: list[dict] = []
    if not isinstance(doc, dict):
        return out
    for group in dicts(doc, "resourceSpans", "resource_spans"):
        _, service_name = _resource(group)
        for scoped in dicts(group, "scopeSpans", "scope_spans") + dicts(group, "instrumentationLibrarySpans"):
            scope = _scope(scoped)
            for raw in dicts(scoped, "spans"):
                span = _span(raw, service_name, scope)
                if span is not None:
                    out.append(span)
    return out


def severity_text(number: int) -> str:
    """OTel severity number → its short name ("" for 0 / out of range)."""
    text = ""
    for floor, name in _SEVERITY_TEXT:
        if number >= floor:
            text = name
    return text if 0 < number <= 24 else ""


def _log(raw: dict, service_name: str, resource: dict[str, str], scope: dict[str, str], now_ns: int) -> dict:
    observed = to_uint(get(raw, "observedTimeUnixNano", "observed_time_unix_nano")) or now_ns
    timestamp = to_uint(get(raw, "timeUnixNano", "time_unix_nano")) or observed
    number = to_int(get(raw, "severityNumber", "severity_number")) or 0
    text = get(raw, "severityText", "severity_text")
    body_raw = raw.get("body")
    if isinstance(body_raw, dict) and isinstance(get(body_raw, "stringValue", "string_value"), str):
        body = get(body_raw, "stringValue", "string_value")
    elif isinstance(body_raw, dict):
        decoded = any_value(body_raw)
        body = "" if decoded is None else stringify(decoded)
    else:
        body = body_raw if isinstance(body_raw, str) else ""
    log = {
        "timestamp_unix_nano": timestamp, "observed_timestamp_unix_nano": observed,
        "severity_number": number,
        "severity_text": text if isinstance(text, str) and text else severity_text(number),
        "body": body, "attributes": kv_dict(lst(raw, "attributes")),
        "trace_id": nonzero_id(get(raw, "traceId", "trace_id"), 32),
        "span_id": nonzero_id(get(raw, "spanId", "span_id"), 16),
        "resource": dict(resource), "service_name": service_name,
    }
    log.update(scope)
    return log


def logs_from_otlp(doc: dict, now_ns: int) -> list[dict]:
    """ExportLogsServiceRequest → StoredLog dicts (missing times default to ``now_ns``)."""
    out: list[dict] = []
    if not isinstance(doc, dict):
        return out
    for group in dicts(doc, "resourceLogs", "resource_logs"):
        attrs, service_name = _resource(group)
        resource = {key: stringify(value) for key, value in attrs.items()}
        for scoped in dicts(group, "scopeLogs", "scope_logs"):
            scope = _scope(scoped)
            for raw in dicts(scoped, "logRecords", "log_records"):
                out.append(_log(raw, service_name, resource, scope, now_ns))
    return out


def _number_point(raw: dict) -> dict:
    value = to_float(get(raw, "asDouble", "as_double"))
    if value is None:
        as_int = to_int(get(raw, "asInt", "as_int"))
        value = float(as_int) if as_int is not None else 0.0
    return {"value": value, "attributes": kv_pairs(lst(raw, "attributes")),
            "timestamp_unix_nano": to_uint(get(raw, "timeUnixNano", "time_unix_nano", 0)) or 0}


def _histogram_point(raw: dict) -> dict:
    return {
        "count": to_uint(raw.get("count")) or 0,
        "sum": to_float(raw.get("sum")) or 0.0,
        "bucket_counts": [to_uint(c) or 0 for c in lst(raw, "bucketCounts", "bucket_counts")],
        "explicit_bounds": [b for b in (to_float(x) for x in lst(raw, "explicitBounds", "explicit_bounds"))
                            if b is not None],
        "min": to_float(raw.get("min")), "max": to_float(raw.get("max")),
        "attributes": kv_pairs(lst(raw, "attributes")),
        "timestamp_unix_nano": to_uint(get(raw, "timeUnixNano", "time_unix_nano", 0)) or 0,
    }


def _metric(raw: dict, service_name: str, scope: dict[str, str], now_ns: int) -> dict | None:
    if isinstance(raw.get("gauge"), dict):
        kind, points = "gauge", [_number_point(p) for p in dicts(raw["gauge"], "dataPoints", "data_points")]
    elif isinstance(raw.get("sum"), dict):
        monotonic = bool(get(raw["sum"], "isMonotonic", "is_monotonic", False))
        kind = "counter" if monotonic else "updowncounter"
        points = [_number_point(p) for p in dicts(raw["sum"], "dataPoints", "data_points")]
    elif isinstance(raw.get("histogram"), dict):
        kind = "histogram"
        points = [_histogram_point(p) for p in dicts(raw["histogram"], "dataPoints", "data_points")]
    else:
        return None
    text = {key: (raw.get(key) if isinstance(raw.get(key), str) else "") for key in ("name", "description", "unit")}
    stamp = now_ns or max((p["timestamp_unix_nano"] for p in points), default=0)
    metric = {**text, "metric_type": kind, "data_points": points, "service_name": service_name,
              "timestamp_unix_nano": stamp}
    metric.update(scope)
    return metric


def metrics_from_otlp(doc: dict, now_ns: int = 0) -> list[dict]:
    """ExportMetricsServiceRequest → StoredMetric dicts; unknown metric kinds are skipped.

    ``timestamp_unix_nano`` is the ingest time (``now_ns``) as in the reference; when it is not
    given (0) the newest data point time stands in.
    """
    out: list[dict] = []
    if not isinstance(doc, dict):
        return out
    for group in dicts(doc, "resourceMetrics", "resource_metrics"):
        _, service_name = _resource(group)
        for scoped in dicts(group, "scopeMetrics", "scope_metrics"):
            scope = _scope(scoped)
            for raw in dicts(scoped, "metrics"):
                metric = _metric(raw, service_name, scope, now_ns)
                if metric is not None:
                    out.append(metric)
    return out


def call_attributes(rec: list) -> dict[str, Any]:
    """The attributes of a call's record (``brokers.kit.telemetry.CALL_FIELDS``)."""
    fid = rec[9]
    attrs: dict[str, Any] = {"function_id": fid, "iii.function.kind": function_kind(fid) or "internal"}
    for key, value in zip(CALL_FIELDS, rec[10:]):
        if value is not None:
            attrs[key] = value
    return attrs


def span_from_record(rec: list, service_name: str) -> dict | None:
    """An engine span record (obs-contract) → StoredSpan; None when the record is malformed."""
    if not isinstance(rec, (list, tuple)) or len(rec) < 8:
        return None
    trace_id, span_id, parent, name, start, end, status = rec[:7]
    attrs = rec[7] if isinstance(rec[7], dict) else {}
    if name is None and len(rec) >= 10 + len(CALL_FIELDS) and isinstance(rec[9], str):
        name, attrs = "call " + rec[9], call_attributes(rec)
    description = rec[8] if len(rec) > 8 and isinstance(rec[8], str) and rec[8] else None
    start_ns, end_ns = to_uint(start), to_uint(end)
    if (not isinstance(trace_id, str) or not trace_id or not isinstance(span_id, str) or not span_id
            or not isinstance(name, str) or start_ns is None or end_ns is None):
        return None
    span: dict[str, Any] = {
        "trace_id": trace_id, "span_id": span_id,
        "parent_span_id": parent if isinstance(parent, str) and parent and set(parent) != {"0"} else None,
        "name": name, "start_time_unix_nano": start_ns, "end_time_unix_nano": end_ns,
        "status": _STATUS_CODES.get(status if isinstance(status, int) else 0, "unset"),
    }
    if description is not None:
        span["status_description"] = description
    span["attributes"] = [[str(k), stringify(v)] for k, v in attrs.items()]
    span["service_name"] = service_name
    span["events"] = []
    span["links"] = []
    if end_ns == 0:
        span["pending"] = True
    return span
