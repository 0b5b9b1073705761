"""The pure logic of the state broker (workers-a §2): inputs, results, events, triggers.

No I/O and no clock. The service decodes a call with ``decode_call`` (bad input raises an
``EngineError`` and nothing is written), hands ``Write``s to a store, which computes each
new value with ``apply_write`` inside its transaction, and turns each ``Outcome`` into the
call's result (``write_result``) and, for trigger fan-out, an event (``event_for``).

Invariants: "exists" means a value is stored, and a stored JSON null exists; ``MISSING``
marks absence and never reaches the wire (it becomes ``null``). ``state::delete`` fires
``state:deleted`` even when nothing was stored. ``state::update`` always writes back.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, NamedTuple

import orjson

from brokers.kit.decode import DecodeError
from brokers.kit.inputs import ANY, STR, Field, Input
from brokers.kit.ops import MISSING, Op, apply_update_ops, parse_ops
from brokers.kit.errors import FUNCTION_NOT_FOUND, TRIGGER_REGISTRATION_FAILED, EngineError

SET = "state::set"
GET = "state::get"
DELETE = "state::delete"
UPDATE = "state::update"
LIST = "state::list"
LIST_GROUPS = "state::list_groups"
FUNCTIONS = (SET, GET, DELETE, UPDATE, LIST, LIST_GROUPS)
WRITES = frozenset((SET, DELETE, UPDATE))

TRIGGER_TYPE = "state"
CREATED = "state:created"
UPDATED = "state:updated"
DELETED = "state:deleted"

VALUE_TOO_LARGE = "VALUE_TOO_LARGE"

def _ops(raw: Any) -> tuple[Op, ...]:
    return tuple(parse_ops(raw))  # its OpsDecodeError is a DecodeError


_SCOPE = Field("scope", STR, description="The state scope (group)")
_KEY = Field("key", STR, description="The key within the scope")
_IDEM = Field("idempotency_key", STR, required=False,
              description="Retry safely: a write with a key already applied to this scope and key "
                          "answers as it did then, and writes and fires nothing again")
INPUTS = {
    SET: Input(SET, "StateSetInput", _SCOPE, _KEY,
               Field("value", ANY, aliases=("data",), description="Any JSON value"), _IDEM),
    GET: Input(GET, "StateGetInput", _SCOPE, _KEY),
    DELETE: Input(DELETE, "StateDeleteInput", _SCOPE, _KEY, _IDEM),
    UPDATE: Input(UPDATE, "StateUpdateInput", _SCOPE, _KEY,
                  Field("ops", parse=_ops, description="Update operations, applied in order"), _IDEM),
    LIST: Input(LIST, "StateGetGroupInput", _SCOPE),
    LIST_GROUPS: Input(LIST_GROUPS, "StateListGroupsInput"),
}
"""The input of each ``state::*`` function, declared once (parser, errors, request_format)."""


class Write(NamedTuple):
    """One decoded write: ``kind`` is ``set``, ``delete`` or ``update``. Immutable; a
    NamedTuple rather than a frozen dataclass, whose ``__init__`` cost as much as the rest
    of a call's decode on the hot path (profiled)."""

    kind: str
    scope: str
    key: str
    value: Any = MISSING
    ops: tuple[Op, ...] = ()
    idempotency_key: str | None = None
    """Set: a retry with the same key answers the first write's result and does nothing."""


class Read(NamedTuple):
    """One decoded read: ``kind`` is ``get``, ``list`` or ``list_groups``."""

    kind: str
    scope: str = ""
    key: str = ""


@dataclass
class Outcome:
    """What a write did: the value before and after (MISSING = absent), op errors.

    ``failure`` is set when the store could not perform the write (nothing was stored);
    the call then fails with it and no event fires.
    """

    write: Write
    old: Any
    new: Any
    errors: list[dict[str, Any]] = field(default_factory=list)
    failure: EngineError | None = None
    replayed: bool = False
    """The write's idempotency key was applied before: this is that write's outcome, and
    nothing was written nor fires now."""


# ---------------------------------------------------------------- inputs


def decode_call(function_id: str, payload: Any, max_value_bytes: int | None = None) -> Write | Read:
    """Decode the input of one ``state::*`` call or raise its ``EngineError``."""
    # Hot path (profiled: the generic decode was the largest piece of a call's CPU in this
    # process): a well-formed set/get/delete is read directly. Anything else, including
    # every input that fails, takes the generic path, which words the errors.
    if type(payload) is dict:
        scope, key = payload.get("scope"), payload.get("key")
        if type(scope) is str and type(key) is str:
            if function_id == GET:
                return Read("get", scope, key)
            idem = payload.get("idempotency_key")
            if idem is None or type(idem) is str:
                if function_id == SET:
                    if "value" in payload and "data" not in payload:
                        value = payload["value"]
                        if max_value_bytes is not None:
                            check_value_size(value, max_value_bytes)
                        return Write("set", scope, key, value, (), idem)
                elif function_id == DELETE:
                    return Write("delete", scope, key, MISSING, (), idem)
    shape = INPUTS.get(function_id)
    if shape is None:
        raise EngineError(FUNCTION_NOT_FOUND, f"Function {function_id} not found")
    args = shape.parse(payload)
    if function_id == LIST_GROUPS:
        return Read("list_groups")
    if function_id == LIST:
        return Read("list", args["scope"])
    if function_id == GET:
        return Read("get", args["scope"], args["key"])
    idem = args["idempotency_key"]
    if function_id == DELETE:
        return Write("delete", args["scope"], args["key"], idempotency_key=idem)
    if function_id == UPDATE:
        return Write("update", args["scope"], args["key"], ops=args["ops"], idempotency_key=idem)
    if max_value_bytes is not None:
        check_value_size(args["value"], max_value_bytes)
    return Write("set", args["scope"], args["key"], value=args["value"], idempotency_key=idem)


