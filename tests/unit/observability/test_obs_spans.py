"""SpanStore and the engine::traces::list|tree|group_by semantics (workers-b §4.2, §4.3)."""
from __future__ import annotations

import pytest

from brokers.observability import otlp
from brokers.observability.spans import SpanStore

MS = 1_000_000
T1, T2, T3 = "1" * 32, "2" * 32, "3" * 32


def sp(trace, span, parent=None, name="op", start=0, end=10, status="ok", service="svc", attrs=(), pending=False):
    """A StoredSpan with times in ms (stored in ns)."""
    out = {"trace_id": trace, "span_id": span, "parent_span_id": parent, "name": name,
           "start_time_unix_nano": start * MS, "end_time_unix_nano": 0 if pending else end * MS,
           "status": status, "attributes": [list(a) for a in attrs], "service_name": service,
           "events": [], "links": []}
    if pending:
        out["pending"] = True
    return out


def names(result):
    return [s["name"] for s in result["spans"]]


@pytest.fixture
def store():
    """Three traces: T1 user HTTP trace with children, T2 internal, T3 continued from a remote parent."""
    s = SpanStore(1000)
    s.add([
        sp(T1, "a1", name="GET /orders", start=100, end=400, service="Orders-API",
           attrs=[("http.method", "GET"), ("iii.tag.customer", "acme")]),
        sp(T1, "a2", "a1", name="execute orders::get", start=110, end=300,
           attrs=[("function_id", "orders::get"), ("iii.function.kind", "user")]),
        sp(T1, "a3", "a2", name="call state::get", start=120, end=130, status="error",
           attrs=[("function_id", "state::get"), ("iii.function.kind", "internal")]),
        sp(T2, "b1", name="call engine::workers::list", start=50, end=51, service="iii",
           attrs=[("function_id", "engine::workers::list")]),
        sp(T3, "c1", "remote00000000ff", name="POST /pay", start=500, end=900, status="unset", service="billing",
           attrs=[("http.method", "POST"), ("iii.session.id", "s-9")]),
        sp(T3, "c2", "c1", name="execute pay::run", start=510, end=520, service="billing",
           attrs=[("function_id", "pay::run"), ("http.method", "GET")]),
    ])
    return s


def test_default_list_is_root_rows_without_internal(store):
    out = store.list({})
    assert names(out) == ["GET /orders", "POST /pay"]  # T2 root is internal; T3 parent is remote → root
    assert out["total"] == 2 and out["offset"] == 0 and out["limit"] == 100
    assert out["storage"] == {"archive": "disabled", "completeness": "complete", "known_dropped_spans": 0,
                              "physical_bytes": 0, "max_disk_bytes": 0, "last_error": None}
    assert out["spans"][0]["trace_tags"] == {"iii.tag.customer": "acme"}
    assert out["spans"][1]["trace_tags"] == {"iii.session.id": "s-9"}
    assert names(store.list({"include_internal": True})) == ["call engine::workers::list", "GET /orders", "POST /pay"]


def test_list_results_are_copies(store):
    row = store.list({"trace_id": T1})["spans"][0]
    row["name"] = "mutated"
    assert "trace_tags" not in store.trace(T1)[0]
    assert store.list({"trace_id": T1})["spans"][0]["name"] == "GET /orders"


def test_trace_id_and_trace_ids_filters(store):
    assert names(store.list({"trace_id": T3})) == ["POST /pay"]
    assert names(store.list({"trace_id": "f" * 32})) == []
    assert names(store.list({"trace_ids": [T3, T1, T3]})) == ["GET /orders", "POST /pay"]
    assert names(store.list({"trace_id": T1, "search_all_spans": True})) == ["GET /orders", "execute orders::get"]
    assert len(store.list({"trace_id": T1, "search_all_spans": True, "include_internal": True})["spans"]) == 3


