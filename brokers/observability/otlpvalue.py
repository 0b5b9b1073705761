"""Decoding of OTLP JSON values: any-values, numbers sent as strings, hex ids, key-value lists.

Owns the value-level rules shared by ``otlp`` (spans, logs, metrics): OTLP JSON encodes 64-bit
integers as decimal strings, ids as lower-case hex (protobuf-JSON base64 ids are converted), and
attribute values as ``AnyValue`` objects. Every helper accepts camelCase and snake_case keys and
returns None (or an empty container) instead of raising on malformed input.

Stringification follows the reference (``OtlpAnyValue::to_string_value``): strings as they are,
ints in decimal, doubles as Rust prints them (``2.0`` → ``"2"``), bools ``true``/``false``,
arrays and kvlists as compact JSON.
"""
from __future__ import annotations

import base64
import binascii
import math
from typing import Any

import orjson


def get(obj: dict, camel: str, snake: str | None = None, default: Any = None) -> Any:
    if camel in obj:
        return obj[camel]
    if snake is not None and snake in obj:
        return obj[snake]
    return default


def lst(obj: dict, camel: str, snake: str | None = None) -> list:
    value = get(obj, camel, snake)
    return value if isinstance(value, list) else []


def dicts(obj: dict, camel: str, snake: str | None = None) -> list[dict]:
    return [item for item in lst(obj, camel, snake) if isinstance(item, dict)]


def to_uint(value: Any) -> int | None:
    """A u64 given as a number or a decimal string (OTLP JSON int64 encoding); None if not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and math.isfinite(value) and value >= 0:
        return int(value)
    if isinstance(value, str):
        try:
            parsed = int(value.strip())
        except ValueError:
            return None
        return parsed if parsed >= 0 else None
    return None


def to_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def to_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def hex_id(value: Any, length: int) -> str:
    """Lower-case hex id; protobuf-JSON base64 ids (16/8 bytes) are converted, others kept."""
    if not isinstance(value, str):
        return ""
    if len(value) == length:
        return value.lower()
    if value and len(value) < length:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return value.lower()
        if len(raw) * 2 == length:
            return raw.hex()
    return value.lower()


def nonzero_id(value: Any, length: int) -> str | None:
    text = hex_id(value, length)
    return None if not text or set(text) == {"0"} else text


def any_value(value: Any) -> Any:
    """Decode an OTLP AnyValue to plain JSON (None when it holds nothing known)."""
    if not isinstance(value, dict):
        return None
    if "stringValue" in value or "string_value" in value:
        text = get(value, "stringValue", "string_value")
        return text if isinstance(text, str) else str(text)
    if "intValue" in value or "int_value" in value:
        return to_int(get(value, "intValue", "int_value"))
    if "doubleValue" in value or "double_value" in value:
        number = to_float(get(value, "doubleValue", "double_value"))
        return number if number is not None and math.isfinite(number) else 0
    if "boolValue" in value or "bool_value" in value:
        return bool(get(value, "boolValue", "bool_value"))
    if "arrayValue" in value or "array_value" in value:
        inner = get(value, "arrayValue", "array_value")
        items = lst(inner, "values") if isinstance(inner, dict) else []
        return [any_value(item) for item in items]
    if "kvlistValue" in value or "kvlist_value" in value:
        inner = get(value, "kvlistValue", "kvlist_value")
        return kv_dict(lst(inner, "values") if isinstance(inner, dict) else [])
    if "bytesValue" in value or "bytes_value" in value:
        raw = get(value, "bytesValue", "bytes_value")
        return raw if isinstance(raw, str) else None
    return None


def stringify(value: Any) -> str:
    """A decoded value as the reference prints it in a ``[key, value]`` pair."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e16:
            return str(int(value))
        return repr(value)
    if value is None:
        return ""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return str(value)


def kv_dict(items: list) -> dict[str, Any]:
    """OTLP KeyValue list → {key: decoded value}; entries without a key or value are skipped."""
    out: dict[str, Any] = {}
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("key"), str) and isinstance(item.get("value"), dict):
            out[item["key"]] = any_value(item["value"])
    return out


def kv_pairs(items: list) -> list[list[str]]:
    return [[key, stringify(value)] for key, value in kv_dict(items).items()]
