"""MetricStore, rollups, engine_metrics and builtin_value: exact engine::metrics::list and
engine::rollups::list shapes, filters, cap, retention, rollup levels (workers-b §4.2, §4.3)."""
from __future__ import annotations

import pytest

from brokers.observability.metrics import MetricStore, builtin_value, engine_metrics
from brokers.observability.rollups import aggregate_histograms, percentiles

S = 1_000_000_000
MS = 1_000_000
EMPTY_ENGINE = engine_metrics({}, [])


def num(name: str, ts: int, *values: float, kind: str = "gauge") -> dict:
    return {"name": name, "description": "", "unit": "1", "metric_type": kind,
            "data_points": [{"value": v, "attributes": [], "timestamp_unix_nano": ts}
                            for v in values],
            "service_name": "svc", "timestamp_unix_nano": ts}


def hist(name: str, ts: int, count: int, total: float, buckets: list[int],
         lo: float | None = None, hi: float | None = None) -> dict:
    return {"name": name, "description": "", "unit": "ms", "metric_type": "histogram",
            "data_points": [{"count": count, "sum": total, "bucket_counts": buckets,
                             "explicit_bounds": [10.0, 50.0], "min": lo, "max": hi,
                             "attributes": [], "timestamp_unix_nano": ts}],
            "service_name": "svc", "timestamp_unix_nano": ts}


def names(out: dict) -> list[tuple[str, int]]:
    return [(m["name"], m["timestamp_unix_nano"]) for m in out["sdk_metrics"]]


@pytest.fixture
def store() -> MetricStore:
    s = MetricStore(100, 3600)
    s.add([num("cpu", 30 * S, 1), num("mem", 10 * S, 2), num("cpu", 20 * S, 3)], now_ns=0)
    return s


def test_list_without_filters_exact_shape(store):
    out = store.list({}, EMPTY_ENGINE, now_ms=777)
    assert set(out) == {"engine_metrics", "sdk_metrics", "timestamp"}
    assert out["timestamp"] == 777 and out["engine_metrics"] is EMPTY_ENGINE
    assert names(out) == [("mem", 10 * S), ("cpu", 20 * S), ("cpu", 30 * S)]
    assert out["sdk_metrics"][0] == num("mem", 10 * S, 2)


def test_filter_by_name_and_time_range(store):
    assert names(store.list({"metric_name": "cpu"}, EMPTY_ENGINE, 0)) == [
        ("cpu", 20 * S), ("cpu", 30 * S)]
    out = store.list({"start_time": 10_000, "end_time": 20_000}, EMPTY_ENGINE, 0)
    assert names(out) == [("mem", 10 * S), ("cpu", 20 * S)]  # inclusive both ends
    assert out["query"] == {"start_time": 10_000, "end_time": 20_000,
                            "aggregate_interval": None, "metric_name": None}
    out = store.list({"start_time": 15_000, "end_time": 40_000, "metric_name": "cpu"},
                     EMPTY_ENGINE, 0)
    assert names(out) == [("cpu", 20 * S), ("cpu", 30 * S)]


def test_range_needs_both_times_but_query_echoed(store):
    out = store.list({"start_time": 25_000}, EMPTY_ENGINE, 0)
    assert len(out["sdk_metrics"]) == 3
    assert out["query"] == {"start_time": 25_000, "end_time": None,
                            "aggregate_interval": None, "metric_name": None}
    assert "query" not in store.list({"metric_name": "cpu"}, EMPTY_ENGINE, 0)


