"""The log side of the observability worker: ``engine::log::*`` entries, the log store, the
``engine::logs::list`` query and the ``log`` trigger's level filter (workers-b §4.2–§4.4).

Owns: building a ``StoredLog`` from an ``engine::log::<level>`` call, the in-memory ring
buffer every log source funnels through (calls, SDK ``LOGS`` frames, engine log lines),
its age-based pruning, and the exact list / clear output shapes.

Invariants:
  * at most ``max_count`` entries are held; an insert past the cap evicts the oldest;
  * every stored body and top-level string attribute is free of ANSI escape codes;
  * ``list`` is newest first (stable: equal timestamps keep arrival order), ``total``
    counts matches before ``offset``/``limit``;
  * pure: no clock of its own — ``now`` is always passed in.
"""
from __future__ import annotations

import re
from collections import deque
from typing import Any

SEVERITY = {"trace": 1, "debug": 5, "info": 9, "warn": 13, "error": 17}

_U64_MAX = (1 << 64) - 1
_I32 = (-(1 << 31), (1 << 31) - 1)
_ANSI = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"            # CSI: colours, cursor moves
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"  # OSC: titles, hyperlinks
    r"|\x1b[@-Z\\-_]")                     # other two-byte escapes
_QUERY_KEYS = ("trace_id", "span_id", "severity_min", "severity_text",
               "start_time", "end_time", "offset", "limit")


def strip_ansi(text: str) -> str:
    """``text`` without terminal escape sequences."""
    return _ANSI.sub("", text) if "\x1b" in text else text


def log_from_call(level: str, data: Any, *, resource: dict, engine_version: str,
                  now_ns: int) -> dict:
    """The ``StoredLog`` of an ``engine::log::<level>`` call; ValueError for a bad input."""
    if level not in SEVERITY:
        raise ValueError(f"unknown log level '{level}' (allowed: {', '.join(SEVERITY)})")
    if not isinstance(data, dict):
        raise ValueError("input must be an object with a 'message' string")
    message = data.get("message")
    if message is None:
        raise ValueError("missing field 'message'")
    if not isinstance(message, str):
        raise ValueError(f"'message' must be a string, got {_kind(message)}")
    for key in ("trace_id", "span_id", "service_name"):
        value = data.get(key)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"'{key}' must be a string, got {_kind(value)}")
    extra = data.get("data")
    return {
        "timestamp_unix_nano": now_ns,
        "observed_timestamp_unix_nano": now_ns,
        "severity_number": SEVERITY[level],
        "severity_text": level.upper(),
        "body": message,
        "attributes": dict(extra) if isinstance(extra, dict) else {},
        "trace_id": data.get("trace_id"),
        "span_id": data.get("span_id"),
        "resource": dict(resource),
        "service_name": data.get("service_name") or "unknown",
        "instrumentation_scope_name": "iii",
        "instrumentation_scope_version": engine_version,
    }


def level_matches(config: dict | None, log: dict) -> bool:
    """Whether a ``log`` trigger with ``config`` fires for ``log`` (§4.4)."""
    level = (config or {}).get("level")
    if level is None or not isinstance(level, str) or level.lower() == "all":
        return True
    return _norm_level(level) == _norm_level(str(log.get("severity_text", "")))


def _norm_level(text: str) -> str:
    text = text.lower()
    return "warn" if text == "warning" else text


