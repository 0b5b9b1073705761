"""The update-ops language of ``state::update`` and ``stream::update`` (workers-a §2.2).

Two steps, both pure:

* ``parse_ops(raw)`` decodes the JSON ``ops`` array into ``Op`` tuples. A shape error
  (unknown ``type``, missing ``path``, ``by`` not an i64, ...) raises ``OpsDecodeError``:
  the whole call then fails with ``deserialization_error`` and nothing is written.
* ``apply_update_ops(old, ops)`` applies the ops in order to a private copy of ``old``
  (``MISSING`` when no value is stored) and returns ``(new_value, errors)``. A failing op is
  skipped and reported with its index; later ops still run.

Invariants: neither input is mutated; values from ops are copied before they are stored
(so two ops never alias one object); ``MISSING`` never appears in a result.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence

from brokers.state.decode import DecodeError, describe, expect_str


class _Missing:
    """The "no value stored" marker; distinct from JSON null (``None``)."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()

MAX_PATH_DEPTH = 32
MAX_SEGMENT_BYTES = 256
MAX_VALUE_DEPTH = 16
MAX_VALUE_KEYS = 1024
PROTO_KEYS = frozenset(("__proto__", "constructor", "prototype"))
DOC_URL = "https://iii.dev/docs/workers/iii-state#error-codes"

I64_MIN = -(2**63)
I64_MAX = 2**63 - 1
U64_MAX = 2**64 - 1

_KINDS = ("set", "merge", "increment", "decrement", "append", "remove")


class OpsDecodeError(DecodeError):
    """``ops`` does not fit the UpdateOp shape; the detail mimics serde's wording."""


class Op(NamedTuple):
    """One decoded op. ``path`` is a str for set/increment/decrement/remove and a tuple of
    segments for merge/append (``()`` = root). ``value`` is MISSING when absent."""

    kind: str
    path: Any
    value: Any = MISSING
    by: int = 0


# ---------------------------------------------------------------- decoding


def _merge_path(raw: Any) -> tuple[str, ...]:
    """serde's untagged MergePath: absent/null -> root, "" -> root, "x" -> (x,), [..]."""
    if raw is None:
        return ()
    if isinstance(raw, str):
        return (raw,) if raw else ()
    if isinstance(raw, list) and all(isinstance(s, str) for s in raw):
        return tuple(raw)
    raise OpsDecodeError("data did not match any variant of untagged enum MergePath")


def _i64(raw: Any) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise OpsDecodeError(f"invalid type: {describe(raw)}, expected i64")
    if not I64_MIN <= raw <= I64_MAX:
        raise OpsDecodeError(f"invalid value: integer `{raw}`, expected i64")
    return raw


def parse_op(raw: Any) -> Op:
    """Decode one op object (internally tagged by ``type``)."""
    if not isinstance(raw, dict):
        raise OpsDecodeError(f"invalid type: {describe(raw)}, expected internally tagged enum UpdateOp")
    if "type" not in raw:
        raise OpsDecodeError("missing field `type`")
    kind = raw["type"]
    if kind not in _KINDS:
        if not isinstance(kind, str):
            raise OpsDecodeError(f"invalid type: {describe(kind)}, expected variant identifier")
        expected = ", ".join(f"`{k}`" for k in _KINDS)
        raise OpsDecodeError(f"unknown variant `{kind}`, expected one of {expected}")
    if kind in ("merge", "append"):
        if "value" not in raw:
            raise OpsDecodeError("missing field `value`")
        return Op(kind, _merge_path(raw.get("path")), raw["value"])
    path = expect_str(raw, "path", OpsDecodeError)
    if kind == "set":
        # Option<Value>: absent and null both mean null.
        return Op(kind, path, raw.get("value"))
    if kind == "remove":
        return Op(kind, path)
    if "by" not in raw:
        raise OpsDecodeError("missing field `by`")
    return Op(kind, path, by=_i64(raw["by"]))


def parse_ops(raw: Any) -> list[Op]:
    """Decode the ``ops`` array; any bad op rejects the whole array."""
    if not isinstance(raw, list):
        raise OpsDecodeError(f"invalid type: {describe(raw)}, expected a sequence")
    return [parse_op(item) for item in raw]