def test_aggregated_metrics_need_interval_and_both_times():
    s = MetricStore(100, 3600)
    s.add([num("lat", 61 * S, 1, 2, 3, 4, 5), num("lat", 62 * S, 6), num("lat", 130 * S, 10),
           hist("h", 61 * S, 1, 1.0, [1, 0, 0])], 0)
    out = s.list({"start_time": 0, "end_time": 200_000, "aggregate_interval": 60},
                 EMPTY_ENGINE, 0)
    assert out["aggregated_metrics"] == [
        {"name": "lat", "bucket_start_ns": 60 * S, "bucket_end_ns": 120 * S, "count": 6,
         "sum": 21.0, "min": 1.0, "max": 6.0, "avg": 3.5,
         "percentiles": {"p50": 4.0, "p75": 5.0, "p90": 6.0, "p95": 6.0, "p99": 6.0}},
        {"name": "lat", "bucket_start_ns": 120 * S, "bucket_end_ns": 180 * S, "count": 1,
         "sum": 10.0, "min": 10.0, "max": 10.0, "avg": 10.0}]
    assert out["query"]["aggregate_interval"] == 60
    no_end = s.list({"start_time": 0, "aggregate_interval": 60}, EMPTY_ENGINE, 0)
    assert "aggregated_metrics" not in no_end and no_end["query"]["aggregate_interval"] == 60


def test_overflow_and_bad_types(store):
    with pytest.raises(OverflowError, match="start_time value too large"):
        store.list({"start_time": 2**63, "end_time": 1}, EMPTY_ENGINE, 0)
    with pytest.raises(OverflowError, match="aggregate_interval value too large"):
        store.list({"start_time": 0, "end_time": 1, "aggregate_interval": 2**62},
                   EMPTY_ENGINE, 0)
    with pytest.raises(OverflowError, match="end_time"):
        store.rollups({"end_time": 2**63}, 0)
    for bad in ({"start_time": "1"}, {"metric_name": 3}, {"aggregate_interval": -1},
                {"end_time": True}):
        with pytest.raises(ValueError):
            store.list(bad, EMPTY_ENGINE, 0)
    with pytest.raises(ValueError):
        store.rollups({"level": "0"}, 0)


def test_count_cap_evicts_oldest_by_timestamp():
    s = MetricStore(3, 3600)
    s.add([num("m", t * S, t) for t in (5, 1, 4, 2, 3)], 0)
    assert len(s) == 3
    assert [m["timestamp_unix_nano"] for m in s.select()] == [3 * S, 4 * S, 5 * S]
    s.set_limits(1, 3600)
    s.add([num("m", 6 * S, 6)], 0)
    assert [m["timestamp_unix_nano"] for m in s.select()] == [6 * S]


def test_missing_timestamp_gets_now_and_bad_items_skipped():
    s = MetricStore(10, 3600)
    metric = num("m", 0, 1)
    del metric["timestamp_unix_nano"]
    assert s.add([metric, {"no": "name"}], now_ns=9 * S) == 1
    assert s.select()[0]["timestamp_unix_nano"] == 9 * S


def test_retention_prunes_old_metrics():
    s = MetricStore(10, 60)
    s.add([num("m", 10 * S, 1), num("m", 100 * S, 2), num("m", 40 * S, 3)], 0)
    assert s.prune(100 * S) == 1  # cutoff 40 s: 10 s goes, 40 s stays
    assert [m["timestamp_unix_nano"] for m in s.select()] == [40 * S, 100 * S]


