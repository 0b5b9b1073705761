"""SDK metrics store, ``engine::metrics::list`` / ``engine::rollups::list`` outputs, and the
engine counters view (workers-b §4.2, §4.3, §4.6).

Owns: the in-memory ``StoredMetric`` store (count cap, age retention, a cap of 10 000
distinct names), its 3-level rollups (see ``rollups``), the windowed value an alert rule
reads, and the ``engine_metrics`` object built from the engine processes' stats.

Invariants:
  * metrics are held in timestamp order (arrival order among equal timestamps); past
    ``max_count`` the oldest is evicted; ``prune`` drops those older than the retention;
  * time filters are inclusive on both ends; ms/s → ns conversions that pass u64 raise
    ``OverflowError`` (the caller answers ``time_value_overflow``), bad types ValueError;
  * pure: no clock of its own — ``now`` is always passed in.
"""
from __future__ import annotations

import bisect
import itertools
from typing import Any, Iterable

from brokers.observability.rollups import NS, Rollups, aggregate_numbers, is_number_point

U64_MAX = (1 << 64) - 1
MAX_NAMES = 10_000
_BUILTIN = {
    "iii.invocations.total": ("invocations", "total"),
    "iii.invocations.success": ("invocations", "success"),
    "iii.invocations.error": ("invocations", "error"),
    "iii.invocations.deferred": ("invocations", "deferred"),
    "iii.workers.spawns": ("workers", "spawns"),
    "iii.workers.deaths": ("workers", "deaths"),
    "iii.workers.active": ("workers", "active"),
}


class MetricStore:
    """``StoredMetric`` dicts with a count cap, age retention and rollups."""

    def __init__(self, max_count: int, retention_s: float) -> None:
        self._items: list[tuple[int, int, dict]] = []
        self._seq = itertools.count()
        self._names: dict[str, int] = {}
        self._max = 1
        self._retention_ns = 0
        self.rollup_store = Rollups()
        self.set_limits(max_count, retention_s)

    def __len__(self) -> int:
        return len(self._items)

    def set_limits(self, max_count: int, retention_s: float) -> None:
        """Retune the cap (a shrink applies on the next add) and the retention."""
        self._max = max(1, int(max_count))
        self._retention_ns = int(retention_s * NS)

    def add(self, metrics: Iterable[dict], now_ns: int) -> int:
        """Store ``metrics`` (a missing timestamp becomes ``now_ns``); returns how many were kept."""
        kept = []
        for metric in metrics:
            name = metric.get("name")
            if not isinstance(name, str):
                continue
            if name not in self._names and len(self._names) >= MAX_NAMES:
                continue  # cardinality cap: new names are dropped
            metric = dict(metric)
            if not isinstance(metric.get("timestamp_unix_nano"), int):
                metric["timestamp_unix_nano"] = now_ns
            ts = metric["timestamp_unix_nano"]
            bisect.insort(self._items, (ts, next(self._seq), metric), key=lambda it: it[:2])
            self._names[name] = self._names.get(name, 0) + 1
            kept.append(metric)
        while len(self._items) > self._max:
            self._forget(self._items.pop(0)[2])
        self.rollup_store.add(kept)
        return len(kept)

    def clear(self) -> None:
        self._items.clear()
        self._names.clear()

    def prune(self, now_ns: int) -> int:
        """Drop metrics older than the retention and expired rollups; returns metrics dropped."""
        cutoff = max(0, now_ns - self._retention_ns)
        cut = bisect.bisect_left(self._items, cutoff, key=lambda it: it[0])
        for _, _, metric in self._items[:cut]:
            self._forget(metric)
        del self._items[:cut]
        self.rollup_store.prune(now_ns)
        return cut

    def _forget(self, metric: dict) -> None:
        left = self._names.get(metric["name"], 0) - 1
        if left > 0:
            self._names[metric["name"]] = left
        else:
            self._names.pop(metric["name"], None)

    def select(self, name: str | None = None, start_ns: int | None = None,
               end_ns: int | None = None) -> list[dict]:
        """Stored metrics (timestamp order) by name and inclusive time range."""
        lo = 0 if start_ns is None else bisect.bisect_left(self._items, start_ns,
                                                           key=lambda it: it[0])
        hi = len(self._items) if end_ns is None else bisect.bisect_right(
            self._items, end_ns, key=lambda it: it[0])
        return [m for _, _, m in self._items[lo:hi] if name is None or m["name"] == name]

    def list(self, query: dict | None, engine_metrics: dict, now_ms: int) -> dict:
        """``engine::metrics::list`` output."""
        q = _query(query, ("start_time", "end_time", "aggregate_interval"))
        start, end, interval = q["start_time"], q["end_time"], q["aggregate_interval"]
        if start is not None and end is not None:
            sdk = self.select(q["metric_name"], _ns(start, "start_time", 1_000_000),
                              _ns(end, "end_time", 1_000_000))
        else:
            sdk = self.select(q["metric_name"])
        aggregated: list[dict] = []
        if interval is not None and start is not None and end is not None:
            step = _ns(interval, "aggregate_interval", NS)
            if step <= 0:
                raise ValueError("'aggregate_interval' must be > 0")
            aggregated = aggregate_numbers(self.select(None, start * 1_000_000, end * 1_000_000),
                                           step)
        out: dict[str, Any] = {"engine_metrics": engine_metrics,
                               "sdk_metrics": [dict(m) for m in sdk], "timestamp": now_ms}
        if aggregated:
            out["aggregated_metrics"] = aggregated
        if start is not None or end is not None or interval is not None:
            out["query"] = {"start_time": start, "end_time": end, "aggregate_interval": interval,
                            "metric_name": q["metric_name"]}
        return out

    def rollups(self, query: dict | None, now_ms: int) -> dict:
        """``engine::rollups::list`` output (range defaults to the hour ending now)."""
        q = _query(query, ("start_time", "end_time", "level"))
        end_ns = now_ms * 1_000_000 if q["end_time"] is None else _ns(q["end_time"], "end_time",
                                                                     1_000_000)
        start_ns = (max(0, end_ns - 3600 * NS) if q["start_time"] is None
                    else _ns(q["start_time"], "start_time", 1_000_000))
        level = 0 if q["level"] is None else q["level"]
        rows, hists = self.rollup_store.query(level, start_ns, end_ns, q["metric_name"])
        return {"rollups": rows, "histogram_rollups": hists, "level": level,
                "query": {"start_time": q["start_time"], "end_time": q["end_time"],
                          "metric_name": q["metric_name"]},
                "timestamp": now_ms}

    def value_in_window(self, name: str, window_s: float, now_ns: int) -> float | None:
        """An alert rule's value: counter/updowncounter/histogram → sum, gauge → mean over
        the metrics of ``name`` in [now − window, now]; None when there is no data."""
        metrics = self.select(name, max(0, now_ns - int(window_s * NS)), now_ns)
        if not metrics:
            return None
        kind = metrics[0].get("metric_type")
        values = [float(dp["value"]) for m in metrics for dp in m.get("data_points", [])
                  if is_number_point(dp)]
        if kind == "histogram":
            values += [float(dp.get("sum") or 0.0) for m in metrics
                       for dp in m.get("data_points", []) if not is_number_point(dp)]
        if not values:
            return None
        if kind == "gauge":
            return sum(values) / len(values)
        if kind in ("counter", "updowncounter", "histogram"):
            return float(sum(values))
        return values[-1]


