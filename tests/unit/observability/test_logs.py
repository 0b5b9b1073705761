"""LogStore, log_from_call and level_matches: exact StoredLog / engine::logs::list shapes,
every filter, paging, eviction, ANSI stripping and retention (workers-b §4.2–§4.4)."""
from __future__ import annotations

import pytest

from brokers.observability.logs import SEVERITY, LogStore, level_matches, log_from_call

RES = {"service.name": "iii", "service.version": "0.1.0"}
MS = 1_000_000


def call(level: str = "info", now_ns: int = 5 * MS, **data):
    data.setdefault("message", "hello")
    return log_from_call(level, data, resource=RES, engine_version="0.1.0", now_ns=now_ns)


def entry(ts_ms: int, sev: str = "info", *, trace=None, span=None, body="m") -> dict:
    log = call(sev, now_ns=ts_ms * MS, message=body, trace_id=trace, span_id=span)
    return log


def test_severity_table():
    assert SEVERITY == {"trace": 1, "debug": 5, "info": 9, "warn": 13, "error": 17}


def test_log_from_call_exact_shape():
    log = call("warn", now_ns=123, message="disk low", data={"free": 3, "unit": "GB"},
               trace_id="a" * 32, span_id="b" * 16, service_name="billing")
    assert log == {
        "timestamp_unix_nano": 123, "observed_timestamp_unix_nano": 123,
        "severity_number": 13, "severity_text": "WARN", "body": "disk low",
        "attributes": {"free": 3, "unit": "GB"}, "trace_id": "a" * 32, "span_id": "b" * 16,
        "resource": RES, "service_name": "billing", "instrumentation_scope_name": "iii",
        "instrumentation_scope_version": "0.1.0"}


@pytest.mark.parametrize("level,number", list(SEVERITY.items()))
def test_log_from_call_levels(level, number):
    log = call(level)
    assert (log["severity_number"], log["severity_text"]) == (number, level.upper())


@pytest.mark.parametrize("data", [[1, 2], "text", 7, None, True])
def test_non_object_data_is_dropped(data):
    log = call(data=data)
    assert log["attributes"] == {}


def test_defaults_service_unknown_and_null_ids():
    log = call()
    assert log["service_name"] == "unknown"
    assert log["trace_id"] is None and log["span_id"] is None


@pytest.mark.parametrize("data,needle", [
    ({}, "missing field 'message'"),
    ({"message": None}, "missing field 'message'"),
    ({"message": 5}, "'message' must be a string"),
    ({"message": "x", "trace_id": 1}, "'trace_id' must be a string"),
    ({"message": "x", "span_id": ["s"]}, "'span_id' must be a string"),
    ({"message": "x", "service_name": {}}, "'service_name' must be a string"),
])
def test_log_from_call_rejects(data, needle):
    with pytest.raises(ValueError, match=needle):
        log_from_call("info", data, resource=RES, engine_version="v", now_ns=1)


def test_log_from_call_rejects_non_object_and_unknown_level():
    with pytest.raises(ValueError, match="object"):
        log_from_call("info", "hi", resource=RES, engine_version="v", now_ns=1)
    with pytest.raises(ValueError, match="unknown log level"):
        log_from_call("fatal", {"message": "m"}, resource=RES, engine_version="v", now_ns=1)


def test_ring_buffer_evicts_oldest():
    store = LogStore(3, None)
    for i in range(8):
        store.add(entry(i, body=f"b{i}"))
    assert len(store) == 3
    out = store.list({}, now_ms=99)
    assert [log["body"] for log in out["logs"]] == ["b7", "b6", "b5"]
    assert out["total"] == 3


def test_ansi_stripped_from_body_and_string_attributes():
    store = LogStore(10, None)
    log = entry(1, body="\x1b[32m[REGISTERED]\x1b[0m fn \x1b]0;title\x07ok")
    log["attributes"] = {"target": "\x1b[1;31mred\x1b[0m", "n": 4, "nested": {"k": "\x1b[0m"}}
    stored = store.add(log)
    assert stored["body"] == "[REGISTERED] fn ok"
    assert stored["attributes"] == {"target": "red", "n": 4, "nested": {"k": "\x1b[0m"}}
    assert store.list(None, 1)["logs"][0]["body"] == "[REGISTERED] fn ok"
    assert log["body"].startswith("\x1b"), "the caller's dict is not mutated"


def test_list_exact_output_and_query_echo():
    store = LogStore(10, None)
    store.add(entry(1))
    out = store.list({}, now_ms=1234)
    assert out == {
        "logs": [entry(1)], "total": 1,
        "query": {"trace_id": None, "span_id": None, "severity_min": None,
                  "severity_text": None, "start_time": None, "end_time": None,
                  "offset": None, "limit": None},
        "timestamp": 1234}
    q = {"trace_id": "t", "span_id": "s", "severity_min": 9, "severity_text": "info",
         "start_time": 1, "end_time": 2, "offset": 0, "limit": 5}
    assert store.list(q, 1)["query"] == q