def test_rollups_three_levels():
    s = MetricStore(100, 3600)
    s.add([num("r", 30 * S, 2), num("r", 90 * S, 4), num("r", 400 * S, 6),
           num("other", 30 * S, 1)], 0)
    now_ms = 2 * 3600 * 1000
    lvl0 = s.rollups({"start_time": 0, "end_time": now_ms, "metric_name": "r"}, now_ms)
    assert lvl0 == {
        "rollups": [
            {"name": "r", "bucket_start_ns": 0, "bucket_end_ns": 60 * S, "count": 1,
             "sum": 2.0, "min": 2.0, "max": 2.0, "avg": 2.0},
            {"name": "r", "bucket_start_ns": 60 * S, "bucket_end_ns": 120 * S, "count": 1,
             "sum": 4.0, "min": 4.0, "max": 4.0, "avg": 4.0},
            {"name": "r", "bucket_start_ns": 360 * S, "bucket_end_ns": 420 * S, "count": 1,
             "sum": 6.0, "min": 6.0, "max": 6.0, "avg": 6.0}],
        "histogram_rollups": [], "level": 0,
        "query": {"start_time": 0, "end_time": now_ms, "metric_name": "r"},
        "timestamp": now_ms}
    lvl1 = s.rollups({"start_time": 0, "end_time": now_ms, "level": 1, "metric_name": "r"}, 0)
    assert [(r["bucket_start_ns"], r["count"], r["sum"]) for r in lvl1["rollups"]] == [
        (0, 2, 6.0), (300 * S, 1, 6.0)]
    lvl2 = s.rollups({"start_time": 0, "end_time": now_ms, "level": 2}, 0)
    assert [(r["name"], r["count"], r["min"], r["max"], r["avg"]) for r in lvl2["rollups"]] \
        == [("other", 1, 1.0, 1.0, 1.0), ("r", 3, 2.0, 6.0, 4.0)]
    assert s.rollups({"start_time": 0, "end_time": now_ms, "level": 3}, 0)["rollups"] == []


def test_rollups_default_range_is_last_hour_and_bucket_must_fit():
    s = MetricStore(100, 10**6)
    s.add([num("r", 10 * S, 1), num("r", 3700 * S, 2), num("r", 7190 * S, 3)], 0)
    out = s.rollups({}, now_ms=7200 * 1000)  # window [3600 s, 7200 s]
    assert [r["bucket_start_ns"] for r in out["rollups"]] == [3660 * S, 7140 * S]
    assert out["query"] == {"start_time": None, "end_time": None, "metric_name": None}
    partial = s.rollups({"start_time": 3690_000, "end_time": 7200_000}, 0)
    assert [r["bucket_start_ns"] for r in partial["rollups"]] == [7140 * S]


def test_histogram_rollups_sum_buckets():
    s = MetricStore(100, 3600)
    s.add([hist("d", 5 * S, 3, 60.0, [1, 1, 1], 2.0, 40.0),
           hist("d", 50 * S, 2, 20.0, [2, 0, 0], 1.0, 9.0),
           hist("d", 55 * S, 1, 5.0, [1, 0], 0.5, 0.5)], 0)  # mismatched buckets: not merged
    out = s.rollups({"start_time": 0, "end_time": 3_600_000}, 0)
    assert out["rollups"] == []
    assert out["histogram_rollups"] == [
        {"name": "d", "bucket_start_ns": 0, "bucket_end_ns": 60 * S, "total_count": 6,
         "total_sum": 85.0, "min": 0.5, "max": 40.0, "bucket_counts": [3, 1, 1],
         "explicit_bounds": [10.0, 50.0]}]
    assert aggregate_histograms(s.select(), 60 * S) == out["histogram_rollups"]


def test_rollup_retention_per_level():
    s = MetricStore(100, 10**9)
    s.add([num("r", 0, 1)], 0)
    now_ms = 2 * 3600 * 1000
    s.prune(now_ms * MS)  # 2 h later: level 0 (kept 1 h) is gone, 5 min and 1 h stay
    q = {"start_time": 0, "end_time": now_ms}
    assert s.rollups({**q, "level": 0}, 0)["rollups"] == []
    assert len(s.rollups({**q, "level": 1}, 0)["rollups"]) == 1
    s.prune(7 * 3600 * 1000 * MS)
    assert s.rollups({**q, "level": 1}, 0)["rollups"] == []
    assert len(s.rollups({**q, "level": 2}, 0)["rollups"]) == 1
    s.prune(8 * 24 * 3600 * S)
    assert s.rollups({**q, "level": 2}, 0)["rollups"] == []


def test_percentiles_nearest_rank():
    assert percentiles([]) == {"p50": 0.0, "p75": 0.0, "p90": 0.0, "p95": 0.0, "p99": 0.0}
    values = [float(v) for v in range(1, 101)]
    assert percentiles(values) == {"p50": 51.0, "p75": 76.0, "p90": 91.0, "p95": 96.0,
                                   "p99": 100.0}


