"""OTLP JSON → StoredSpan / StoredLog / StoredMetric (workers-b §4.2, §4.3; protocol §9.3)."""
from __future__ import annotations

import base64

import orjson
import pytest

from brokers.observability import otlp
from brokers.observability.otlpvalue import any_value, stringify

TRACE = "5b8efff798038103d269b633813fc60c"
ROOT = "eee19b7ec3c1b174"
CHILD = "eee19b7ec3c1b173"

# What @opentelemetry/exporter-trace-otlp-http (JSON) emits: camelCase, hex ids, times as strings.
JS_TRACES = {
    "resourceSpans": [{
        "resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "orders-api"}},
            {"key": "telemetry.sdk.language", "value": {"stringValue": "nodejs"}},
            {"key": "process.pid", "value": {"intValue": 4242}},
        ], "droppedAttributesCount": 0},
        "scopeSpans": [{
            "scope": {"name": "iii-node", "version": "0.22.1"},
            "spans": [
                {"traceId": TRACE, "spanId": ROOT, "parentSpanId": "", "traceState": "vendor=1", "flags": 257,
                 "name": "GET /orders/:id", "kind": 2,
                 "startTimeUnixNano": "1733072400000000000", "endTimeUnixNano": "1733072400250000000",
                 "attributes": [
                     {"key": "http.method", "value": {"stringValue": "GET"}},
                     {"key": "http.status_code", "value": {"intValue": 200}},
                     {"key": "ratio", "value": {"doubleValue": 0.5}},
                     {"key": "whole", "value": {"doubleValue": 2.0}},
                     {"key": "cached", "value": {"boolValue": False}},
                     {"key": "tags", "value": {"arrayValue": {"values": [{"stringValue": "a"}, {"intValue": "7"}]}}},
                     {"key": "ctx", "value": {"kvlistValue": {"values": [{"key": "k", "value": {"boolValue": True}}]}}},
                 ],
                 "droppedAttributesCount": 0,
                 "events": [{"attributes": [{"key": "exception.message", "value": {"stringValue": "boom"}}],
                             "name": "exception", "timeUnixNano": "1733072400100000000", "droppedAttributesCount": 0}],
                 "droppedEventsCount": 0,
                 "status": {"code": 2, "message": "boom"},
                 "links": [{"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331",
                            "attributes": [{"key": "link.kind", "value": {"stringValue": "follows"}}]}],
                 "droppedLinksCount": 0},
                {"traceId": TRACE, "spanId": CHILD, "parentSpanId": ROOT, "name": "execute orders::get", "kind": 1,
                 "startTimeUnixNano": 1733072400010000000, "endTimeUnixNano": "0",
                 "attributes": [{"key": "function_id", "value": {"stringValue": "orders::get"}}],
                 "status": {"code": 0}},
            ],
        }],
    }],
}


def _b64(hexid: str) -> str:
    return base64.b64encode(bytes.fromhex(hexid)).decode()


# What protobuf MessageToJson produces (some Python exporters): base64 ids, enum names, int64 strings.
PROTO_TRACES = {
    "resourceSpans": [{
        "resource": {"attributes": [{"key": "telemetry.sdk.language", "value": {"stringValue": "python"}}]},
        "scopeSpans": [{
            "scope": {"name": "opentelemetry.instrumentation.requests"},
            "spans": [{"traceId": _b64(TRACE), "spanId": _b64(ROOT), "parentSpanId": _b64("00" * 8),
                       "name": "POST", "kind": "SPAN_KIND_CLIENT",
                       "startTimeUnixNano": "1733072400000000000", "endTimeUnixNano": "1733072400001000000",
                       "attributes": [{"key": "http.status_code", "value": {"intValue": "201"}}],
                       "status": {"code": "STATUS_CODE_OK"}}],
        }],
    }],
}


def test_parse_blob_splits_prefix_and_json():
    for prefix in ("OTLP", "LOGS", "MTRC"):
        assert otlp.parse_blob(prefix.encode() + b'{"a": 1}') == (prefix, {"a": 1})
    assert otlp.parse_blob(b"OTLP" + orjson.dumps(JS_TRACES))[1] == JS_TRACES


@pytest.mark.parametrize("blob", [b"XXXX{}", b"OTL", b"", b"OTLP{not json", b"OTLP[1,2]", b"LOGS\xff\xfe", b"\xff\xfe\xfd\xfc{}"])
def test_parse_blob_rejects_without_raising(blob):
    assert otlp.parse_blob(blob) is None


