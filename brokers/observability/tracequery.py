"""Query semantics of ``engine::traces::list|tree|group_by`` over StoredSpan dicts (workers-b §4.3).

Owns: input validation (a wrong type raises ``ValueError`` naming the field; the service turns it
into an error answer), the list filters and sorting, trace tags, the tree pipeline (prune no-op
trigger wrappers, apply ``collapse_spans`` re-parenting, nest) and group_by aggregation.

Pure functions over span iterables and a ``now`` passed in; spans are never mutated (results are
copies). Semantics follow the reference engine: substring filters are case-insensitive, pending
spans measure duration-so-far against ``now`` and count as active "now" for time windows,
``attributes`` is an exact AND of [k, v] pairs, ``exclude_attributes`` an OR, and with
``search_all_spans`` the name/attribute filters match when any span of the trace matches.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable

SORT_KEYS = ("start_time", "duration", "duration_ms", "service_name", "name")
_TRIGGER_WRAPPERS = ("state_triggers", "stream_triggers")
_TAG_KEYS = ("iii.session.id", "iii.session.name", "iii.message.id")


def _opt(query: dict, key: str, kinds: tuple[type, ...], what: str) -> Any:
    value = query.get(key)
    if value is None:
        return None
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        raise ValueError(f"{key} must be {what}, got {type(value).__name__}")
    return value


def _opt_int(query: dict, key: str, minimum: int | None = 0) -> int | None:
    value = _opt(query, key, (int, float), "an integer")
    if value is None:
        return None
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"{key} must be an integer, got {value!r}")
        value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{key} must be >= {minimum}, got {value}")
    return value


def _opt_pairs(query: dict, key: str) -> list[tuple[str, str]] | None:
    value = _opt(query, key, (list,), "an array of [key, value] pairs")
    if value is None:
        return None
    pairs: list[tuple[str, str]] = []
    for pair in value:
        if not isinstance(pair, list) or not all(isinstance(part, str) for part in pair):
            raise ValueError(f"{key} must be an array of [key, value] string pairs")
        if len(pair) == 2:  # the reference ignores pairs of another length
            pairs.append((pair[0], pair[1]))
    return pairs


def require_str(query: dict, key: str) -> str:
    if not isinstance(query, dict):
        raise ValueError("input must be an object")
    value = query.get(key)
    if not isinstance(value, str):
        raise ValueError(f"{key} is required and must be a string")
    return value


@dataclass(frozen=True)
class ListQuery:
    trace_id: str | None = None
    trace_ids: list[str] | None = None
    offset: int = 0
    limit: int = 100
    service_name: str | None = None
    name: str | None = None
    status: str | None = None
    min_duration_ms: float | None = None
    max_duration_ms: float | None = None
    start_time: int | None = None
    end_time: int | None = None
    sort_by: str = "start_time"
    sort_asc: bool = True
    attributes: list[tuple[str, str]] | None = None
    exclude_attributes: list[tuple[str, str]] | None = None
    include_internal: bool = False
    search_all_spans: bool = False


def parse_list_query(query: dict | None) -> ListQuery:
    """Validate an ``engine::traces::list`` input; absent or null fields take their defaults."""
    query = {} if query is None else query
    if not isinstance(query, dict):
        raise ValueError("input must be an object")
    trace_ids = _opt(query, "trace_ids", (list,), "an array of strings")
    if trace_ids is not None and not all(isinstance(t, str) for t in trace_ids):
        raise ValueError("trace_ids must be an array of strings")
    text = {key: _opt(query, key, (str,), "a string")
            for key in ("trace_id", "service_name", "name", "status", "sort_by", "sort_order")}
    numbers = {key: _opt(query, key, (int, float), "a number") for key in ("min_duration_ms", "max_duration_ms")}
    flags = {key: bool(_opt(query, key, (bool,), "a boolean")) for key in ("include_internal", "search_all_spans")}
    offset, limit = _opt_int(query, "offset"), _opt_int(query, "limit")
    return ListQuery(
        trace_id=text["trace_id"], trace_ids=trace_ids,
        offset=0 if offset is None else offset, limit=100 if limit is None else limit,
        service_name=text["service_name"], name=text["name"], status=text["status"],
        min_duration_ms=numbers["min_duration_ms"], max_duration_ms=numbers["max_duration_ms"],
        start_time=_opt_int(query, "start_time", None), end_time=_opt_int(query, "end_time", None),
        sort_by=text["sort_by"] or "start_time",
        sort_asc=text["sort_order"] is None or text["sort_order"].lower() == "asc",
        attributes=_opt_pairs(query, "attributes"), exclude_attributes=_opt_pairs(query, "exclude_attributes"),
        **flags,
    )


def is_internal(span: dict) -> bool:
    """``iii.function.kind=internal`` or a ``function_id`` under ``engine::``."""
    for key, value in span.get("attributes", ()):
        if (key == "iii.function.kind" and value == "internal") or (key == "function_id" and value.startswith("engine::")):
            return True
    return False


def _has_pair(span: dict, key: str, value: str) -> bool:
    return any(k == key and v == value for k, v in span.get("attributes", ()))


def effective_end_ns(span: dict, now_ns: int) -> int:
    return now_ns if span.get("pending") else span["end_time_unix_nano"]


def duration_ns(span: dict, now_ns: int) -> int:
    return max(0, effective_end_ns(span, now_ns) - span["start_time_unix_nano"])


def filter_and_sort(candidates: list[dict], q: ListQuery, now_ns: int) -> list[dict]:
    """Apply every list filter to the candidate rows, then sort (stable)."""
    name_traces = attr_traces = None
    if q.search_all_spans and q.name is not None:
        needle = q.name.lower()
        name_traces = {s["trace_id"] for s in candidates if needle in s["name"].lower()}
    if q.search_all_spans and q.attributes is not None:
        attr_traces = {s["trace_id"] for s in candidates if all(_has_pair(s, k, v) for k, v in q.attributes)}
    service = q.service_name.lower() if q.service_name is not None else None
    name = q.name.lower() if q.name is not None else None
    status = q.status.lower() if q.status is not None else None
    start_ns = q.start_time * 1_000_000 if q.start_time is not None else None
    end_ns = q.end_time * 1_000_000 if q.end_time is not None else None
    rows = []
    for s in candidates:
        if not q.include_internal and is_internal(s):
            continue
        if q.exclude_attributes and any(_has_pair(s, k, v) for k, v in q.exclude_attributes):
            continue
        if service is not None and service not in s["service_name"].lower():
            continue
        if name is not None and (s["trace_id"] not in name_traces if name_traces is not None
                                 else name not in s["name"].lower()):
            continue
        if status is not None and status not in s["status"].lower():
            continue
        dur_ms = duration_ns(s, now_ns) / 1_000_000
        if q.min_duration_ms is not None and dur_ms < q.min_duration_ms:
            continue
        if q.max_duration_ms is not None and dur_ms > q.max_duration_ms:
            continue
        if start_ns is not None and effective_end_ns(s, now_ns) < start_ns:
            continue
        if end_ns is not None and s["start_time_unix_nano"] > end_ns:
            continue
        if q.attributes is not None and (s["trace_id"] not in attr_traces if attr_traces is not None
                                         else not all(_has_pair(s, k, v) for k, v in q.attributes)):
            continue
        rows.append(s)
    if q.sort_by in ("duration", "duration_ms"):
        key: Any = lambda s: duration_ns(s, now_ns)  # noqa: E731
    elif q.sort_by == "service_name":
        key = lambda s: s["service_name"]  # noqa: E731
    elif q.sort_by == "name":
        key = lambda s: s["name"]  # noqa: E731
    else:
        key = lambda s: s["start_time_unix_nano"]  # noqa: E731
    rows.sort(key=key, reverse=not q.sort_asc)
    return rows


def trace_tags(spans: Iterable[dict]) -> dict[str, str]:
    """Relevance tags of a trace (``iii.tag.*``, session/message ids); the newest span wins."""
    tags: dict[str, str] = {}
    for span in sorted(spans, key=lambda s: (s["start_time_unix_nano"], s["span_id"])):
        for key, value in span.get("attributes", ()):
            if key.startswith("iii.tag.") or key in _TAG_KEYS:
                tags[key] = value
    return dict(sorted(tags.items()))


def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile("^" + re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".") + "$", re.S)


def compile_collapse(rules: list[dict]) -> list[tuple[re.Pattern[str], re.Pattern[str] | None]]:
    """``collapse_spans`` rules [{name (glob), service? (glob)}] → matchers; bad rules are skipped."""
    compiled = []
    for rule in rules:
        if not isinstance(rule, dict) or not isinstance(rule.get("name"), str):
            continue
        service = rule.get("service")
        compiled.append((_glob(rule["name"]), _glob(service) if isinstance(service, str) else None))
    return compiled


def prune_wrappers(spans: list[dict]) -> list[dict]:
    """Drop childless ``state_triggers``/``stream_triggers`` spans, to a fixpoint."""
    while True:
        parents = {s.get("parent_span_id") for s in spans}
        kept = [s for s in spans if not (s["name"] in _TRIGGER_WRAPPERS and s["span_id"] not in parents)]
        if len(kept) == len(spans):
            return kept
        spans = kept


def collapse(spans: list[dict], rules: list) -> list[dict]:
    """Remove spans matching a rule; survivors are re-parented to their nearest kept ancestor."""
    if not rules:
        return spans
    gone = {s["span_id"] for s in spans
            if any(n.match(s["name"]) and (sv is None or sv.match(s["service_name"])) for n, sv in rules)}
    if not gone:
        return spans
    parent_of = {s["span_id"]: s.get("parent_span_id") for s in spans}
    out = []
    for s in spans:
        if s["span_id"] in gone:
            continue
        parent, seen = s.get("parent_span_id"), set()
        while parent in gone and parent not in seen:
            seen.add(parent)
            parent = parent_of.get(parent)
        out.append({**s, "parent_span_id": parent} if parent != s.get("parent_span_id") else s)
    return out


def build_tree(spans: list[dict], rules: list) -> list[dict]:
    """The corrected trace as nested nodes (span fields + ``children``), in arrival order."""
    spans = collapse(prune_wrappers(spans), rules)
    present = {s["span_id"] for s in spans}
    children: dict[str, list[dict]] = {}
    roots = []
    for s in spans:
        parent = s.get("parent_span_id")
        if parent is not None and parent in present and parent != s["span_id"]:
            children.setdefault(parent, []).append(s)
        else:
            roots.append(s)

    def node(span: dict) -> dict:
        return {**span, "children": [node(c) for c in children.pop(span["span_id"], [])]}

    return [node(r) for r in roots]


def group_by(spans: Iterable[dict], query: dict, now_ns: int) -> list[dict]:
    """engine::traces::group_by groups (newest first by first_seen_ms, at most ``limit``)."""
    attribute = require_str(query, "attribute")
    label_attr = _opt(query, "label_attribute", (str,), "a string")
    since_ms = _opt_int(query, "since_ms", None)
    limit = _opt_int(query, "limit")
    include_internal = bool(_opt(query, "include_internal", (bool,), "a boolean"))
    since_ns = since_ms * 1_000_000 if since_ms is not None else None
    groups: dict[str, dict] = {}
    for s in spans:
        attrs = s.get("attributes", ())
        value = next((v for k, v in attrs if k == attribute), None)
        if value is None or (not include_internal and is_internal(s)):
            continue
        end = effective_end_ns(s, now_ns)
        if since_ns is not None and end < since_ns:
            continue
        g = groups.get(value)
        if g is None:
            g = groups[value] = {"trace_ids": set(), "span_count": 0, "first": s["start_time_unix_nano"],
                                 "last": end, "errors": 0, "label": None, "label_at": 0}
        g["trace_ids"].add(s["trace_id"])
        g["span_count"] += 1
        g["first"] = min(g["first"], s["start_time_unix_nano"])
        g["last"] = max(g["last"], end)
        g["errors"] += s["status"].lower() == "error"
        label = next((v for k, v in attrs if k == label_attr), None) if label_attr is not None else None
        if label is not None and s["start_time_unix_nano"] >= g["label_at"]:
            g["label"], g["label_at"] = label, s["start_time_unix_nano"]
    out = []
    for value, g in groups.items():
        first_ms, last_ms = g["first"] // 1_000_000, g["last"] // 1_000_000
        out.append({"value": value, "label": g["label"], "trace_ids": sorted(g["trace_ids"]),
                    "span_count": g["span_count"], "first_seen_ms": first_ms, "last_seen_ms": last_ms,
                    "duration_ms": max(0, last_ms - first_ms), "error_count": g["errors"]})
    out.sort(key=lambda g: g["first_seen_ms"], reverse=True)
    return out[: 100 if limit is None else limit]
