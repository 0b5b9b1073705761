"""Decoding of the ``ops`` array into ``Op`` tuples: one parser per op kind behind
``PARSERS``.

A shape error (unknown ``type``, missing ``path``, ``by`` not an i64, ...) raises
``OpsDecodeError`` with serde's wording; any bad op rejects the whole array, so the call
fails with ``deserialization_error`` and nothing is written.

Invariants: ``PARSERS`` lists the kinds in the engine's order (it is the order of "expected
one of ..." in the unknown-variant error) and has the same keys as ``apply.APPLIERS``.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

from brokers.kit.decode import DecodeError, describe, expect_str
from brokers.kit.ops.values import I64_MAX, I64_MIN, MISSING


class OpsDecodeError(DecodeError):
    """``ops`` does not fit the UpdateOp shape; the detail mimics serde's wording."""


class Op(NamedTuple):
    """One decoded op. ``path`` is a str for set/increment/decrement/remove and a tuple of
    segments for merge/append (``()`` = root). ``value`` is MISSING when absent."""

    kind: str
    path: Any
    value: Any = MISSING
    by: int = 0


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


def _path(raw: dict[str, Any]) -> str:
    return expect_str(raw, "path", OpsDecodeError)


def parse_set(kind: str, raw: dict[str, Any]) -> Op:
    # Option<Value>: absent and null both mean null.
    return Op(kind, _path(raw), raw.get("value"))


def parse_segments(kind: str, raw: dict[str, Any]) -> Op:
    """``merge`` and ``append``: a MergePath and a required value (checked first)."""
    if "value" not in raw:
        raise OpsDecodeError("missing field `value`")
    return Op(kind, _merge_path(raw.get("path")), raw["value"])


def parse_by(kind: str, raw: dict[str, Any]) -> Op:
    """``increment`` and ``decrement``: a path and an i64 ``by``."""
    path = _path(raw)
    if "by" not in raw:
        raise OpsDecodeError("missing field `by`")
    return Op(kind, path, by=_i64(raw["by"]))


def parse_remove(kind: str, raw: dict[str, Any]) -> Op:
    return Op(kind, _path(raw))


PARSERS: dict[str, Callable[[str, dict[str, Any]], Op]] = {
    "set": parse_set, "merge": parse_segments, "increment": parse_by,
    "decrement": parse_by, "append": parse_segments, "remove": parse_remove,
}


def parse_op(raw: Any) -> Op:
    """Decode one op object (internally tagged by ``type``)."""
    if not isinstance(raw, dict):
        raise OpsDecodeError(f"invalid type: {describe(raw)}, expected internally tagged enum UpdateOp")
    if "type" not in raw:
        raise OpsDecodeError("missing field `type`")
    kind = raw["type"]
    parser = PARSERS.get(kind) if isinstance(kind, str) else None
    if parser is None:
        if not isinstance(kind, str):
            raise OpsDecodeError(f"invalid type: {describe(kind)}, expected variant identifier")
        expected = ", ".join(f"`{k}`" for k in PARSERS)
        raise OpsDecodeError(f"unknown variant `{kind}`, expected one of {expected}")
    return parser(kind, raw)


def parse_ops(raw: Any) -> list[Op]:
    """Decode the ``ops`` array; any bad op rejects the whole array."""
    if not isinstance(raw, list):
        raise OpsDecodeError(f"invalid type: {describe(raw)}, expected a sequence")
    return [parse_op(item) for item in raw]