def test_js_spans_full_shape():
    root, child = otlp.spans_from_otlp(JS_TRACES)
    assert root == {
        "trace_id": TRACE, "span_id": ROOT, "parent_span_id": None, "name": "GET /orders/:id",
        "start_time_unix_nano": 1733072400000000000, "end_time_unix_nano": 1733072400250000000,
        "status": "error", "status_description": "boom",
        "attributes": [["http.method", "GET"], ["http.status_code", "200"], ["ratio", "0.5"], ["whole", "2"],
                       ["cached", "false"], ["tags", '["a",7]'], ["ctx", '{"k":true}']],
        "service_name": "orders-api",
        "events": [{"name": "exception", "timestamp_unix_nano": 1733072400100000000,
                    "attributes": [["exception.message", "boom"]]}],
        "links": [{"trace_id": "0af7651916cd43dd8448eb211c80319c", "span_id": "b7ad6b7169203331",
                   "trace_state": None, "attributes": [["link.kind", "follows"]]}],
        "instrumentation_scope_name": "iii-node", "instrumentation_scope_version": "0.22.1",
        "flags": 257, "trace_state": "vendor=1",
    }
    assert "pending" not in root
    assert child["parent_span_id"] == ROOT and child["status"] == "unset"
    assert child["pending"] is True and child["end_time_unix_nano"] == 0
    assert "status_description" not in child and "flags" not in child


def test_protobuf_json_spans_base64_ids_and_enum_status():
    (span,) = otlp.spans_from_otlp(PROTO_TRACES)
    assert span["trace_id"] == TRACE and span["span_id"] == ROOT
    assert span["parent_span_id"] is None  # all-zero parent = root
    assert span["status"] == "ok"
    assert span["service_name"] == "unknown"  # no service.name resource attribute
    assert span["attributes"] == [["http.status_code", "201"]]
    assert span["instrumentation_scope_name"] == "opentelemetry.instrumentation.requests"
    assert "instrumentation_scope_version" not in span


def test_status_strings_and_snake_case_keys():
    doc = {"resource_spans": [{"resource": {"attributes": [{"key": "service.name", "value": {"string_value": "py"}}]},
                               "scope_spans": [{"spans": [
                                   {"trace_id": TRACE, "span_id": ROOT, "name": "a", "start_time_unix_nano": 5,
                                    "end_time_unix_nano": 9, "status": {"code": "STATUS_CODE_ERROR"},
                                    "attributes": [{"key": "n", "value": {"int_value": "3"}}]},
                                   {"trace_id": TRACE, "span_id": CHILD, "name": "b", "start_time_unix_nano": 5,
                                    "end_time_unix_nano": 9, "status": {"code": "STATUS_CODE_UNSET"}},
                               ]}]}]}
    a, b = otlp.spans_from_otlp(doc)
    assert (a["status"], b["status"]) == ("error", "unset")
    assert a["service_name"] == "py" and a["attributes"] == [["n", "3"]]


def test_malformed_spans_are_skipped_not_raised():
    good = JS_TRACES["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    doc = {"resourceSpans": [
        "nonsense", {"scopeSpans": "nope"}, {"resource": 7, "scopeSpans": [None, {"spans": [
            {"spanId": ROOT, "name": "no trace id"},
            {"traceId": TRACE, "spanId": ROOT, "name": 5},
            {"traceId": TRACE, "spanId": ROOT, "name": "bad time", "startTimeUnixNano": "soon"},
            {"traceId": TRACE, "spanId": ROOT, "name": "neg", "startTimeUnixNano": -1},
            1, good,
            {"traceId": TRACE, "spanId": CHILD, "name": "odd", "startTimeUnixNano": "1", "endTimeUnixNano": "2",
             "attributes": [{"key": "x"}, {"value": {"stringValue": "no key"}}, "junk", {"key": "ok", "value": {}}],
             "events": ["junk", {"name": 3}], "links": [None], "status": "weird"},
        ]}]}]}
    spans = otlp.spans_from_otlp(doc)
    assert [s["name"] for s in spans] == ["GET /orders/:id", "odd"]
    odd = spans[1]
    assert odd["attributes"] == [["ok", ""]]
    assert odd["events"] == [{"name": "", "timestamp_unix_nano": 0, "attributes": []}]
    assert odd["links"] == [] and odd["status"] == "unset"
    for bad in ({}, {"resourceSpans": None}, [], None, "x"):
        assert otlp.spans_from_otlp(bad) == []  # type: ignore[arg-type]