@pytest.fixture
def filled() -> LogStore:
    store = LogStore(100, None)
    store.add(entry(10, "debug", trace="t1", span="s1", body="a"))
    store.add(entry(20, "info", trace="t1", span="s2", body="b"))
    store.add(entry(30, "warn", trace="t2", span="s3", body="c"))
    store.add(entry(40, "error", trace="t2", span="s4", body="d"))
    store.add(entry(50, "info", body="e"))
    return store


def bodies(store: LogStore, **q) -> tuple[list[str], int]:
    out = store.list(q, 0)
    return [log["body"] for log in out["logs"]], out["total"]


def test_newest_first(filled):
    assert bodies(filled) == (["e", "d", "c", "b", "a"], 5)


def test_filter_trace_and_span(filled):
    assert bodies(filled, trace_id="t1") == (["b", "a"], 2)
    assert bodies(filled, span_id="s3") == (["c"], 1)
    assert bodies(filled, trace_id="t1", span_id="s3") == ([], 0)


def test_filter_severity(filled):
    assert bodies(filled, severity_min=13) == (["d", "c"], 2)
    assert bodies(filled, severity_text="InFo") == (["e", "b"], 2)
    assert bodies(filled, severity_text="INF") == ([], 0)


def test_filter_time_range_inclusive_ms(filled):
    assert bodies(filled, start_time=20, end_time=40) == (["d", "c", "b"], 3)
    assert bodies(filled, start_time=41) == (["e"], 1)
    assert bodies(filled, end_time=10) == (["a"], 1)


def test_paging_total_before_pagination(filled):
    assert bodies(filled, offset=1, limit=2) == (["d", "c"], 5)
    assert bodies(filled, offset=4) == (["a"], 5)
    assert bodies(filled, offset=9) == ([], 5)
    assert bodies(filled, limit=0) == ([], 5)


def test_equal_timestamps_keep_arrival_order():
    store = LogStore(10, None)
    for body in ("x", "y"):
        store.add(entry(5, body=body))
    assert bodies(store) == (["x", "y"], 2)


def test_ms_to_ns_overflow_gives_empty(filled):
    out = filled.list({"start_time": 2**64 - 1}, 7)
    assert out["logs"] == [] and out["total"] == 0 and out["query"]["start_time"] == 2**64 - 1
    assert filled.list({"end_time": 2**63}, 7)["total"] == 0


@pytest.mark.parametrize("q", [
    {"trace_id": 5}, {"span_id": True}, {"severity_text": 9}, {"severity_min": "9"},
    {"severity_min": 9.5}, {"severity_min": 2**40}, {"start_time": -1}, {"end_time": 1.5},
    {"offset": "0"}, {"limit": -2}, {"limit": True}, {"start_time": 2**64},
])
def test_wrong_query_types(filled, q):
    with pytest.raises(ValueError):
        filled.list(q, 0)
    with pytest.raises(ValueError):
        filled.list(["not", "a", "map"], 0)


def test_clear(filled):
    assert filled.clear() == {"success": True}
    assert len(filled) == 0 and filled.list({}, 0)["total"] == 0


def test_prune_by_retention_uses_observed_when_timestamp_zero():
    store = LogStore(10, 60)
    now = 1_000 * 1_000_000_000
    old, fresh, observed_only = entry(0), entry(0), entry(0)
    old["timestamp_unix_nano"] = now - 61 * 1_000_000_000
    fresh["timestamp_unix_nano"] = now - 59 * 1_000_000_000
    observed_only["timestamp_unix_nano"] = 0
    observed_only["observed_timestamp_unix_nano"] = now - 1
    old["body"], fresh["body"], observed_only["body"] = "old", "fresh", "obs"
    for log in (fresh, old, observed_only):  # arrival order differs from timestamp order
        store.add(log)
    assert store.prune(now) == 1
    assert sorted(log["body"] for log in store.list({}, 0)["logs"]) == ["fresh", "obs"]


def test_no_retention_never_prunes():
    store = LogStore(10, None)
    store.add(entry(1))
    assert store.prune(10**19) == 0 and len(store) == 1


def test_set_limits_shrinks_now_and_sets_retention():
    store = LogStore(10, None)
    for i in range(6):
        store.add(entry(i + 1, body=str(i)))
    store.set_limits(2, 1)
    assert bodies(store) == (["5", "4"], 2)
    assert store.prune(10 * 1_000_000_000) == 2
    store.set_limits(0, None)  # a zero cap still keeps one entry
    store.add(entry(1, body="x"))
    store.add(entry(2, body="y"))
    assert bodies(store) == (["y"], 1)


@pytest.mark.parametrize("config,sev,expected", [
    (None, "INFO", True), ({}, "DEBUG", True), ({"level": None}, "TRACE", True),
    ({"level": "all"}, "ERROR", True), ({"level": "ALL"}, "WARN", True),
    ({"level": "info"}, "INFO", True), ({"level": "info"}, "WARN", False),
    ({"level": "warn"}, "WARN", True), ({"level": "warning"}, "WARN", True),
    ({"level": "warn"}, "WARNING", True), ({"level": "error"}, "error", True),
    ({"level": "Error"}, "ERROR", True), ({"level": "debug"}, "TRACE", False),
])
def test_level_matches(config, sev, expected):
    assert level_matches(config, {"severity_text": sev}) is expected
