"""JSON values as the update ops see them: the ``MISSING`` marker, deep copies, type names,
nesting depth and the engine's number arithmetic.

Invariants: ``MISSING`` is one object, distinct from JSON null (``None``) and falsy; it marks
"no value stored" and never appears in a stored or returned value. ``clone`` copies dicts
and lists only (scalars are immutable), so a value taken from an op is never aliased.
"""
from __future__ import annotations

import math
from typing import Any


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

I64_MIN = -(2**63)
I64_MAX = 2**63 - 1
U64_MAX = 2**64 - 1


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


def json_depth(value: Any) -> int:
    """Nesting depth: each object or array adds one level."""
    if isinstance(value, dict):
        return 1 + max((json_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((json_depth(v) for v in value), default=0)
    return 0


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