def test_any_value_decoding():
    assert any_value({"intValue": "9007199254740993"}) == 9007199254740993
    assert any_value({"bytesValue": "AAE="}) == "AAE="
    assert any_value({"arrayValue": {"values": [{"boolValue": True}, {"doubleValue": 1.5}]}}) == [True, 1.5]
    assert any_value({"kvlistValue": {"values": [{"key": "a", "value": {"arrayValue": {}}}]}}) == {"a": []}
    assert any_value({}) is None and any_value("x") is None
    assert stringify(1e20) == "1e+20" and stringify(-3.0) == "-3" and stringify(None) == ""


JS_LOGS = {
    "resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "billing"}},
                                    {"key": "service.version", "value": {"stringValue": "1.4.0"}},
                                    {"key": "process.pid", "value": {"intValue": 77}}]},
        "scopeLogs": [{
            "scope": {"name": "iii-logger", "version": "0.22.1"},
            "logRecords": [
                {"timeUnixNano": "1733072400000000000", "observedTimeUnixNano": "1733072400000500000",
                 "severityNumber": 17, "severityText": "ERROR", "body": {"stringValue": "charge failed"},
                 "attributes": [{"key": "order_id", "value": {"intValue": "42"}},
                                {"key": "retry", "value": {"boolValue": True}},
                                {"key": "ctx", "value": {"kvlistValue": {"values": [
                                    {"key": "amount", "value": {"doubleValue": 9.5}}]}}}],
                 "traceId": TRACE, "spanId": ROOT, "flags": 1},
                {"severityNumber": 13, "body": {"kvlistValue": {"values": [{"key": "msg", "value": {"stringValue": "hi"}}]}},
                 "traceId": "", "spanId": "0000000000000000"},
                {"severityNumber": 0, "body": {"intValue": 5}, "traceId": "0" * 32},
            ],
        }],
    }],
}


def test_logs_full_shape():
    first, second, third = otlp.logs_from_otlp(JS_LOGS, now_ns=1_800_000_000_000_000_000)
    assert first == {
        "timestamp_unix_nano": 1733072400000000000, "observed_timestamp_unix_nano": 1733072400000500000,
        "severity_number": 17, "severity_text": "ERROR", "body": "charge failed",
        "attributes": {"order_id": 42, "retry": True, "ctx": {"amount": 9.5}},
        "trace_id": TRACE, "span_id": ROOT,
        "resource": {"service.name": "billing", "service.version": "1.4.0", "process.pid": "77"},
        "service_name": "billing", "instrumentation_scope_name": "iii-logger",
        "instrumentation_scope_version": "0.22.1",
    }
    # defaults: times fall back to now, text from the number, empty/zero ids are null, non-string body is JSON
    assert second["observed_timestamp_unix_nano"] == 1_800_000_000_000_000_000
    assert second["timestamp_unix_nano"] == 1_800_000_000_000_000_000
    assert second["severity_text"] == "WARN" and second["body"] == '{"msg":"hi"}'
    assert second["trace_id"] is None and second["span_id"] is None and second["attributes"] == {}
    assert third["severity_text"] == "" and third["body"] == "5" and third["trace_id"] is None


def test_severity_text_ranges():
    assert [otlp.severity_text(n) for n in (1, 4, 5, 9, 12, 13, 17, 21, 24, 0, 25)] == [
        "TRACE", "TRACE", "DEBUG", "INFO", "INFO", "WARN", "ERROR", "FATAL", "FATAL", "", ""]


def test_logs_malformed_and_snake_case():
    doc = {"resource_logs": [{"scope_logs": [{"log_records": [
        "junk", {"time_unix_nano": "12", "severity_number": "9", "body": {"string_value": "x"}}]}]}, 3]}
    (log,) = otlp.logs_from_otlp(doc, now_ns=99)
    assert log["timestamp_unix_nano"] == 12 and log["observed_timestamp_unix_nano"] == 99
    assert log["severity_number"] == 9 and log["severity_text"] == "INFO" and log["body"] == "x"
    assert log["service_name"] == "unknown" and log["resource"] == {}
    assert otlp.logs_from_otlp({"resourceLogs": "x"}, 1) == [] and otlp.logs_from_otlp(None, 1) == []  # type: ignore[arg-type]


