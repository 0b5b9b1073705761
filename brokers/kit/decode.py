"""Typed decoding of built-in function inputs, with serde-like error details.

The engine decodes each built-in input as a typed struct; a payload that does not fit fails
with ``deserialization_error`` and a detail such as ``missing field `scope``` or
``invalid type: integer `5`, expected a string`` (workers-a §0). These helpers produce the
same wording so error texts match what iii clients see. Unknown extra keys are ignored.

Lives in the kit because the update-ops language (``brokers.kit.ops``) decodes with it and
is shared by ``state::update`` and ``stream::update``; the kit imports no broker.
"""
from __future__ import annotations

from typing import Any


class DecodeError(ValueError):
    """An input that does not fit its shape; ``str(exc)`` is the detail."""


def describe(value: Any) -> str:
    """How serde names an unexpected JSON value in ``invalid type: ...``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{'true' if value else 'false'}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"floating point `{value}`"
    if isinstance(value, str):
        return f'string "{value}"'
    if isinstance(value, list):
        return "sequence"
    return "map"


def expect_struct(payload: Any, name: str, error: type[DecodeError] = DecodeError) -> dict[str, Any]:
    """The payload must be a JSON object (``null`` included in the rejects)."""
    if not isinstance(payload, dict):
        raise error(f"invalid type: {describe(payload)}, expected struct {name}")
    return payload


def expect_str(obj: dict[str, Any], field: str, error: type[DecodeError] = DecodeError) -> str:
    """A required string field."""
    if field not in obj:
        raise error(f"missing field `{field}`")
    value = obj[field]
    if not isinstance(value, str):
        raise error(f"invalid type: {describe(value)}, expected a string")
    return value


def optional_str(obj: dict[str, Any], field: str, error: type[DecodeError] = DecodeError) -> str | None:
    """An ``Option<String>`` field: absent or null is None."""
    value = obj.get(field)
    if value is None or isinstance(value, str):
        return value
    raise error(f"invalid type: {describe(value)}, expected a string")
