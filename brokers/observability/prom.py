"""Prometheus exposition and readiness from the engine processes' stats frames (pure).

Owns: the text served on ``/metrics`` (``exposition``), the answer of ``/readyz``
(``readiness``) and the restart bookkeeping that keeps counters monotonic (``Totals``).
Input is the latest stats frame of every engine process, keyed by process name, in the
shape of the observability contract (``calls``, ``gauges``, ``counters``, ``cpu_s``,
``rss``, ``dropped``, ``ready``, ``pid``, ``t``). No sockets, no clock: ``now`` is passed in.

Invariants:
- every metric is named ``iii_<name>``; ``stats["gauges"|"counters"]`` entries map
  generically to ``iii_<name>`` with their own labels plus ``process``; a generic name that
  collides with a built-in family, or with a family of the other type, is skipped;
- histogram buckets arrive non-cumulative (``len(DURATION_BOUNDS) + 1`` counts, the last
  one above the highest bound) and are exposed cumulative, ``+Inf`` equal to the count;
- ``extra`` (the observability process's own numbers): a name ending in ``_total`` is a
  counter, any other a gauge; a value is a number or ``[[labels, value], ...]``;
- a malformed entry (wrong type, wrong bucket count, non-numeric value) is skipped, never
  an exception out of ``exposition``;
- counters fed through ``Totals.apply`` never go backwards while this process lives (a
  restart of the observability process itself resets them, which Prometheus reads as an
  ordinary counter reset).
"""
from __future__ import annotations

import re
from typing import Any, Callable, Iterable, Iterator

# prometheus_client is imported by the first ``exposition`` (``_prometheus``): an engine
# without a Prometheus port (``prometheus_port: 0``) never loads it.
CollectorRegistry = generate_latest = floatToGoString = None  # type: Any
CounterMetricFamily = GaugeMetricFamily = HistogramMetricFamily = None  # type: Any


def _prometheus() -> None:
    global CollectorRegistry, generate_latest, floatToGoString
    global CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
    if CollectorRegistry is None:
        from prometheus_client import CollectorRegistry as registry, generate_latest as latest
        from prometheus_client.core import CounterMetricFamily as counter, GaugeMetricFamily as gauge
        from prometheus_client.core import HistogramMetricFamily as histogram
        from prometheus_client.utils import floatToGoString as float_to_go
        CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily = counter, gauge, histogram
        generate_latest, floatToGoString, CollectorRegistry = latest, float_to_go, registry

from brokers.kit.telemetry import DURATION_BOUNDS

STALE_S = 3.0
_BAD_NAME = re.compile(r"[^a-zA-Z0-9_]")
_BUILTIN = {"function_calls_total", "function_errors_total", "function_call_duration_seconds",
            "process_cpu_seconds_total", "process_resident_memory_bytes", "process_up",
            "telemetry_dropped_total"}
_HELP = {
    "worker_connections": "Worker connections open on a gateway process.",
    "worker_spawns_total": "Workers spawned.",
    "worker_deaths_total": "Workers that died or disconnected.",
    "queue_depth": "Messages waiting in a queue.",
    "queue_dlq_size": "Messages in a queue's dead-letter queue.",
    "state_operations_total": "State operations, by operation.",
    "stream_operations_total": "Stream operations, by operation.",
}


def _num(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    return float(value) if isinstance(value, (int, float)) else None


def _name(name: Any) -> str | None:
    if not isinstance(name, str) or not name:
        return None
    clean = _BAD_NAME.sub("_", name)
    return "_" + clean if clean[0].isdigit() else clean


def _pairs(entries: Any) -> Iterator[tuple[dict[str, str], float]]:
    """The well-formed ``[labels, value]`` pairs of a gauge/counter entry, labels cleaned."""
    for item in entries if isinstance(entries, list) else ():
        if not (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], dict)):
            continue
        value = _num(item[1])
        if value is None:
            continue
        labels = {}
        for k, v in item[0].items():
            k = _name(k)
            if k and not k.startswith("__"):
                labels[k] = v if isinstance(v, str) else str(v)
        yield labels, value


def _calls(frame: dict) -> Iterator[tuple[str, float, float, list[float] | None, float]]:
    """``(function_id, count, errors, buckets or None, sum)`` of a frame's well-formed calls."""
    calls = frame.get("calls")
    for fid, entry in calls.items() if isinstance(calls, dict) else ():
        if not (isinstance(fid, str) and isinstance(entry, (list, tuple)) and len(entry) == 4):
            continue
        count, errors, total = _num(entry[0]), _num(entry[1]), _num(entry[3])
        if count is None or errors is None or total is None:
            continue
        buckets = entry[2] if isinstance(entry[2], (list, tuple)) else ()
        nums = [_num(b) for b in buckets]
        ok = len(nums) == len(DURATION_BOUNDS) + 1 and None not in nums
        yield fid, count, errors, nums if ok else None, total  # type: ignore[misc]


