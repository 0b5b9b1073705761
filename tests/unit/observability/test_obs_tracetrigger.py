"""TraceCoalescer: the `trace` trigger type's window, matching and loop prevention (workers-b §4.5)."""
from __future__ import annotations

from brokers.observability import otlp
from brokers.observability.tracetrigger import TraceCoalescer, is_observability_function

A, B, C = "a" * 32, "b" * 32, "c" * 32


def sp(trace, span="1" * 16, parent="f" * 16, service="orders", status="ok", fn=None, kind=None):
    attrs = []
    if fn is not None:
        attrs.append(["function_id", fn])
    if kind is not None:
        attrs.append(["iii.function.kind", kind])
    return {"trace_id": trace, "span_id": span, "parent_span_id": parent, "name": "x", "start_time_unix_nano": 1,
            "end_time_unix_nano": 2, "status": status, "attributes": attrs, "service_name": service,
            "events": [], "links": []}


def binding(fn="watch::traces", **config):
    return {"id": "t", "trigger_type": "trace", "function_id": fn, "config": config}


def test_window_closes_after_its_first_span_plus_window():
    c = TraceCoalescer(window_s=0.3)
    assert c.next_deadline() is None and c.due(100.0, {"t1": binding()}) == []
    c.offer([sp(B)], now=10.0)
    c.offer([sp(A)], now=10.2)
    assert c.next_deadline() == 10.0 + 0.3
    assert c.due(10.29, {"t1": binding()}) == []
    assert c.due(10.3, {"t1": binding()}) == [("t1", {"trace_ids": [A, B]})]
    assert c.next_deadline() is None and len(c) == 0
    assert c.due(20.0, {"t1": binding()}) == []  # nothing fires twice


def test_trace_ids_distinct_and_sorted():
    c = TraceCoalescer()
    c.offer([sp(C), sp(A), sp(C, span="2" * 16), sp(B), sp(A)], now=0.0)
    assert c.due(1.0, {"t": binding()}) == [("t", {"trace_ids": [A, B, C]})]


def test_config_filters_case_insensitive_exact_and_anded():
    c = TraceCoalescer()
    c.offer([sp(A, service="Orders", status="ok"), sp(B, service="orders", status="error"),
             sp(C, service="orders-v2", status="error")], now=0.0)
    bindings = {
        "all": binding(),
        "svc": binding(service_name="ORDERS"),
        "err": binding(status="ERROR"),
        "both": binding(service_name="orders", status="error"),
        "none": binding(service_name="orders", status="unset"),
    }
    fires = dict(c.due(1.0, bindings))
    assert fires == {"all": {"trace_ids": [A, B, C]}, "svc": {"trace_ids": [A, B]},
                     "err": {"trace_ids": [B, C]}, "both": {"trace_ids": [B]}}


def test_observability_function_spans_are_excluded():
    c = TraceCoalescer()
    c.offer([sp(A, fn="engine::traces::list"), sp(A, fn="engine::log::info"), sp(A, fn="engine::logs::list"),
             sp(A, fn="engine::metrics::list"), sp(A, fn="engine::rollups::list"), sp(A, fn="engine::health::check"),
             sp(A, fn="engine::sampling::rules"), sp(A, fn="engine::baggage::get"), sp(A, fn="engine::alerts::list"),
             sp(A, fn="iii-observability::ui-content")], now=0.0)
    assert len(c) == 0 and c.due(5.0, {"t": binding()}) == []
    assert is_observability_function("engine::traces::tree")
    assert not is_observability_function("engine::workers::list")


def test_context_free_internal_spans_excluded_but_parented_ones_kept():
    c = TraceCoalescer()
    c.offer([sp(A, parent=None, fn="stream::send", kind="internal"),
             sp(B, parent=None, fn="engine::workers::list"),
             sp(C, parent="9" * 16, fn="state::get", kind="internal")], now=0.0)
    assert c.due(1.0, {"t": binding()}) == [("t", {"trace_ids": [C]})]


def test_spans_of_bound_trigger_functions_do_not_refire():
    c = TraceCoalescer()
    bindings = {"t1": binding(fn="watch::traces"), "t2": binding(fn="audit::traces", status="ok")}
    c.offer([sp(A, fn="watch::traces"), sp(B, fn="audit::traces"), sp(C, fn="orders::create")], now=0.0)
    assert dict(c.due(1.0, bindings)) == {"t1": {"trace_ids": [C]}, "t2": {"trace_ids": [C]}}
    # a window of nothing but delivery spans fires nobody
    c.offer([sp(A, fn="watch::traces")], now=2.0)
    assert c.due(3.0, bindings) == []


def test_other_trigger_types_and_odd_bindings_are_ignored():
    c = TraceCoalescer()
    c.offer([sp(A), {"not": "a span"}, None], now=0.0)  # type: ignore[list-item]
    bindings = {"log": {"id": "log", "trigger_type": "log", "function_id": "f", "config": {}},
                "weird": {"id": "weird", "trigger_type": "trace", "function_id": "g", "config": None},
                "junk": "x"}
    assert c.due(1.0, bindings) == [("weird", {"trace_ids": [A]})]  # type: ignore[arg-type]


def test_works_on_spans_straight_from_the_parsers():
    rec = otlp.span_from_record([A, "1" * 16, None, "GET /x", 1, 2, 2, {"iii.function.kind": "user"}, "boom"], "iii")
    c = TraceCoalescer(window_s=0.5)
    c.offer([rec], now=1.0)
    assert c.due(1.5, {"e": binding(service_name="iii", status="error")}) == [("e", {"trace_ids": [A]})]