def _query(query: Any, ints: tuple[str, ...]) -> dict:
    if query is None:
        query = {}
    if not isinstance(query, dict):
        raise ValueError(f"input must be an object, got {type(query).__name__}")
    out: dict[str, Any] = {}
    for key in ints:
        value = query.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                  or not 0 <= value <= U64_MAX):
            raise ValueError(f"'{key}' must be a non-negative integer, got {value!r}")
        out[key] = value
    name = query.get("metric_name")
    if name is not None and not isinstance(name, str):
        raise ValueError(f"'metric_name' must be a string, got {type(name).__name__}")
    out["metric_name"] = name
    return out


def _ns(value: int, key: str, factor: int) -> int:
    ns = value * factor
    if ns > U64_MAX:
        raise OverflowError(f"{key} value too large")
    return ns


def engine_metrics(stats_by_process: dict[str, dict], durations_ms: list[float]) -> dict:
    """The ``engine_metrics`` object of ``engine::metrics::list`` from every process's stats."""
    total = errors = 0
    by_function: dict[str, int] = {}
    active = spawns = deaths = 0.0
    for stats in stats_by_process.values():
        if not isinstance(stats, dict):
            continue
        for fid, entry in (stats.get("calls") or {}).items():
            try:
                count, errs = int(entry[0]), int(entry[1])
            except (TypeError, ValueError, IndexError):
                continue
            total += count
            errors += errs
            if count:
                by_function[fid] = by_function.get(fid, 0) + count
        active += _sum_series(stats.get("gauges"), "worker_connections")
        spawns += _sum_series(stats.get("counters"), "worker_spawns_total")
        deaths += _sum_series(stats.get("counters"), "worker_deaths_total")
    return {
        "invocations": {"total": total, "success": max(0, total - errors), "error": errors,
                        "deferred": 0, "by_function": dict(sorted(by_function.items()))},
        "workers": {"spawns": int(spawns), "deaths": int(deaths), "active": int(active)},
        "performance": _performance(durations_ms),
    }


def _sum_series(table: Any, name: str) -> float:
    total = 0.0
    series = table.get(name) if isinstance(table, dict) else None
    for item in series if isinstance(series, list) else []:
        try:
            total += float(item[1])
        except (TypeError, ValueError, IndexError):
            continue
    return total


def _performance(durations_ms: list[float]) -> dict:
    values = sorted(float(d) for d in durations_ms)
    n = len(values)
    if n == 0:
        return {key: 0.0 for key in ("avg_duration_ms", "p50_duration_ms", "p95_duration_ms",
                                     "p99_duration_ms", "min_duration_ms", "max_duration_ms")}
    pick = lambda p: values[min(int(n * p), n - 1)]  # noqa: E731
    return {"avg_duration_ms": sum(values) / n, "p50_duration_ms": pick(0.50),
            "p95_duration_ms": pick(0.95), "p99_duration_ms": pick(0.99),
            "min_duration_ms": values[0], "max_duration_ms": values[-1]}


def builtin_value(name: str, engine: dict) -> float | None:
    """The value of a built-in alert metric name read from ``engine_metrics``; None otherwise."""
    where = _BUILTIN.get(name)
    if where is None:
        return None
    try:
        return float(engine[where[0]][where[1]])
    except (KeyError, TypeError, ValueError):
        return None
