"""The bounds every update op checks before it touches the value, and the shape of an op
error as the caller sees it.

A check returns a ``Failure`` ``(code, message)`` or None; the first violation wins, so an
op reports one error at most. ``entry`` turns a failure into the wire's ``UpdateOpError``
(``op_index``, ``code``, ``message``, ``doc_url``). Codes are ``<op>.<what>``, e.g.
``merge.path.too_deep``, as the engine names them.
"""
from __future__ import annotations

from typing import Any, Sequence

from brokers.kit.ops.values import json_depth

Failure = tuple[str, str]
"""``(code, message)`` of an op that was skipped."""

MAX_PATH_DEPTH = 32
MAX_SEGMENT_BYTES = 256
MAX_VALUE_DEPTH = 16
MAX_VALUE_KEYS = 1024
PROTO_KEYS = frozenset(("__proto__", "constructor", "prototype"))
DOC_URL = "https://iii.dev/docs/workers/iii-state#error-codes"


def entry(index: int, failure: Failure) -> dict[str, Any]:
    """The ``UpdateOpError`` of the op at ``index``."""
    code, message = failure
    return {"op_index": index, "code": code, "message": message, "doc_url": DOC_URL}


def check_path(op: str, segments: Sequence[str]) -> Failure | None:
    """Path bounds shared by every op."""
    if len(segments) > MAX_PATH_DEPTH:
        return f"{op}.path.too_deep", f"Path depth {len(segments)} exceeds maximum of {MAX_PATH_DEPTH}"
    for seg in segments:
        if not seg:
            return f"{op}.path.empty_segment", "Path contains an empty segment"
        size = len(seg.encode("utf-8", "surrogatepass"))
        if size > MAX_SEGMENT_BYTES:
            return (f"{op}.path.segment_too_long",
                    f"Path segment of {size} bytes exceeds maximum of {MAX_SEGMENT_BYTES}")
        if seg in PROTO_KEYS:
            return f"{op}.path.proto_polluted", f"Path segment '{seg}' is not allowed (prototype pollution)."
    return None


def check_merge_value(value: Any) -> Failure | None:
    """``merge`` takes an object of bounded width and depth without prototype-pollution keys."""
    if not isinstance(value, dict):
        return "merge.value.not_an_object", "Merge value must be a JSON object"
    if len(value) > MAX_VALUE_KEYS:
        return ("merge.value.too_many_keys",
                f"Merge value has {len(value)} top-level keys, exceeds maximum of {MAX_VALUE_KEYS}")
    for key in value:
        if key in PROTO_KEYS:
            return "merge.value.proto_polluted", f'Merge value top-level key "{key}" is a prototype-pollution sink'
    depth = json_depth(value)
    if depth > MAX_VALUE_DEPTH:
        return ("merge.value.too_deep",
                f"Merge value JSON nesting depth {depth} exceeds maximum of {MAX_VALUE_DEPTH}")
    return None