def _label_key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


class Totals:
    """Counters that survive engine process restarts.

    A process's counters are cumulative since *its* start, so a restarted process (same
    name, different pid) starts again from zero. ``apply`` keeps, per process name, the
    sum of the last frame seen of every earlier incarnation (``_base``) and adds it to the
    counters of the current frame: ``calls`` (count, errors, each bucket, sum), ``cpu_s``,
    ``dropped`` and every ``counters`` entry. Gauges (``rss``, ``gauges``) pass unchanged.
    The increments of an incarnation after its last frame reached us are lost; the values
    still never decrease. A series known only from an earlier incarnation stays exposed.
    """

    def __init__(self) -> None:
        self._pid: dict[str, Any] = {}
        self._last: dict[str, dict] = {}
        self._base: dict[str, dict] = {}

    def apply(self, stats: dict[str, dict]) -> dict[str, dict]:
        """``stats`` with every counter raised by its process's earlier incarnations."""
        out = {}
        for name, frame in stats.items():
            if not isinstance(frame, dict):
                continue
            if name in self._pid and self._pid[name] != frame.get("pid"):
                self._base[name] = self._merge(self._base.get(name), self._last[name])
            self._pid[name], self._last[name] = frame.get("pid"), frame
            base = self._base.get(name)
            out[name] = self._merge(base, frame, into=dict(frame)) if base else frame
        return out

    @staticmethod
    def _merge(base: dict | None, frame: dict, into: dict | None = None) -> dict:
        """``base`` plus the counters of ``frame``: a new base, or, given ``into`` (a copy
        of ``frame``), that frame with its counters replaced by the sums."""
        base = base or {}
        out = into if into is not None else {}
        for key in ("cpu_s", "dropped"):
            out[key] = (_num(frame.get(key)) or 0.0) + base.get(key, 0.0)
        calls = {fid: list(entry) for fid, entry in base.get("calls", {}).items()}
        for fid, count, errors, buckets, total in _calls(frame):
            c, e, b, s = calls.get(fid, (0.0, 0.0, None, 0.0))
            if b and buckets:
                buckets = [x + y for x, y in zip(b, buckets)]
            calls[fid] = [c + count, e + errors, buckets or b, s + total]
        out["calls"] = calls
        counters: dict[Any, dict[tuple, list[Any]]] = {}
        raw = frame.get("counters")
        for metric, entries in raw.items() if isinstance(raw, dict) else ():
            for labels, value in _pairs(entries):
                counters.setdefault(metric, {})[_label_key(labels)] = [labels, value]
        for metric, entries in base.get("counters", {}).items():
            for key, (labels, value) in entries.items():
                counters.setdefault(metric, {}).setdefault(key, [labels, 0.0])[1] += value
        if into is None:
            out["counters"] = counters
        else:
            out["counters"] = {m: list(e.values()) for m, e in counters.items()}
        return out