def test_text_filters_are_case_insensitive_substrings(store):
    assert names(store.list({"service_name": "orders"})) == ["GET /orders"]
    assert names(store.list({"name": "post"})) == ["POST /pay"]
    assert names(store.list({"status": "UNS"})) == ["POST /pay"]
    assert names(store.list({"status": "error"})) == []  # the error span is not a root row
    assert names(store.list({"status": "error", "search_all_spans": True, "include_internal": True})) == [
        "call state::get"]


def test_duration_filters_and_pending_duration_so_far(store):
    assert names(store.list({"min_duration_ms": 301})) == ["POST /pay"]
    assert names(store.list({"max_duration_ms": 300})) == ["GET /orders"]
    assert names(store.list({"min_duration_ms": 300, "max_duration_ms": 300.0})) == ["GET /orders"]
    store.add([sp("4" * 32, "d1", name="slow", start=1000, pending=True)])
    assert names(store.list({"min_duration_ms": 5000}, now_ns=7000 * MS)) == ["slow"]
    assert names(store.list({"min_duration_ms": 5000}, now_ns=2000 * MS)) == []


def test_time_window_is_an_overlap_test(store):
    assert names(store.list({"start_time": 401})) == ["POST /pay"]
    assert names(store.list({"start_time": 400})) == ["GET /orders", "POST /pay"]
    assert names(store.list({"end_time": 499})) == ["GET /orders"]
    assert names(store.list({"start_time": 350, "end_time": 600})) == ["GET /orders", "POST /pay"]
    store.add([sp("4" * 32, "d1", name="live", start=1000, pending=True)])
    assert "live" in names(store.list({"start_time": 5000}, now_ns=6000 * MS))


def test_sorting(store):
    assert names(store.list({"sort_by": "duration"})) == ["GET /orders", "POST /pay"]
    assert names(store.list({"sort_by": "duration_ms", "sort_order": "desc"})) == ["POST /pay", "GET /orders"]
    assert names(store.list({"sort_by": "service_name"})) == ["GET /orders", "POST /pay"]  # "Orders-API" < "billing"
    assert names(store.list({"sort_by": "name", "sort_order": "DESC"})) == ["POST /pay", "GET /orders"]
    assert names(store.list({"sort_order": "desc"})) == ["POST /pay", "GET /orders"]
    assert names(store.list({"sort_order": "ASC"})) == ["GET /orders", "POST /pay"]
    assert names(store.list({"sort_by": "bogus"})) == ["GET /orders", "POST /pay"]  # falls back to start_time


def test_attribute_filters(store):
    assert names(store.list({"attributes": [["http.method", "GET"]]})) == ["GET /orders"]
    assert names(store.list({"attributes": [["http.method", "GET"], ["iii.tag.customer", "x"]]})) == []
    assert names(store.list({"attributes": [["http.method"]]})) == ["GET /orders", "POST /pay"]  # ignored pair
    assert names(store.list({"exclude_attributes": [["http.method", "POST"], ["nope", "x"]]})) == ["GET /orders"]
    # search_all_spans: a trace matches when ANY of its spans matches; all its spans are rows
    rows = store.list({"search_all_spans": True, "attributes": [["http.method", "GET"]]})
    assert names(rows) == ["GET /orders", "execute orders::get", "POST /pay", "execute pay::run"]


def test_search_all_spans_name_matches_any_span_of_the_trace(store):
    assert names(store.list({"name": "pay::run"})) == []
    assert names(store.list({"name": "pay::run", "search_all_spans": True})) == ["POST /pay", "execute pay::run"]


def test_paging(store):
    out = store.list({"search_all_spans": True, "offset": 1, "limit": 2})
    assert out["total"] == 4 and out["offset"] == 1 and out["limit"] == 2
    assert names(out) == ["execute orders::get", "POST /pay"]
    assert store.list({"offset": 10})["spans"] == [] and store.list({"offset": 10})["total"] == 2
    assert store.list({"limit": 0})["spans"] == []


