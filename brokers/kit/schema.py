"""A small strict validator for config blocks that names the path of every bad key.

Each broker's ``config.py`` declares its keys as ``{key: Field(...)}`` and calls
``validate(raw, fields, path)``; the result is a plain dict with defaults filled in.
Errors read ``workers[2].config.port: expected int, got str``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


class ConfigError(Exception):
    """A config file that cannot be used; the message names the offending path."""


_MISSING = object()

_TYPE_NAMES = {int: "int", float: "number", str: "str", bool: "bool", dict: "mapping", list: "list"}


@dataclass(frozen=True)
class Field:
    """One config key: its type(s), default, and optional extra check or nested parser."""

    type: type | tuple[type, ...] = object
    default: Any = _MISSING
    check: Callable[[Any], str | None] | None = None
    """Returns an error text for a bad value, or None."""
    parse: Callable[[Any, str], Any] | None = None
    """Nested validator ``parse(value, path)`` for mappings and lists."""

    @property
    def required(self) -> bool:
        return self.default is _MISSING


def _type_ok(value: Any, expected: type | tuple[type, ...]) -> bool:
    if expected is object:
        return True
    kinds = expected if isinstance(expected, tuple) else (expected,)
    if isinstance(value, bool) and bool not in kinds:
        return False  # YAML true is not an int
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        return True
    return isinstance(value, kinds)


def _type_name(expected: type | tuple[type, ...]) -> str:
    kinds = expected if isinstance(expected, tuple) else (expected,)
    return " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)


def validate(raw: Any, fields: dict[str, Field], path: str) -> dict[str, Any]:
    """Check ``raw`` (a mapping or None) against ``fields``; unknown keys are errors."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected mapping, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(fields), key=str)
    if unknown:
        raise ConfigError(f"{path}.{unknown[0]}: unknown key (allowed: {', '.join(sorted(fields))})")
    out: dict[str, Any] = {}
    for key, spec in fields.items():
        where = f"{path}.{key}"
        if key not in raw or (raw[key] is None and not spec.required):
            if spec.required:
                raise ConfigError(f"{where}: required")
            out[key] = spec.default() if callable(spec.default) else spec.default
            continue
        value = raw[key]
        if not _type_ok(value, spec.type):
            raise ConfigError(f"{where}: expected {_type_name(spec.type)}, got {type(value).__name__}")
        if spec.check is not None:
            problem = spec.check(value)
            if problem:
                raise ConfigError(f"{where}: {problem}")
        out[key] = spec.parse(value, where) if spec.parse is not None else value
    return out


def positive(value: Any) -> str | None:
    """A check for counts and durations."""
    return None if value > 0 else "must be > 0"


def port(value: Any) -> str | None:
    """A check for TCP ports (0 = any free port)."""
    return None if 0 <= value <= 65535 else "must be 0..65535"
