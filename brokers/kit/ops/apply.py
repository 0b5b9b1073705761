"""Applying decoded ops: one function per op kind behind ``APPLIERS``, and the loop that
runs them in order (``apply_update_ops``).

Each applier takes the ``Doc`` being updated and one ``Op``, changes the doc in place and
returns None, or returns a ``Failure`` ``(code, message)`` and leaves the op without effect
(except where the engine itself keeps a partial effect; see ``apply_append``). A failing op
is reported with its index (``entry``: the wire's ``UpdateOpError``) and later ops still
run. Every op first checks its path bounds (``check_path``), ``merge`` also its value; the
first violation wins, so an op reports one error at most. Codes are ``<op>.<what>``, e.g.
``merge.path.too_deep``, as the engine names them.

Invariants: the caller's ``old`` is never mutated (the doc starts from a clone); values
from ops are cloned before they are stored, so two ops never alias one object; ``MISSING``
never appears in a result.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from brokers.kit.ops.parse import Op
from brokers.kit.ops.values import MISSING, add_number, clone, json_depth, type_name

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


class Doc:
    """The value being updated. ``fresh`` stays true while the value is still the ``{}``
    standing in for a never-written key: a root increment or append on such a key starts
    from nothing, not from ``{}``."""

    __slots__ = ("value", "fresh")

    def __init__(self, value: Any, fresh: bool) -> None:
        self.value, self.fresh = value, fresh


def _segments(path: str) -> tuple[str, ...]:
    return (path,) if path else ()


def _label(path: str) -> str:
    return path if path else "root"


def _label_segments(segments: Sequence[str]) -> str:
    return f"[{', '.join(segments)}]" if segments else "root"


def _walk_or_create(current: dict, segments: Sequence[str]) -> dict:
    """Descend ``segments`` from ``current``, replacing non-object nodes with ``{}``."""
    node = current
    for seg in segments:
        child = node.get(seg)
        if not isinstance(child, dict):
            child = {}
            node[seg] = child
        node = child
    return node


def apply_set(doc: Doc, op: Op) -> Failure | None:
    path: str = op.path
    bad = check_path("set", _segments(path))
    if bad:
        return bad
    if not path:
        doc.value = clone(op.value)
    elif isinstance(doc.value, dict):
        doc.value[path] = clone(op.value)
    else:
        return ("set.target_not_object",
                f"Cannot set at path '{path}': target is {type_name(doc.value)}, expected object.")
    doc.fresh = False
    return None


def apply_remove(doc: Doc, op: Op) -> Failure | None:
    path: str = op.path
    bad = check_path("remove", _segments(path))
    if bad:
        return bad
    if not path:
        doc.value = None
    elif isinstance(doc.value, dict):
        doc.value.pop(path, None)
    else:
        return ("remove.target_not_object",
                f"Cannot remove at path '{path}': target is {type_name(doc.value)}, expected object.")
    doc.fresh = False
    return None


def _add(doc: Doc, op: Op, delta: int) -> Failure | None:
    """``increment`` and ``decrement``: a missing field starts at ``delta``."""
    kind, path = op.kind, op.path
    bad = check_path(kind, _segments(path))
    if bad:
        return bad
    current = doc.value
    if not path:
        out = delta if doc.fresh else add_number(current, delta)
        if out is MISSING:
            return f"{kind}.not_number", f"Expected number at path 'root', got {type_name(current)}."
        doc.value = out
    elif isinstance(current, dict):
        if path in current:
            out = add_number(current[path], delta)
            if out is MISSING:
                return (f"{kind}.not_number",
                        f"Expected number at path '{path}', got {type_name(current[path])}.")
            current[path] = out
        else:
            current[path] = delta
    else:
        return (f"{kind}.target_not_object",
                f"Cannot {kind} at path '{path}': target is {type_name(current)}, expected object.")
    doc.fresh = False
    return None


def apply_increment(doc: Doc, op: Op) -> Failure | None:
    return _add(doc, op, op.by)


def apply_decrement(doc: Doc, op: Op) -> Failure | None:
    return _add(doc, op, -op.by)


def apply_merge(doc: Doc, op: Op) -> Failure | None:
    segments = op.path
    bad = check_path("merge", segments) or check_merge_value(op.value)
    if bad:
        return bad
    if not segments:
        if isinstance(doc.value, dict):
            doc.value.update(clone(op.value))
            doc.fresh = False
        # Root merge into a non-object is a silent no-op in the engine.
        return None
    if not isinstance(doc.value, dict):
        doc.value = {}
    _walk_or_create(doc.value, segments).update(clone(op.value))
    doc.fresh = False
    return None


def _initial_append(value: Any) -> Any:
    return clone(value) if isinstance(value, str) else [clone(value)]


def _append_to(target: Any, value: Any, label: str) -> tuple[Any, Failure | None]:
    """The array/string/null append rules: ``(new target, None)`` or ``(MISSING, failure)``."""
    if isinstance(target, list):
        target.append(clone(value))
        return target, None
    if isinstance(target, str):
        if isinstance(value, str):
            return target + value, None
        return MISSING, ("append.type_mismatch",
                         f"Expected string append value at path '{_label(label)}', got {type_name(value)}.")
    if target is None:
        return _initial_append(value), None
    return MISSING, ("append.type_mismatch",
                     f"Cannot append at path '{_label(label)}': target is {type_name(target)}, "
                     "expected array, string, null, or missing field.")


def apply_append(doc: Doc, op: Op) -> Failure | None:
    segments = op.path
    bad = check_path("append", segments)
    if bad:
        return bad
    if not segments:
        if doc.fresh:
            doc.value = None
        out, bad = _append_to(doc.value, op.value, "")
        if bad:
            return bad
        doc.value, doc.fresh = out, False
        return None
    if not isinstance(doc.value, dict):
        return ("append.target_not_object",
                f"Cannot append at path '{_label_segments(segments)}': "
                f"target is {type_name(doc.value)}, expected object.")
    leaf = segments[-1]
    # Intermediate objects are created even when the leaf append then fails, and the
    # engine clears ``fresh`` here in either case.
    parent = doc.value if len(segments) == 1 else _walk_or_create(doc.value, segments[:-1])
    doc.fresh = False
    if leaf not in parent:
        # A top-level missing leaf follows the null rules; a nested one is always an array.
        parent[leaf] = _initial_append(op.value) if len(segments) == 1 else [clone(op.value)]
        return None
    out, bad = _append_to(parent[leaf], op.value, leaf)
    if bad:
        return bad
    parent[leaf] = out
    return None


APPLIERS: dict[str, Callable[[Doc, Op], Failure | None]] = {
    "set": apply_set, "merge": apply_merge, "increment": apply_increment,
    "decrement": apply_decrement, "append": apply_append, "remove": apply_remove,
}


def apply_update_ops(old: Any, ops: Sequence[Op]) -> tuple[Any, list[dict[str, Any]]]:
    """Apply ``ops`` to ``old`` (MISSING = no stored value); returns ``(new, errors)``.

    A missing value starts as ``{}`` (``Doc.fresh`` until an op succeeds).
    """
    fresh = old is MISSING
    doc = Doc({} if fresh else clone(old), fresh)
    errors: list[dict[str, Any]] = []
    for index, op in enumerate(ops):
        failure = APPLIERS[op.kind](doc, op)
        if failure is not None:
            errors.append(entry(index, failure))
    return doc.value, errors