# ---------------------------------------------------------------- helpers


def clone(value: Any) -> Any:
    """Deep copy of a JSON value (dicts and lists only; scalars are immutable)."""
    if isinstance(value, dict):
        return {k: clone(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clone(v) for v in value]
    return value


def type_name(value: Any) -> str:
    """JSON type name as the engine prints it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _err(index: int, code: str, message: str) -> dict[str, Any]:
    return {"op_index": index, "code": code, "message": message, "doc_url": DOC_URL}


def _label(path: str) -> str:
    return path if path else "root"


def _label_segments(segments: Sequence[str]) -> str:
    return f"[{', '.join(segments)}]" if segments else "root"


def _check_path(op: str, index: int, segments: Sequence[str], errors: list) -> bool:
    """Path bounds shared by every op; the first violation is reported."""
    if len(segments) > MAX_PATH_DEPTH:
        errors.append(_err(index, f"{op}.path.too_deep",
                           f"Path depth {len(segments)} exceeds maximum of {MAX_PATH_DEPTH}"))
        return False
    for seg in segments:
        if not seg:
            errors.append(_err(index, f"{op}.path.empty_segment", "Path contains an empty segment"))
            return False
        size = len(seg.encode("utf-8", "surrogatepass"))
        if size > MAX_SEGMENT_BYTES:
            errors.append(_err(index, f"{op}.path.segment_too_long",
                               f"Path segment of {size} bytes exceeds maximum of {MAX_SEGMENT_BYTES}"))
            return False
        if seg in PROTO_KEYS:
            errors.append(_err(index, f"{op}.path.proto_polluted",
                               f"Path segment '{seg}' is not allowed (prototype pollution)."))
            return False
    return True


def json_depth(value: Any) -> int:
    """Nesting depth: each object or array adds one level."""
    if isinstance(value, dict):
        return 1 + max((json_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((json_depth(v) for v in value), default=0)
    return 0


def _check_merge_value(index: int, value: Any, errors: list) -> bool:
    if not isinstance(value, dict):
        errors.append(_err(index, "merge.value.not_an_object", "Merge value must be a JSON object"))
        return False
    if len(value) > MAX_VALUE_KEYS:
        errors.append(_err(index, "merge.value.too_many_keys",
                           f"Merge value has {len(value)} top-level keys, exceeds maximum of {MAX_VALUE_KEYS}"))
        return False
    for key in value:
        if key in PROTO_KEYS:
            errors.append(_err(index, "merge.value.proto_polluted",
                               f'Merge value top-level key "{key}" is a prototype-pollution sink'))
            return False
    depth = json_depth(value)
    if depth > MAX_VALUE_DEPTH:
        errors.append(_err(index, "merge.value.too_deep",
                           f"Merge value JSON nesting depth {depth} exceeds maximum of {MAX_VALUE_DEPTH}"))
        return False
    return True


def add_number(value: Any, delta: int) -> Any:
    """``value + delta`` with the engine's number rules, or MISSING if not representable.

    Integers in [i64 min, u64 max] are exact (i64, then u64 on overflow); anything beyond
    that range is a float to the engine (serde_json parses it as f64), as are floats.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return MISSING
    if isinstance(value, int):
        if I64_MIN <= value <= U64_MAX:
            result = value + delta
            return result if I64_MIN <= result <= U64_MAX else MISSING
        value = float(value)
    out = value + float(delta)
    return out if math.isfinite(out) else MISSING


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


def _initial_append(value: Any) -> Any:
    return clone(value) if isinstance(value, str) else [clone(value)]


def _append_to(target: Any, value: Any, label: str, index: int, errors: list) -> Any:
    """The array/string/null append rules; returns the new target or MISSING on error."""
    if isinstance(target, list):
        target.append(clone(value))
        return target
    if isinstance(target, str):
        if isinstance(value, str):
            return target + value
        errors.append(_err(index, "append.type_mismatch",
                           f"Expected string append value at path '{_label(label)}', got {type_name(value)}."))
        return MISSING
    if target is None:
        return _initial_append(value)
    errors.append(_err(index, "append.type_mismatch",
                       f"Cannot append at path '{_label(label)}': target is {type_name(target)}, "
                       "expected array, string, null, or missing field."))
    return MISSING


# ---------------------------------------------------------------- applying


def apply_update_ops(old: Any, ops: Sequence[Op]) -> tuple[Any, list[dict[str, Any]]]:
    """Apply ``ops`` to ``old`` (MISSING = no stored value); returns ``(new, errors)``.

    A missing value starts as ``{}``; ``missing_default`` stays true until an op succeeds,
    because a root increment/append on a never-written key starts from nothing, not ``{}``.
    """
    missing_default = old is MISSING
    current: Any = {} if missing_default else clone(old)
    errors: list[dict[str, Any]] = []

    for index, op in enumerate(ops):
        kind = op.kind
        if kind == "merge":
            segments = op.path
            if not _check_path("merge", index, segments, errors):
                continue
            if not _check_merge_value(index, op.value, errors):
                continue
            if not segments:
                if isinstance(current, dict):
                    current.update(clone(op.value))
                    missing_default = False
                # Root merge into a non-object is a silent no-op in the engine.
                continue
            if not isinstance(current, dict):
                current = {}
            _walk_or_create(current, segments).update(clone(op.value))
            missing_default = False
        elif kind == "append":
            segments = op.path
            if not _check_path("append", index, segments, errors):
                continue
            if not segments:
                if missing_default:
                    current = None
                out = _append_to(current, op.value, "", index, errors)
                if out is not MISSING:
                    current = out
                    missing_default = False
            elif not isinstance(current, dict):
                errors.append(_err(index, "append.target_not_object",
                                   f"Cannot append at path '{_label_segments(segments)}': "
                                   f"target is {type_name(current)}, expected object."))
            else:
                leaf = segments[-1]
                if len(segments) == 1:
                    parent = current
                    fresh = _initial_append(op.value)
                else:
                    parent = _walk_or_create(current, segments[:-1])
                    fresh = [clone(op.value)]  # a nested missing leaf is always an array
                if leaf in parent:
                    out = _append_to(parent[leaf], op.value, leaf, index, errors)
                    if out is not MISSING:
                        parent[leaf] = out
                else:
                    parent[leaf] = fresh
                # The engine clears the flag here even when the leaf append failed.
                missing_default = False
        else:
            path: str = op.path
            if not _check_path(kind, index, (path,) if path else (), errors):
                continue
            if kind == "set":
                if not path:
                    current = clone(op.value)
                elif isinstance(current, dict):
                    current[path] = clone(op.value)
                else:
                    errors.append(_err(index, "set.target_not_object",
                                       f"Cannot set at path '{path}': target is {type_name(current)}, expected object."))
                    continue
                missing_default = False
            elif kind == "remove":
                if not path:
                    current = None
                elif isinstance(current, dict):
                    current.pop(path, None)
                else:
                    errors.append(_err(index, "remove.target_not_object",
                                       f"Cannot remove at path '{path}': target is {type_name(current)}, expected object."))
                    continue
                missing_default = False
            else:  # increment / decrement
                delta = op.by if kind == "increment" else -op.by
                if not path:
                    out = delta if missing_default else add_number(current, delta)
                    if out is MISSING:
                        errors.append(_err(index, f"{kind}.not_number",
                                           f"Expected number at path 'root', got {type_name(current)}."))
                        continue
                    current = out
                elif isinstance(current, dict):
                    if path in current:
                        out = add_number(current[path], delta)
                        if out is MISSING:
                            errors.append(_err(index, f"{kind}.not_number",
                                               f"Expected number at path '{path}', got {type_name(current[path])}."))
                            continue
                        current[path] = out
                    else:
                        current[path] = delta
                else:
                    errors.append(_err(index, f"{kind}.target_not_object",
                                       f"Cannot {kind} at path '{path}': target is {type_name(current)}, expected object."))
                    continue
                missing_default = False
    return current, errors