# Shape of @opentelemetry/exporter-metrics-otlp-http JSON (the SDK's worker gauges and a histogram).
JS_METRICS = {
    "resourceMetrics": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "worker-7"}}]},
        "scopeMetrics": [{
            "scope": {"name": "iii-worker-metrics", "version": "0.22.1"},
            "metrics": [
                {"name": "iii.worker.memory.rss.bytes", "unit": "By", "description": "rss",
                 "gauge": {"dataPoints": [{"attributes": [{"key": "worker", "value": {"stringValue": "w"}}],
                                           "startTimeUnixNano": "1", "timeUnixNano": "1733072460000000000",
                                           "asInt": "52428800"}]}},
                {"name": "orders.created", "unit": "1", "description": "",
                 "sum": {"aggregationTemporality": 2, "isMonotonic": True,
                         "dataPoints": [{"attributes": [], "timeUnixNano": "1733072460000000000", "asDouble": 12}]}},
                {"name": "queue.inflight", "sum": {"isMonotonic": False,
                                                   "dataPoints": [{"asInt": -3, "timeUnixNano": "5"}]}},
                {"name": "http.duration", "unit": "ms",
                 "histogram": {"aggregationTemporality": 2, "dataPoints": [{
                     "attributes": [{"key": "route", "value": {"stringValue": "/o"}}],
                     "timeUnixNano": "1733072460000000000", "count": "4", "sum": 31.5,
                     "bucketCounts": ["1", "2", "1", "0"], "explicitBounds": [5, 10, 25], "min": 2.5, "max": 20}]}},
                {"name": "summary.unsupported", "summary": {"dataPoints": []}},
            ],
        }],
    }],
}


def test_metrics_full_shape():
    gauge, counter, updown, hist = otlp.metrics_from_otlp(JS_METRICS, now_ns=1733072461000000000)
    scope = {"instrumentation_scope_name": "iii-worker-metrics", "instrumentation_scope_version": "0.22.1"}
    assert gauge == {"name": "iii.worker.memory.rss.bytes", "description": "rss", "unit": "By",
                     "metric_type": "gauge",
                     "data_points": [{"value": 52428800.0, "attributes": [["worker", "w"]],
                                      "timestamp_unix_nano": 1733072460000000000}],
                     "service_name": "worker-7", "timestamp_unix_nano": 1733072461000000000, **scope}
    assert counter["metric_type"] == "counter" and counter["data_points"][0]["value"] == 12.0
    assert updown["metric_type"] == "updowncounter" and updown["data_points"][0]["value"] == -3.0
    assert updown["description"] == "" and updown["unit"] == ""
    assert hist["metric_type"] == "histogram"
    assert hist["data_points"] == [{"count": 4, "sum": 31.5, "bucket_counts": [1, 2, 1, 0],
                                    "explicit_bounds": [5.0, 10.0, 25.0], "min": 2.5, "max": 20.0,
                                    "attributes": [["route", "/o"]], "timestamp_unix_nano": 1733072460000000000}]


def test_metrics_without_now_use_newest_point_and_skip_junk():
    doc = {"resource_metrics": [{"scope_metrics": [{"metrics": [
        "junk", {"name": "g", "gauge": {"data_points": [{"as_double": 1.5, "time_unix_nano": "7"}, "junk",
                                                        {"time_unix_nano": "9"}]}},
        {"name": "h", "histogram": {"dataPoints": [{"count": "x"}]}}]}]}]}
    g, h = otlp.metrics_from_otlp(doc)
    assert [p["value"] for p in g["data_points"]] == [1.5, 0.0]
    assert g["timestamp_unix_nano"] == 9 and g["service_name"] == "unknown"
    assert h["data_points"][0]["count"] == 0 and h["data_points"][0]["min"] is None
    assert otlp.metrics_from_otlp({"resourceMetrics": [None]}) == []


def test_span_from_record():
    rec = [TRACE, CHILD, ROOT, "call state::set", 100, 350, 2,
           {"function_id": "state::set", "iii.function.kind": "internal", "n": 3, "f": 1.25, "ok": True},
           "key missing"]
    span = otlp.span_from_record(rec, "iii")
    assert span == {"trace_id": TRACE, "span_id": CHILD, "parent_span_id": ROOT, "name": "call state::set",
                    "start_time_unix_nano": 100, "end_time_unix_nano": 350, "status": "error",
                    "status_description": "key missing",
                    "attributes": [["function_id", "state::set"], ["iii.function.kind", "internal"], ["n", "3"],
                                   ["f", "1.25"], ["ok", "true"]],
                    "service_name": "iii", "events": [], "links": []}
    pending = otlp.span_from_record([TRACE, ROOT, None, "GET /x", 100, 0, 0, {}, None], "iii")
    assert pending["pending"] is True and pending["status"] == "unset" and "status_description" not in pending
    assert otlp.span_from_record([TRACE, ROOT, None, "x", 1, 2, 1, {}], "svc")["status"] == "ok"


@pytest.mark.parametrize("rec", [None, [], [TRACE], [None, ROOT, None, "x", 1, 2, 0, {}, None],
                                 [TRACE, ROOT, None, "x", "later", 2, 0, {}, None]])
def test_span_from_record_malformed(rec):
    assert otlp.span_from_record(rec, "iii") is None