class _Collector:
    def __init__(self, stats: dict[str, dict], now: float, extra: dict | None, stale_s: float):
        self.stats, self.now, self.extra, self.stale_s = stats, now, extra or {}, stale_s

    def collect(self) -> Iterator[Any]:
        frames = {n: f for n, f in self.stats.items() if isinstance(f, dict)}
        yield from self._calls(frames.values())
        yield from self._process(frames)
        kinds: dict[str, str] = {}
        for kind in ("gauges", "counters"):
            merged: dict[str, dict[tuple, tuple[dict, float]]] = {}
            for process, frame in frames.items():
                metrics = frame.get(kind)
                for metric, entries in metrics.items() if isinstance(metrics, dict) else ():
                    metric = _name(metric)
                    if not metric or metric in _BUILTIN or kinds.setdefault(metric, kind) != kind:
                        continue
                    series = merged.setdefault(metric, {})
                    for labels, value in _pairs(entries):
                        labels = {**labels, "process": process}
                        key = _label_key(labels)
                        old = series.get(key, (labels, 0.0))[1] if kind == "counters" else 0.0
                        series[key] = (labels, old + value)
            for metric, series in merged.items():
                yield self._family(metric, kind == "counters", series.values())
        yield from self._extra(kinds)

    @staticmethod
    def _family(metric: str, counter: bool, series: Iterable[tuple[dict, float]]) -> Any:
        series = list(series)
        names = sorted({k for labels, _ in series for k in labels})
        cls = CounterMetricFamily if counter else GaugeMetricFamily
        fam = cls("iii_" + metric, _HELP.get(metric, f"iii {metric}."), labels=names)
        for labels, value in series:
            fam.add_metric([labels.get(k, "") for k in names], value)
        return fam

    def _calls(self, frames: Iterable[dict]) -> Iterator[Any]:
        sums: dict[str, list[Any]] = {}
        for frame in frames:
            for fid, count, errors, buckets, total in _calls(frame):
                s = sums.setdefault(fid, [0.0, 0.0, [0.0] * (len(DURATION_BOUNDS) + 1), 0.0])
                s[0] += count
                s[1] += errors
                if buckets:
                    s[2] = [x + y for x, y in zip(s[2], buckets)]
                    s[3] += total
        calls = CounterMetricFamily("iii_function_calls_total", "Calls routed, by function.",
                                    labels=["function_id"])
        errors = CounterMetricFamily("iii_function_errors_total",
                                     "Calls that ended in an error, by function.",
                                     labels=["function_id"])
        hist = HistogramMetricFamily("iii_function_call_duration_seconds",
                                     "Call duration, by function.", labels=["function_id"])
        for fid, (count, errs, buckets, total) in sorted(sums.items()):
            calls.add_metric([fid], count)
            errors.add_metric([fid], errs)
            cumulative, acc = [], 0.0
            for le, n in zip([*map(floatToGoString, DURATION_BOUNDS), "+Inf"], buckets):
                acc += n
                cumulative.append((le, acc))
            hist.add_metric([fid], cumulative, total)
        yield from (calls, errors, hist)

    def _process(self, frames: dict[str, dict]) -> Iterator[Any]:
        cpu = CounterMetricFamily("iii_process_cpu_seconds_total",
                                  "User and system CPU time of an engine process.",
                                  labels=["process"])
        rss = GaugeMetricFamily("iii_process_resident_memory_bytes",
                                "Resident memory of an engine process.", labels=["process"])
        up = GaugeMetricFamily("iii_process_up", "1 if the process's stats are fresh.",
                               labels=["process"])
        dropped = CounterMetricFamily("iii_telemetry_dropped_total",
                                      "Telemetry frames and items an engine process dropped.",
                                      labels=["process"])
        for process, frame in sorted(frames.items()):
            for fam, key in ((cpu, "cpu_s"), (rss, "rss"), (dropped, "dropped")):
                value = _num(frame.get(key))
                if value is not None:
                    fam.add_metric([process], value)
            t = _num(frame.get("t"))
            up.add_metric([process], 1.0 if t is not None and self.now - t <= self.stale_s else 0.0)
        yield from (cpu, rss, up, dropped)

    def _extra(self, kinds: dict[str, str]) -> Iterator[Any]:
        for metric, value in self.extra.items():
            metric = _name(metric)
            if not metric or metric in _BUILTIN or metric in kinds:
                continue
            counter = metric.endswith("_total")
            number = _num(value)
            series = [({}, number)] if number is not None else list(_pairs(value))
            yield self._family(metric, counter, series)


def exposition(stats: dict[str, dict], now: float, extra: dict | None = None,
               stale_s: float = STALE_S) -> bytes:
    """The Prometheus text exposition of ``stats`` (process name -> latest frame; pass it
    through ``Totals.apply`` first for restart-proof counters) and ``extra``."""
    _prometheus()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(stats, now, extra, stale_s))  # type: ignore[arg-type]
    return generate_latest(registry)


def readiness(planned: list[str], stats: dict[str, dict], now: float,
              pid_alive: Callable[[int], bool], stale_s: float = STALE_S) -> tuple[bool, dict]:
    """Ready iff every planned process has stats at most ``stale_s`` old from a live pid,
    and every planned gateway reports ``ready``. The dict gives each process's reason."""
    reasons: dict[str, str] = {}
    for name in planned:
        frame = stats.get(name)
        t = _num(frame.get("t")) if isinstance(frame, dict) else None
        pid = frame.get("pid") if isinstance(frame, dict) else None
        if frame is None:
            reasons[name] = "no stats yet"
        elif t is None:
            reasons[name] = "stats without a time"
        elif now - t > stale_s:
            reasons[name] = f"no stats for {now - t:.1f} s"
        elif not isinstance(pid, int) or isinstance(pid, bool):
            reasons[name] = "no pid in its stats"
        elif not pid_alive(pid):
            reasons[name] = f"pid {pid} is not alive"
        elif frame.get("unit") == "gateway" and frame.get("ready") is not True:
            reasons[name] = "gateway not listening yet"
        else:
            reasons[name] = "ok"
    ready = all(r == "ok" for r in reasons.values())
    return ready, {"ready": ready, "processes": reasons}