@pytest.mark.parametrize("query, field", [
    ({"limit": "10"}, "limit"), ({"offset": -1}, "offset"), ({"offset": True}, "offset"),
    ({"trace_id": 5}, "trace_id"), ({"trace_ids": "abc"}, "trace_ids"), ({"trace_ids": [1]}, "trace_ids"),
    ({"min_duration_ms": "5"}, "min_duration_ms"), ({"include_internal": "yes"}, "include_internal"),
    ({"attributes": [["k", 1]]}, "attributes"), ({"exclude_attributes": {"k": "v"}}, "exclude_attributes"),
    ({"start_time": 1.5}, "start_time"), ({"sort_by": 3}, "sort_by"),
])
def test_bad_query_values_raise_value_error(store, query, field):
    with pytest.raises(ValueError, match=field):
        store.list(query)


def test_nulls_mean_absent(store):
    assert names(store.list({"limit": None, "name": None, "include_internal": None})) == ["GET /orders", "POST /pay"]


def test_tree_nests_and_treats_missing_parents_as_roots(store):
    out = store.tree({"trace_id": T1})
    (root,) = out["roots"]
    assert root["span_id"] == "a1" and root["name"] == "GET /orders"
    assert [c["span_id"] for c in root["children"]] == ["a2"]
    assert [c["span_id"] for c in root["children"][0]["children"]] == ["a3"]
    assert root["children"][0]["children"][0]["children"] == []
    assert out["storage"]["archive"] == "disabled"
    assert [r["span_id"] for r in store.tree({"trace_id": T3})["roots"]] == ["c1"]
    assert store.tree({"trace_id": "f" * 32})["roots"] == []
    with pytest.raises(ValueError, match="trace_id"):
        store.tree({})


def test_tree_collapse_rules_reparent_children():
    s = SpanStore(100, collapse=[{"name": "call queue::*"}, {"name": "hop?", "service": "edge"}])
    s.add([sp(T1, "r", name="root"),
           sp(T1, "q", "r", name="call queue::push"),
           sp(T1, "h", "q", name="hop1", service="edge"),
           sp(T1, "k", "q", name="hop2", service="core"),
           sp(T1, "l", "h", name="leaf")])
    (root,) = s.tree({"trace_id": T1})["roots"]
    assert [c["name"] for c in root["children"]] == ["hop2", "leaf"]
    assert root["children"][1]["parent_span_id"] == "r"
    assert s.trace(T1)[4]["parent_span_id"] == "h"  # the stored span is untouched
    s.set_collapse([])
    (root,) = s.tree({"trace_id": T1})["roots"]
    assert [c["name"] for c in root["children"]] == ["call queue::push"]


def test_tree_prunes_childless_trigger_wrappers_to_a_fixpoint():
    s = SpanStore(100)
    s.add([sp(T1, "r", name="root"),
           sp(T1, "w1", "r", name="state_triggers"),
           sp(T1, "w2", "w1", name="stream_triggers"),
           sp(T1, "w3", "r", name="state_triggers"),
           sp(T1, "h", "w3", name="execute on-change")])
    (root,) = s.tree({"trace_id": T1})["roots"]
    assert [c["span_id"] for c in root["children"]] == ["w3"]
    assert root["children"][0]["children"][0]["name"] == "execute on-change"


def test_pending_span_replaced_in_place():
    s = SpanStore(3)
    s.add([sp(T1, "r", name="root", start=0, pending=True), sp(T1, "c", "r", name="child", start=1, end=2)])
    assert s.list({})["spans"][0]["pending"] is True
    assert s.durations_ms() == [1.0]
    s.add([sp(T1, "r", name="root", start=0, end=50)])
    assert len(s) == 2
    row = s.list({})["spans"][0]
    assert "pending" not in row and row["end_time_unix_nano"] == 50 * MS
    assert [x["span_id"] for x in s.trace(T1)] == ["r", "c"]  # position kept
    s.add([sp(T1, "r", name="root", start=0, pending=True)])  # a late snapshot never un-ends a span
    assert "pending" not in s.trace(T1)[0]
    # age is kept too: the replaced root is still the oldest and goes first
    s.add([sp(T2, "x", start=3), sp(T2, "y", "x", start=4)])
    assert [x["span_id"] for x in s.trace(T1)] == ["c"]


