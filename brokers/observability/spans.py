"""The in-memory span store behind ``engine::traces::*`` (workers-b §4.2, §4.3).

Owns: the StoredSpan dicts of this engine (engine spans and SDK spans alike), their age order,
the per-trace index, eviction past ``max_spans`` and the TraceStorageStatus figures. The query
semantics (filters, tree, group_by) live in ``tracequery``; this module hands them candidates.

Invariants:
- ``_spans`` maps (trace_id, span_id) → span in age order (oldest first); ``_traces`` maps
  trace_id → {span_id: span} in arrival order and holds exactly the same spans.
- A span arriving again under a live key replaces the stored one in place (same age, same
  position in its trace): that is how a pending start snapshot becomes its final span. A
  pending snapshot never overwrites a span that already ended.
- ``len(self) <= max_spans`` after every call; each span pushed out counts once in
  ``known_dropped_spans`` (there is no archive, so an evicted span is gone).
- Stored dicts are never handed out: query results are copies.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from brokers.observability import tracequery

log = logging.getLogger(__name__)

_SPAN_OVERHEAD = 160  # rough per-span bytes beyond its strings (dict, ints, index entries)


def _estimate(span: dict) -> int:
    size = _SPAN_OVERHEAD + len(span.get("name", "")) + 64 + len(span.get("service_name", ""))
    for pair in span.get("attributes", ()):
        size += 16 + sum(len(part) for part in pair)
    for event in span.get("events", ()):
        size += 48 + len(event.get("name", "")) + sum(16 + len(k) + len(v) for k, v in event.get("attributes", ()))
    size += 96 * len(span.get("links", ()))
    return size


class SpanStore:
    """Bounded span store with a trace index; see the module docstring for the invariants."""

    def __init__(self, max_spans: int, collapse: list[dict] | None = None) -> None:
        self._max = max(1, int(max_spans))
        self._spans: OrderedDict[tuple[str, str], dict] = OrderedDict()
        self._traces: dict[str, dict[str, dict]] = {}
        self._bytes = 0
        self._dropped = 0
        self._collapse = tracequery.compile_collapse(collapse or [])

    # -- ingestion -------------------------------------------------------------------------
    def add(self, spans: list[dict]) -> None:
        """Insert spans (pending or final); replaces by (trace_id, span_id), then evicts."""
        for span in spans:
            try:
                key = (span["trace_id"], span["span_id"])
            except (KeyError, TypeError):
                continue
            old = self._spans.get(key)
            if old is not None:
                if span.get("pending") and not old.get("pending"):
                    continue
                self._bytes += _estimate(span) - _estimate(old)
                self._spans[key] = span
                self._traces[key[0]][key[1]] = span
                continue
            self._spans[key] = span
            self._traces.setdefault(key[0], {})[key[1]] = span
            self._bytes += _estimate(span)
        self._evict()

    def _evict(self) -> None:
        while len(self._spans) > self._max:
            (trace_id, span_id), span = self._spans.popitem(last=False)
            trace = self._traces[trace_id]
            del trace[span_id]
            if not trace:
                del self._traces[trace_id]
            self._bytes -= _estimate(span)
            self._dropped += 1

    def set_capacity(self, n: int) -> None:
        """Retune ``memory_max_spans``; shrinking evicts the oldest spans at once."""
        self._max = max(1, int(n))
        self._evict()

    def set_collapse(self, rules: list[dict] | None) -> None:
        """Swap the ``collapse_spans`` rules (hot reload)."""
        self._collapse = tracequery.compile_collapse(rules or [])

    def clear(self) -> dict:
        self._spans.clear()
        self._traces.clear()
        self._bytes = 0
        self._dropped = 0
        return {"success": True}

    # -- figures ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._spans)

    def hot_bytes(self) -> int:
        """An estimate of the memory the stored spans take (not a measurement)."""
        return max(0, self._bytes)

    def durations_ms(self) -> list[float]:
        """Durations of completed (non-pending) spans, in store order."""
        return [(s["end_time_unix_nano"] - s["start_time_unix_nano"]) / 1e6
                for s in self._spans.values() if not s.get("pending")]

    def status(self) -> dict:
        """TraceStorageStatus: memory only, so the archive is always disabled."""
        return {"archive": "disabled", "completeness": "partial" if self._dropped else "complete",
                "known_dropped_spans": self._dropped, "physical_bytes": 0, "max_disk_bytes": 0,
                "last_error": None}

    def trace(self, trace_id: str) -> list[dict]:
        """The stored spans of one trace in arrival order (the stored dicts; do not mutate)."""
        return list(self._traces.get(trace_id, {}).values())

    # -- queries ---------------------------------------------------------------------------
    def _candidates(self, q: tracequery.ListQuery) -> list[dict]:
        """Candidate rows: every span (``search_all_spans``) or the root rows, of the asked traces."""
        if q.trace_id is not None:
            trace_ids: list[str] | None = [q.trace_id]
        elif q.trace_ids is not None:
            trace_ids = list(dict.fromkeys(q.trace_ids))
        else:
            trace_ids = None
        traces = ([self._traces[t] for t in trace_ids if t in self._traces] if trace_ids is not None
                  else None)
        if q.search_all_spans:
            if traces is None:
                return list(self._spans.values())
            return [s for trace in traces for s in trace.values()]
        rows: list[dict] = []
        if traces is None:
            for span in self._spans.values():
                parent = span.get("parent_span_id")
                if parent is None or parent not in self._traces[span["trace_id"]]:
                    rows.append(span)
        else:
            for trace in traces:
                rows.extend(s for s in trace.values()
                            if s.get("parent_span_id") is None or s["parent_span_id"] not in trace)
        return rows

    def list(self, query: dict, now_ns: int | None = None) -> dict:
        """engine::traces::list. ``now_ns`` measures pending spans (default: newest time seen)."""
        q = tracequery.parse_list_query(query)
        now = self._now_ns() if now_ns is None else now_ns
        candidates = self._candidates(q)
        rows = tracequery.filter_and_sort(candidates, q, now)
        page = rows[q.offset:q.offset + q.limit]
        out = []
        for span in page:
            row = dict(span)
            tags = tracequery.trace_tags(self._traces.get(span["trace_id"], {}).values())
            if tags:
                row["trace_tags"] = tags
            out.append(row)
        return {"spans": out, "total": len(rows), "offset": q.offset, "limit": q.limit,
                "storage": self.status()}

    def tree(self, query: dict) -> dict:
        """engine::traces::tree: pruned, collapsed, nested; unknown trace → no roots."""
        trace_id = tracequery.require_str(query, "trace_id")
        spans = self.trace(trace_id)
        roots = tracequery.build_tree(spans, self._collapse) if spans else []
        return {"roots": roots, "storage": self.status()}

    def group_by(self, query: dict, now_ms: int) -> dict:
        """engine::traces::group_by over every stored span."""
        groups = tracequery.group_by(self._spans.values(), query, now_ms * 1_000_000)
        return {"groups": groups, "storage": self.status()}

    def _now_ns(self) -> int:
        newest = 0
        for span in self._spans.values():
            newest = max(newest, span["start_time_unix_nano"], span["end_time_unix_nano"])
        return newest

    def __repr__(self) -> str:  # debugging aid
        return f"SpanStore(spans={len(self)}, traces={len(self._traces)}, max={self._max})"