class LogStore:
    """Ring buffer of ``StoredLog`` dicts with optional age-based retention."""

    def __init__(self, max_count: int, retention_s: float | None) -> None:
        self._logs: deque[dict] = deque()
        self._max = max(1, int(max_count))
        self._retention_ns: int | None = None
        self.set_limits(max_count, retention_s)

    def __len__(self) -> int:
        return len(self._logs)

    def set_limits(self, max_count: int, retention_s: float | None) -> None:
        """Retune the cap (a shrink evicts the oldest now) and the retention (None = keep)."""
        self._max = max(1, int(max_count))
        self._retention_ns = None if retention_s is None else int(retention_s * 1_000_000_000)
        while len(self._logs) > self._max:
            self._logs.popleft()

    def add(self, log: dict) -> dict:
        """Store ``log`` (ANSI stripped, oldest evicted past the cap); returns the stored entry."""
        entry = dict(log)
        if isinstance(entry.get("body"), str):
            entry["body"] = strip_ansi(entry["body"])
        attrs = entry.get("attributes")
        if isinstance(attrs, dict):
            entry["attributes"] = {k: strip_ansi(v) if isinstance(v, str) else v
                                   for k, v in attrs.items()}
        while len(self._logs) >= self._max:
            self._logs.popleft()
        self._logs.append(entry)
        return entry

    def clear(self) -> dict:
        """``engine::logs::clear`` output."""
        self._logs.clear()
        return {"success": True}

    def prune(self, now_ns: int) -> int:
        """Drop logs older than the retention (timestamp, or observed when 0); returns the count."""
        if self._retention_ns is None:
            return 0
        cutoff = max(0, now_ns - self._retention_ns)
        before = len(self._logs)
        self._logs = deque(log for log in self._logs if _effective_ts(log) >= cutoff)
        return before - len(self._logs)

    def list(self, query: dict | None, now_ms: int) -> dict:
        """``engine::logs::list`` output; ValueError for a wrongly typed query field."""
        q = _parse_query(query)
        echo = {key: q[key] for key in _QUERY_KEYS}
        start_ns = None if q["start_time"] is None else q["start_time"] * 1_000_000
        end_ns = None if q["end_time"] is None else q["end_time"] * 1_000_000
        if (start_ns or 0) > _U64_MAX or (end_ns or 0) > _U64_MAX:
            return {"logs": [], "total": 0, "query": echo, "timestamp": now_ms}
        sev_text = None if q["severity_text"] is None else q["severity_text"].lower()
        matches = [log for log in self._logs
                   if (q["trace_id"] is None or log.get("trace_id") == q["trace_id"])
                   and (q["span_id"] is None or log.get("span_id") == q["span_id"])
                   and (q["severity_min"] is None
                        or log.get("severity_number", 0) >= q["severity_min"])
                   and (sev_text is None or str(log.get("severity_text", "")).lower() == sev_text)
                   and (start_ns is None or log.get("timestamp_unix_nano", 0) >= start_ns)
                   and (end_ns is None or log.get("timestamp_unix_nano", 0) <= end_ns)]
        matches.sort(key=lambda log: -log.get("timestamp_unix_nano", 0))
        offset = q["offset"] or 0
        page = matches[offset:] if q["limit"] is None else matches[offset:offset + q["limit"]]
        return {"logs": [dict(log) for log in page], "total": len(matches), "query": echo,
                "timestamp": now_ms}


def _effective_ts(log: dict) -> int:
    return log.get("timestamp_unix_nano") or log.get("observed_timestamp_unix_nano") or 0


def _parse_query(query: Any) -> dict:
    if query is None:
        query = {}
    if not isinstance(query, dict):
        raise ValueError(f"input must be an object, got {_kind(query)}")
    out: dict[str, Any] = {}
    for key in ("trace_id", "span_id", "severity_text"):
        value = query.get(key)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"'{key}' must be a string, got {_kind(value)}")
        out[key] = value
    for key in ("start_time", "end_time", "offset", "limit"):
        out[key] = _uint(query.get(key), key)
    sev = query.get("severity_min")
    if sev is not None and (not _is_int(sev) or not _I32[0] <= sev <= _I32[1]):
        raise ValueError(f"'severity_min' must be an integer, got {_kind(sev)}")
    out["severity_min"] = sev
    return out


def _uint(value: Any, key: str) -> int | None:
    if value is None:
        return None
    if not _is_int(value) or not 0 <= value <= _U64_MAX:
        raise ValueError(f"'{key}' must be a non-negative integer, got {value!r}")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__