def test_eviction_counts_drops_and_marks_partial():
    s = SpanStore(2)
    s.add([sp(T1, "a", start=1), sp(T1, "b", "a", start=2)])
    assert s.status()["completeness"] == "complete"
    s.add([sp(T2, "c", start=3)])
    assert len(s) == 2 and s.status()["known_dropped_spans"] == 1 and s.status()["completeness"] == "partial"
    assert names(s.list({})) == ["op", "op"]  # b's parent was evicted → b is a root row now
    assert {r["span_id"] for r in s.list({})["spans"]} == {"b", "c"}
    s.set_capacity(1)
    assert [r["span_id"] for r in s.list({})["spans"]] == ["c"] and s.status()["known_dropped_spans"] == 2
    assert s.tree({"trace_id": T1})["roots"] == []
    assert s.clear() == {"success": True}
    assert len(s) == 0 and s.status()["completeness"] == "complete" and s.hot_bytes() == 0


def test_hot_bytes_tracks_contents():
    s = SpanStore(10)
    s.add([sp(T1, "a", attrs=[("k", "v" * 100)])])
    one = s.hot_bytes()
    assert one > 100
    s.add([sp(T1, "b")])
    assert s.hot_bytes() > one
    s.set_capacity(1)
    assert 0 < s.hot_bytes() < one


def test_add_skips_dicts_without_ids_and_accepts_parsed_otlp():
    s = SpanStore(10)
    s.add([{"name": "no ids"}, sp(T1, "a")])
    doc = {"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": T2, "spanId": "b" * 16, "name": "sdk", "startTimeUnixNano": "5", "endTimeUnixNano": "9"}]}]}]}
    s.add(otlp.spans_from_otlp(doc))
    assert len(s) == 2 and names(s.list({"service_name": "unknown"})) == ["sdk"]


def test_group_by():
    s = SpanStore(100)
    s.add([
        sp(T1, "a", name="turn", start=1000, end=1500, attrs=[("session", "s1"), ("title", "old")]),
        sp(T1, "b", "a", name="tool", start=1100, end=1200, status="error", attrs=[("session", "s1")]),
        sp(T2, "c", name="turn", start=3000, end=3100, attrs=[("session", "s1"), ("title", "new")]),
        sp(T3, "d", name="turn", start=5000, pending=True, attrs=[("session", "s2")]),
        sp(T3, "e", "d", name="call engine::x", start=5001, end=5002,
           attrs=[("session", "s2"), ("function_id", "engine::x")]),
        sp(T3, "f", "d", name="no attr", start=5003, end=5004),
    ])
    out = s.group_by({"attribute": "session", "label_attribute": "title"}, now_ms=8000)
    assert out["storage"]["archive"] == "disabled"
    assert out["groups"] == [
        {"value": "s2", "label": None, "trace_ids": [T3], "span_count": 1, "first_seen_ms": 5000,
         "last_seen_ms": 8000, "duration_ms": 3000, "error_count": 0},
        {"value": "s1", "label": "new", "trace_ids": [T1, T2], "span_count": 3, "first_seen_ms": 1000,
         "last_seen_ms": 3100, "duration_ms": 2100, "error_count": 1},
    ]
    assert s.group_by({"attribute": "session", "include_internal": True}, 8000)["groups"][0]["span_count"] == 2
    assert [g["value"] for g in s.group_by({"attribute": "session", "since_ms": 3200}, 8000)["groups"]] == ["s2"]
    assert [g["value"] for g in s.group_by({"attribute": "session", "limit": 1}, 8000)["groups"]] == ["s2"]
    assert s.group_by({"attribute": "nope"}, 8000)["groups"] == []
    with pytest.raises(ValueError, match="attribute"):
        s.group_by({}, 8000)
    with pytest.raises(ValueError, match="limit"):
        s.group_by({"attribute": "session", "limit": "5"}, 8000)
