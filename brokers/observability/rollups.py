"""Time-bucket aggregation of SDK metric data points (workers-b §4.2, §4.3).

Owns: the ``AggregatedMetric`` / histogram-rollup shapes, percentiles, on-the-fly bucketing
of a list of ``StoredMetric`` dicts, and the 3-level rollup store fed on every ingest
(1 min kept 1 h, 5 min kept 6 h, 1 h kept 7 d).

Invariants:
  * a bucket of interval ``i`` starts at ``ts // i * i`` of the metric's timestamp;
  * number data points feed ``AggregatedMetric`` (count/sum/min/max/avg); histogram data
    points of histogram metrics feed histogram rollups (counts, sums and bucket counts
    summed; bucket counts merged only when their lengths agree);
  * outputs are sorted by (name, bucket_start_ns); pure — ``now`` is passed in.
"""
from __future__ import annotations

from typing import Iterable

NS = 1_000_000_000
LEVELS = ((60 * NS, 3600 * NS), (300 * NS, 6 * 3600 * NS), (3600 * NS, 7 * 24 * 3600 * NS))
"""(interval_ns, retention_ns) per rollup level 0, 1, 2."""


def is_number_point(dp: dict) -> bool:
    return "value" in dp


def percentiles(sorted_values: list[float]) -> dict:
    """p50/p75/p90/p95/p99 by nearest-rank index ``int(len * p)`` (0s when empty)."""
    n = len(sorted_values)
    if n == 0:
        return {"p50": 0.0, "p75": 0.0, "p90": 0.0, "p95": 0.0, "p99": 0.0}
    pick = lambda p: sorted_values[min(int(n * p), n - 1)]  # noqa: E731
    return {"p50": pick(0.50), "p75": pick(0.75), "p90": pick(0.90), "p95": pick(0.95),
            "p99": pick(0.99)}


def _number_agg(name: str, start: int, interval: int, values: list[float],
                with_percentiles: bool) -> dict:
    total = float(sum(values))
    out = {"name": name, "bucket_start_ns": start, "bucket_end_ns": start + interval,
           "count": len(values), "sum": total, "min": float(min(values)),
           "max": float(max(values)), "avg": total / len(values)}
    if with_percentiles and len(values) >= 5:
        out["percentiles"] = percentiles(sorted(float(v) for v in values))
    return out


def _new_hist(name: str, start: int, interval: int, dp: dict) -> dict:
    return {"name": name, "bucket_start_ns": start, "bucket_end_ns": start + interval,
            "total_count": 0, "total_sum": 0.0, "min": None, "max": None,
            "bucket_counts": [0] * len(dp.get("bucket_counts") or []),
            "explicit_bounds": list(dp.get("explicit_bounds") or [])}


def _merge_hist(entry: dict, dp: dict) -> None:
    entry["total_count"] += int(dp.get("count") or 0)
    entry["total_sum"] += float(dp.get("sum") or 0.0)
    for key, pick in (("min", min), ("max", max)):
        value = dp.get(key)
        if value is not None:
            entry[key] = value if entry[key] is None else pick(entry[key], value)
    counts = dp.get("bucket_counts") or []
    if len(counts) == len(entry["bucket_counts"]):
        entry["bucket_counts"] = [a + int(b) for a, b in zip(entry["bucket_counts"], counts)]


def aggregate_numbers(metrics: Iterable[dict], interval_ns: int) -> list[dict]:
    """``AggregatedMetric`` per (name, bucket) over every number data point (with percentiles
    when a bucket holds at least 5 values)."""
    buckets: dict[tuple[str, int], list[float]] = {}
    for metric in metrics:
        start = metric["timestamp_unix_nano"] // interval_ns * interval_ns
        for dp in metric.get("data_points", []):
            if is_number_point(dp):
                buckets.setdefault((metric["name"], start), []).append(dp["value"])
    return [_number_agg(name, start, interval_ns, values, True)
            for (name, start), values in sorted(buckets.items())]


def aggregate_histograms(metrics: Iterable[dict], interval_ns: int) -> list[dict]:
    """Histogram rollup rows per (name, bucket) over histogram metrics' histogram points."""
    buckets: dict[tuple[str, int], dict] = {}
    for metric in metrics:
        if metric.get("metric_type") != "histogram":
            continue
        start = metric["timestamp_unix_nano"] // interval_ns * interval_ns
        for dp in metric.get("data_points", []):
            if not is_number_point(dp):
                key = (metric["name"], start)
                if key not in buckets:
                    buckets[key] = _new_hist(metric["name"], start, interval_ns, dp)
                _merge_hist(buckets[key], dp)
    return [buckets[key] for key in sorted(buckets)]


class Rollups:
    """Pre-aggregated buckets per level, updated on every ingest, pruned by level age."""

    def __init__(self, levels: tuple[tuple[int, int], ...] = LEVELS) -> None:
        self.levels = levels
        self._numbers: list[dict[tuple[str, int], list]] = [{} for _ in levels]
        self._hists: list[dict[tuple[str, int], dict]] = [{} for _ in levels]

    def add(self, metrics: Iterable[dict]) -> None:
        metrics = list(metrics)
        for level, (interval, _) in enumerate(self.levels):
            numbers, hists = self._numbers[level], self._hists[level]
            for metric in metrics:
                name = metric["name"]
                start = metric["timestamp_unix_nano"] // interval * interval
                key = (name, start)
                histogram = metric.get("metric_type") == "histogram"
                for dp in metric.get("data_points", []):
                    if histogram and not is_number_point(dp):
                        if key not in hists:
                            hists[key] = _new_hist(name, start, interval, dp)
                        _merge_hist(hists[key], dp)
                    elif not histogram and is_number_point(dp):
                        acc = numbers.setdefault(key, [0, 0.0, float("inf"), float("-inf")])
                        value = float(dp["value"])
                        acc[0] += 1
                        acc[1] += value
                        acc[2] = min(acc[2], value)
                        acc[3] = max(acc[3], value)

    def query(self, level: int, start_ns: int, end_ns: int,
              name: str | None) -> tuple[list[dict], list[dict]]:
        """(rollups, histogram_rollups) of ``level`` whose buckets lie inside [start, end]."""
        if not 0 <= level < len(self.levels):
            return [], []
        interval = self.levels[level][0]
        inside = lambda key: (start_ns <= key[1] and key[1] + interval <= end_ns  # noqa: E731
                              and (name is None or key[0] == name))
        rows = []
        for key in sorted(k for k in self._numbers[level] if inside(k)):
            count, total, low, high = self._numbers[level][key]
            rows.append({"name": key[0], "bucket_start_ns": key[1],
                         "bucket_end_ns": key[1] + interval, "count": count, "sum": total,
                         "min": low, "max": high, "avg": total / count})
        hists = [dict(self._hists[level][k]) for k in sorted(self._hists[level]) if inside(k)]
        return rows, hists

    def prune(self, now_ns: int) -> None:
        for level, (_, retention) in enumerate(self.levels):
            cutoff = max(0, now_ns - retention)
            for table in (self._numbers[level], self._hists[level]):
                for key in [k for k in table if k[1] < cutoff]:
                    del table[key]