def check_value_size(value: Any, limit: int) -> None:
    """``max_value_bytes``: the compact JSON encoding of ``value`` must not exceed it."""
    size = len(orjson.dumps(value))
    if size > limit:
        raise EngineError(
            VALUE_TOO_LARGE,
            f"value of {size} bytes exceeds the configured max_value_bytes limit of {limit}",
        )


# ---------------------------------------------------------------- applying


def apply_write(write: Write, old: Any) -> tuple[Any, list[dict[str, Any]]]:
    """The new value of ``write`` given the stored ``old`` (MISSING = absent).

    Returns ``(new, op_errors)``; ``new`` is MISSING for a delete.
    """
    if write.kind == "set":
        return write.value, []
    if write.kind == "delete":
        return MISSING, []
    return apply_update_ops(old, write.ops)


def _wire(value: Any) -> Any:
    return None if value is MISSING else value


def write_result(outcome: Outcome) -> Any:
    """The result a caller gets for a write (§2.1); raises the store's failure, if any."""
    if outcome.failure is not None:
        raise outcome.failure
    kind = outcome.write.kind
    if kind == "delete":
        return _wire(outcome.old)
    out: dict[str, Any] = {"old_value": _wire(outcome.old), "new_value": _wire(outcome.new)}
    if kind == "update" and outcome.errors:
        out["errors"] = outcome.errors
    return out


def get_result(value: Any) -> Any:
    """``state::get``: the stored value itself, or null when absent."""
    return _wire(value)


def raw_get_result(raw: bytes | None) -> Any:
    """``state::get`` from the stored orjson bytes: embedded in the answer as they are
    (``orjson.Fragment``), so the value is neither decoded nor encoded again; null when
    absent, and a stored JSON null is null too (the answer then has no ``result``, as
    ``get_result`` gives)."""
    if raw is None or raw == b"null":
        return None
    return orjson.Fragment(raw)


def list_groups_result(groups: Iterable[str]) -> dict[str, list[str]]:
    """``state::list_groups``: deduplicated, sorted ascending."""
    return {"groups": sorted(set(groups))}


# ---------------------------------------------------------------- events


def event_type(outcome: Outcome) -> str:
    """created when nothing was stored before a set/update, deleted for any delete."""
    if outcome.write.kind == "delete":
        return DELETED
    return CREATED if outcome.old is MISSING else UPDATED


def event_for(outcome: Outcome) -> dict[str, Any]:
    """The payload a ``state`` trigger handler (and its condition) receives (§2.3)."""
    return {
        "type": "state",
        "event_type": event_type(outcome),
        "scope": outcome.write.scope,
        "key": outcome.write.key,
        "old_value": _wire(outcome.old),
        "new_value": _wire(outcome.new),
    }


# ---------------------------------------------------------------- triggers


@dataclass(frozen=True)
class TriggerConfig:
    """A ``state`` trigger's filters; None = any."""

    scope: str | None = None
    key: str | None = None
    condition_function_id: str | None = None

    def matches(self, scope: str, key: str) -> bool:
        return (self.scope is None or self.scope == scope) and (self.key is None or self.key == key)


class TriggerConfigError(EngineError):
    """A ``state`` trigger config the provider rejects."""

    def __init__(self, detail: str) -> None:
        super().__init__(TRIGGER_REGISTRATION_FAILED, f"Failed to parse trigger config: {detail}")


TRIGGER_CONFIG = Input(TRIGGER_TYPE, "StateTriggerConfig",
                       Field("scope", STR, required=False, description="Only this scope"),
                       Field("key", STR, required=False, description="Only this key"),
                       Field("condition_function_id", STR, required=False,
                             description="Skip the handler when this function returns false"))
"""A ``state`` binding's config (its ``trigger_request_format``)."""


def parse_trigger_config(config: Any) -> TriggerConfig:
    """Validate a trigger config; unknown keys are ignored, non-string filters rejected."""
    try:
        return TriggerConfig(**TRIGGER_CONFIG.decode(config))
    except DecodeError as exc:
        raise TriggerConfigError(str(exc)) from None


def condition_allows(result: Any) -> bool:
    """§0: the handler is skipped only when the condition returned JSON ``false``."""
    return result is not False
