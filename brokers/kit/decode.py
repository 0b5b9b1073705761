"""serde's wording for inputs that do not fit their shape: ``DecodeError`` and the words.

The engine decodes each built-in input as a typed struct; a payload that does not fit fails
with ``deserialization_error`` and a detail such as ``missing field `scope``` or
``invalid type: integer `5`, expected a string`` (workers-a §0). ``describe`` names a JSON
value the way serde does, so error texts match what iii clients see. Used by the declared
inputs (``inputs.py``) and by the update-ops language (``ops/``), which has shapes of its
own (internally tagged ops, untagged paths).
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


def expect_str(obj: dict[str, Any], field: str, error: type[DecodeError] = DecodeError) -> str:
    """A required string field."""
    if field not in obj:
        raise error(f"missing field `{field}`")
    value = obj[field]
    if not isinstance(value, str):
        raise error(f"invalid type: {describe(value)}, expected a string")
    return value