def test_value_in_window():
    s = MetricStore(100, 3600)
    now = 1000 * S
    s.add([num("c", 900 * S, 5, kind="counter"), num("c", 990 * S, 2, 3, kind="counter"),
           num("g", 960 * S, 2), num("g", 999 * S, 4, 6),
           num("u", 995 * S, -2, kind="updowncounter"),
           hist("h", 980 * S, 2, 7.5, [2, 0, 0])], 0)
    assert s.value_in_window("c", 60, now) == 5.0
    assert s.value_in_window("c", 200, now) == 10.0
    assert s.value_in_window("g", 60, now) == 4.0
    assert s.value_in_window("u", 60, now) == -2.0
    assert s.value_in_window("h", 60, now) == 7.5
    assert s.value_in_window("g", 0.5, now) is None
    assert s.value_in_window("missing", 60, now) is None


def stats(calls=None, gauges=None, counters=None) -> dict:
    return {"process": "p", "unit": "u", "calls": calls or {}, "gauges": gauges or {},
            "counters": counters or {}}


def test_engine_metrics_sums_processes():
    out = engine_metrics({
        "gateway-0": stats({"a::x": [3, 1, [0] * 15, 0.1], "b": [0, 0, [0] * 15, 0.0]},
                           {"worker_connections": [[{}, 2]]},
                           {"worker_spawns_total": [[{}, 5]], "worker_deaths_total": [[{}, 3]]}),
        "gateway-1": stats({"a::x": [2, 0, [0] * 15, 0.1], "c": [4, 4, [0] * 15, 0.2]},
                           {"worker_connections": [[{"x": "1"}, 1], [{"x": "2"}, 1]]},
                           {"worker_spawns_total": [[{}, 1]]}),
        "state-0": stats(gauges={"queue_depth": [[{"queue": "q"}, 9]]}),
    }, [4.0, 1.0, 3.0, 2.0])
    assert out == {
        "invocations": {"total": 9, "success": 4, "error": 5, "deferred": 0,
                        "by_function": {"a::x": 5, "c": 4}},
        "workers": {"spawns": 6, "deaths": 3, "active": 4},
        "performance": {"avg_duration_ms": 2.5, "p50_duration_ms": 3.0,
                        "p95_duration_ms": 4.0, "p99_duration_ms": 4.0,
                        "min_duration_ms": 1.0, "max_duration_ms": 4.0}}


def test_engine_metrics_empty_and_malformed():
    assert EMPTY_ENGINE == {
        "invocations": {"total": 0, "success": 0, "error": 0, "deferred": 0, "by_function": {}},
        "workers": {"spawns": 0, "deaths": 0, "active": 0},
        "performance": {"avg_duration_ms": 0.0, "p50_duration_ms": 0.0,
                        "p95_duration_ms": 0.0, "p99_duration_ms": 0.0,
                        "min_duration_ms": 0.0, "max_duration_ms": 0.0}}
    out = engine_metrics({"x": stats({"f": "bad", "g": [1]}, {"worker_connections": "no"}),
                          "y": "junk"}, [])
    assert out["invocations"]["total"] == 0 and out["workers"]["active"] == 0


def test_builtin_value():
    engine = engine_metrics({"g": stats({"f": [7, 2, [], 0.0]},
                                        {"worker_connections": [[{}, 3]]},
                                        {"worker_spawns_total": [[{}, 4]],
                                         "worker_deaths_total": [[{}, 1]]})}, [])
    expected = {"iii.invocations.total": 7.0, "iii.invocations.success": 5.0,
                "iii.invocations.error": 2.0, "iii.invocations.deferred": 0.0,
                "iii.workers.spawns": 4.0, "iii.workers.deaths": 1.0, "iii.workers.active": 3.0}
    for name, value in expected.items():
        assert builtin_value(name, engine) == value
    assert builtin_value("app.latency", engine) is None
    assert builtin_value("iii.invocations.total", {}) is None
