"""Declared inputs: one declaration per input shape gives its parser, its errors and its schema.

Every built-in function's payload, every trigger config a provider accepts and every
message type a worker sends is declared once, as an ``Input`` of ``Field``s (as iii's Rust
structs derive both their serde parser and their JSON schema from one definition):

    PUBLISH = Input("publish", "PublishInput",
                    Field("topic", STR, empty=(TOPIC_NOT_SET, "Topic is not set")),
                    Field("data", ANY))
    topic, data = PUBLISH.parse(payload)["topic"], ...     # or raises EngineError
    PUBLISH.schema()                                       # its request_format

Decoding follows serde, so that error texts are the ones iii clients see (workers-a §0):
``invalid type: integer `5`, expected a string``, ``missing field `scope```, ``duplicate
field `value``` (a field and its alias both present), ``invalid value: integer `…`,
expected i64``; a payload that is not an object is ``invalid type: null, expected struct
<Name>``. ``parse`` raises ``deserialization_error`` with ``Failed to deserialize input for
<owner>: <detail>``; ``decode`` raises the bare ``DecodeError`` (for the gateway, which
drops a malformed frame and logs the detail). A present but empty string may carry its
own error code (``empty=``), checked after every field has decoded, in field order.

Invariants: unknown keys are ignored; an optional field that is absent or null takes its
default; a required ``ANY`` field may be null but not absent; the result holds every
declared field under its own name (never under an alias).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from brokers.kit.decode import DecodeError, describe
from brokers.kit.errors import EngineError, deserialization_error
from brokers.kit.ops.values import I64_MAX, I64_MIN, U64_MAX



@dataclass(frozen=True)
class Kind:
    """A JSON value type: how to check it, how serde names it, its JSON schema type."""

    name: str
    expected: str
    """serde's word for it in ``invalid type: …, expected <expected>``."""
    schema: str | None
    check: Callable[[Any], bool]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


STR = Kind("string", "a string", "string", lambda v: isinstance(v, str))
INT = Kind("integer", "i64", "integer", _is_int)
UINT = Kind("integer", "u64", "integer", _is_int)
BOOL = Kind("boolean", "a boolean", "boolean", lambda v: isinstance(v, bool))
NUM = Kind("number", "f64", "number", lambda v: (isinstance(v, (int, float)) and not isinstance(v, bool)))
OBJ = Kind("object", "a map", "object", lambda v: isinstance(v, dict))
ARR = Kind("array", "a sequence", "array", lambda v: isinstance(v, list))
ANY = Kind("any", "any value", None, lambda v: True)


@dataclass(frozen=True)
class Field:
    """One key of an input."""

    name: str
    kind: Kind = ANY
    required: bool = True
    default: Any = None
    aliases: tuple[str, ...] = ()
    items: Kind | None = None
    """For ``ARR``: the type every item must have."""
    empty: tuple[str, str] | None = None
    """``(code, message)`` raised for a present but empty string."""
    parse: Callable[[Any], Any] | None = None
    """Decodes the value itself (raises ``DecodeError``); replaces the kind check."""
    description: str | None = None

    def fits(self, value: Any) -> bool:
        """A quick yes for the common values (the gateway checks every call); False means
        ``value()`` decides, and raises if it does not fit."""
        if self.parse is not None:
            return False
        if self.kind is ANY:
            return True
        if value is None:
            return not self.required
        return self.kind is STR and type(value) is str or self.kind is OBJ and type(value) is dict

    def value(self, value: Any) -> Any:
        """A present value checked (or parsed); null is the default of an optional field."""
        if value is None and (not self.required or self.kind is ANY and self.parse is None):
            return self.default if not self.required else None
        if self.parse is not None:
            return self.parse(value)
        if not self.kind.check(value):
            raise DecodeError(f"invalid type: {describe(value)}, expected {self.kind.expected}")
        if self.kind is INT and not I64_MIN <= value <= I64_MAX \
                or self.kind is UINT and not 0 <= value <= U64_MAX:
            raise DecodeError(f"invalid value: integer `{value}`, expected {self.kind.expected}")
        if self.items is not None:
            for item in value:
                if not self.items.check(item):
                    raise DecodeError(f"invalid type: {describe(item)}, expected {self.items.expected}")
        return value

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {} if self.kind.schema is None else {"type": self.kind.schema}
        if self.kind is UINT:
            out["minimum"] = 0
        if self.items is not None and self.items.schema is not None:
            out["items"] = {"type": self.items.schema}
        if self.description:
            out["description"] = self.description
        return out


class Input:
    """The shape of one input: ``owner`` (a function id, a trigger type, a message type)
    names it in errors, ``struct`` is the serde struct name of the reference."""

    def __init__(self, owner: str, struct: str, *fields: Field) -> None:
        self.owner = owner
        self.struct = struct
        self.fields = fields
        self._by_key = {key: f for f in fields for key in (f.name, *f.aliases)}
        self._required = tuple(f.name for f in fields if f.required)
        self._empty = tuple(f for f in fields if f.empty is not None)
        self._aliased = any(f.aliases for f in fields)

    def check(self, payload: Any) -> None:
        """Raise ``DecodeError`` unless ``payload`` fits (it is not copied: for the hot path,
        where only fitting matters). Type errors come in the payload's key order, then the
        first missing field, as serde reports them."""
        if type(payload) is not dict:
            raise DecodeError(f"invalid type: {describe(payload)}, expected struct {self.struct}")
        by_key = self._by_key
        for key, value in payload.items():
            f = by_key.get(key)
            if f is not None and not f.fits(value):
                f.value(value)
        if self._aliased:
            self._names(payload)
        else:
            for name in self._required:
                if name not in payload:
                    raise DecodeError(f"missing field `{name}`")

    def _names(self, payload: dict[str, Any]) -> dict[str, str]:
        """Which key holds each present field; duplicate and missing fields raise."""
        found: dict[str, str] = {}
        for key in payload:
            f = self._by_key.get(key)
            if f is None:
                continue
            if f.name in found:
                raise DecodeError(f"duplicate field `{f.name}`")
            found[f.name] = key
        for name in self._required:
            if name not in found:
                raise DecodeError(f"missing field `{name}`")
        return found

    def decode(self, payload: Any) -> dict[str, Any]:
        """The decoded fields (every declared one, by its own name), or ``DecodeError``."""
        if type(payload) is not dict:
            raise DecodeError(f"invalid type: {describe(payload)}, expected struct {self.struct}")
        values: dict[str, Any] = {}
        for key, value in payload.items():
            f = self._by_key.get(key)
            if f is not None:
                values[key] = f.value(value)
        found = self._names(payload)
        out = {f.name: values[found[f.name]] if f.name in found else f.default for f in self.fields}
        for f in self._empty:
            if out[f.name] == "":
                raise EngineError(*f.empty)
        return out

    def parse(self, payload: Any) -> dict[str, Any]:
        """``decode``, with a bad shape raised as the spec's ``deserialization_error``."""
        try:
            return self.decode(payload)
        except DecodeError as exc:
            raise deserialization_error(self.owner, str(exc)) from None

    def schema(self) -> dict[str, Any]:
        """The JSON schema of this input (a function's ``request_format``)."""
        out: dict[str, Any] = {"type": "object",
                               "properties": {f.name: f.schema() for f in self.fields}}
        required = [f.name for f in self.fields if f.required]
        if required:
            out["required"] = required
        return out
