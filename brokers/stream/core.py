"""The pure logic of the stream broker (workers-a §3): inputs, results, events, triggers.

No I/O and no clock (``now_ms`` is passed in). The model is ``stream_name -> group_id ->
item_id -> JSON``. Items live in the state broker's store (``brokers.state.store``: one
copy of the LMDB layout, the group commit's batch apply and the update ops), with the
(stream, group) pair as the store's scope: ``scope_of`` makes one string of the two that
``split_scope`` takes apart again exactly, so a stream name holding ``:`` is listed as
itself by ``stream::list_all`` (the reference splits ``stream:<name>:<group>`` on ``:`` and
lists ``iii:devtools:state`` as stream ``iii``).

A write's ``Outcome`` (the state core's) becomes the call's result (``write_result``) and
at most one event (``event_of``: ``create``/``update`` for set and update, ``delete`` only
for an item that existed); an event is the §3.4 wrapper message, the same dict for the
``stream`` trigger payload and the subscriber push. A custom provider's answer (§3.2) is
checked by ``custom_result`` into the same (old, new) pair.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from brokers.kit import errors
from brokers.kit.decode import DecodeError
from brokers.kit.errors import EngineError, TRIGGER_REGISTRATION_FAILED
from brokers.kit.inputs import ANY, STR, Field, Input
from brokers.kit.ops import MISSING, Op, parse_ops
from brokers.state.core import Outcome, Write

SET = "stream::set"
GET = "stream::get"
DELETE = "stream::delete"
UPDATE = "stream::update"
LIST = "stream::list"
LIST_GROUPS = "stream::list_groups"
LIST_ALL = "stream::list_all"
SEND = "stream::send"
WRITES = (SET, DELETE, UPDATE)
DELEGATED = frozenset((SET, GET, DELETE, UPDATE, LIST, LIST_GROUPS))
"""What a custom stream provider may take over (§3.2); not list_all, not send."""

CALL_TIMEOUT_S = 30.0
"""A trigger handler, condition, join trigger or auth function that has not answered by
then is given up (logged)."""

TRIGGER_TYPE = "stream"
JOIN = "stream:join"
LEAVE = "stream:leave"

FAILURES = {
    SET: (errors.STREAM_SET_ERROR, "Failed to set value"),
    GET: (errors.STREAM_GET_ERROR, "Failed to get value"),
    DELETE: (errors.STREAM_DELETE_ERROR, "Failed to delete value"),
    UPDATE: (errors.STREAM_UPDATE_ERROR, "Failed to update value"),
    LIST: (errors.STREAM_GET_GROUP_ERROR, "Failed to get group"),
    LIST_GROUPS: (errors.STREAM_LIST_GROUPS_ERROR, "Failed to list groups"),
    LIST_ALL: (errors.STREAM_LIST_ALL_ERROR, "Failed to list stream"),
    SEND: (errors.STREAM_SEND_ERROR, "Failed to send event"),
}
"""Each function's code and message prefix (§3.1)."""


def failure(function_id: str, detail: str) -> EngineError:
    code, text = FAILURES[function_id]
    return EngineError(code, f"{text}: {detail}")


def _ops(raw: Any) -> tuple[Op, ...]:
    return tuple(parse_ops(raw))


_NAME = Field("stream_name", STR, description="The stream")
_GROUP = Field("group_id", STR, description="The group within the stream")
_ITEM = Field("item_id", STR, description="The item within the group")
INPUTS = {
    SET: Input(SET, "StreamSetInput", _NAME, _GROUP, _ITEM, Field("data", ANY, description="Any JSON value")),
    GET: Input(GET, "StreamGetInput", _NAME, _GROUP, _ITEM),
    DELETE: Input(DELETE, "StreamDeleteInput", _NAME, _GROUP, _ITEM),
    UPDATE: Input(UPDATE, "StreamUpdateInput", _NAME, _GROUP, _ITEM,
                  Field("ops", parse=_ops, description="Update operations, applied in order")),
    LIST: Input(LIST, "StreamGetGroupInput", _NAME, _GROUP),
    LIST_GROUPS: Input(LIST_GROUPS, "StreamListGroupsInput", _NAME),
    LIST_ALL: Input(LIST_ALL, "StreamListAllInput"),
    SEND: Input(SEND, "StreamSendInput", _NAME, _GROUP,
                Field("id", STR, required=False, description="Item id the event is about"),
                Field("type", STR, description="The event's own type"),
                Field("data", ANY, description="Any JSON value")),
}
"""The input of each ``stream::*`` function, declared once."""


# ---------------------------------------------------------------- scopes


def scope_of(stream: str, group: str) -> str:
    """The store scope of one group: the stream's length first, so no name can be confused."""
    return f"{len(stream)}:{stream}{group}"


def split_scope(scope: str) -> tuple[str, str] | None:
    """``(stream, group)`` of a scope made by ``scope_of``; None for anything else."""
    size, sep, rest = scope.partition(":")
    if not sep or not size.isdigit() or int(size) > len(rest):
        return None
    n = int(size)
    return rest[:n], rest[n:]


def decode_write(function_id: str, payload: Any) -> Write:
    """The store write of one ``stream::set|delete|update`` call, or its ``EngineError``."""
    args = INPUTS[function_id].parse(payload)
    scope = scope_of(args["stream_name"], args["group_id"])
    if function_id == SET:
        return Write("set", scope, args["item_id"], value=args["data"])
    if function_id == DELETE:
        return Write("delete", scope, args["item_id"])
    return Write("update", scope, args["item_id"], ops=args["ops"])


# ---------------------------------------------------------------- results


FUNCTION_OF = {"set": SET, "delete": DELETE, "update": UPDATE}


def _wire(value: Any) -> Any:
    return None if value is MISSING else value


def write_result(outcome: Outcome) -> Any:
    """The result a writer gets (§3.1); raises the store's failure, if any."""
    kind = outcome.write.kind
    if outcome.failure is not None:  # the store's words, this function's code
        raise failure(FUNCTION_OF[kind], outcome.failure.message.split(": ", 1)[-1])
    if kind == "delete":
        return {"old_value": _wire(outcome.old)}
    out: dict[str, Any] = {"old_value": _wire(outcome.old), "new_value": _wire(outcome.new)}
    if kind == "update" and outcome.errors:
        out["errors"] = outcome.errors
    return out


def list_all_result(scopes: Iterable[str]) -> dict[str, Any]:
    """``stream::list_all``: every stream with its sorted groups, sorted by name."""
    streams: dict[str, set[str]] = {}
    for scope in scopes:
        parts = split_scope(scope)
        if parts is not None:
            streams.setdefault(parts[0], set()).add(parts[1])
    listed = [{"id": name, "groups": sorted(groups)} for name, groups in sorted(streams.items())]
    return {"stream": listed, "count": len(listed)}


def list_groups_result(stream: str, scopes: Iterable[str]) -> list[str]:
    """``stream::list_groups``: the groups of one stream (a bare array)."""
    out = []
    for scope in scopes:
        parts = split_scope(scope)
        if parts is not None and parts[0] == stream:
            out.append(parts[1])
    return out


_CUSTOM_KEYS = {SET: ("old_value", "new_value"), DELETE: ("old_value",),
                UPDATE: ("old_value", "new_value")}


def custom_result(function_id: str, result: Any) -> dict[str, Any]:
    """A custom provider's answer to a write (§3.2), checked: ``{old_value, new_value}``,
    ``{old_value}`` or ``{old_value, new_value, errors?}`` (null fields allowed)."""
    if result is None:
        raise failure(function_id, "Function returned no result")
    if not isinstance(result, dict):
        raise EngineError(errors.JSON_ERROR, "Failed to convert result to value: "
                          f"invalid type: expected struct, got {type(result).__name__}")
    for key in _CUSTOM_KEYS[function_id]:
        if key not in result and key != "old_value":
            raise EngineError(errors.JSON_ERROR, f"Failed to convert result to value: missing field `{key}`")
    if function_id == UPDATE and not isinstance(result.get("errors", []) or [], list):
        raise EngineError(errors.JSON_ERROR, "Failed to convert result to value: `errors` is not a sequence")
    out = {key: result.get(key) for key in _CUSTOM_KEYS[function_id]}
    if function_id == UPDATE and result.get("errors"):
        out["errors"] = result["errors"]
    return out


# ---------------------------------------------------------------- events


def wrapper(stream: str, group: str, item: str | None, event: dict[str, Any], now_ms: int) -> dict[str, Any]:
    """The §3.4 message: the push to subscribers and the ``stream`` trigger payload."""
    return {"type": "stream", "timestamp": now_ms, "streamName": stream, "groupId": group,
            "id": item, "event": event}


def event_of(function_id: str, stream: str, group: str, item: str, old: Any, new: Any,
             now_ms: int) -> dict[str, Any] | None:
    """The event of a committed write: ``create`` or ``update`` with the new item,
    ``delete`` with the removed one, nothing for the delete of a missing item. ``old`` is
    MISSING when nothing was stored (a stored null exists); a custom provider's answer
    knows no such difference, so its null ``old_value`` is passed as MISSING."""
    absent = old is MISSING
    if function_id == DELETE:
        if absent:
            return None
        return wrapper(stream, group, item, {"type": "delete", "data": old}, now_ms)
    kind = "create" if absent else "update"
    return wrapper(stream, group, item, {"type": kind, "data": _wire(new)}, now_ms)


def outcome_event(outcome: Outcome, now_ms: int) -> dict[str, Any] | None:
    """``event_of`` for a store outcome (its write carries the scope and the item)."""
    if outcome.failure is not None:
        return None
    stream, group = split_scope(outcome.write.scope) or ("", "")
    fn = FUNCTION_OF[outcome.write.kind]
    return event_of(fn, stream, group, outcome.write.key, outcome.old, outcome.new, now_ms)


def send_event(args: dict[str, Any], now_ms: int) -> dict[str, Any]:
    """The event of ``stream::send`` (decoded input): a custom event, never stored."""
    return wrapper(args["stream_name"], args["group_id"], args["id"],
                   {"type": "event", "event": {"type": args["type"], "data": args["data"]}}, now_ms)


# ---------------------------------------------------------------- triggers


@dataclass(frozen=True)
class TriggerConfig:
    """A ``stream`` binding's filters (``None`` or ``""`` = any)."""

    stream_name: str
    group_id: str | None = None
    item_id: str | None = None
    condition_function_id: str | None = None

    def matches(self, message: dict[str, Any]) -> bool:
        """Whether the wrapper ``message`` (of this binding's stream) is for it."""
        if self.group_id and self.group_id != message["groupId"]:
            return False
        return not self.item_id or self.item_id == message["id"]


TRIGGER_CONFIG = Input(TRIGGER_TYPE, "StreamTriggerConfig",
                       Field("stream_name", STR, description="The stream to watch"),
                       Field("group_id", STR, required=False, description="Only this group"),
                       Field("item_id", STR, required=False, description="Only this item"),
                       Field("condition_function_id", STR, required=False,
                             description="Skip the handler when this function returns false"))


def parse_trigger_config(config: Any) -> TriggerConfig:
    """A ``stream`` binding's config; a missing ``stream_name`` is refused (the reference
    panics on it)."""
    try:
        return TriggerConfig(**TRIGGER_CONFIG.decode(config))
    except DecodeError as exc:
        raise EngineError(TRIGGER_REGISTRATION_FAILED, f"Failed to deserialize stream trigger: {exc}") from None


def join_payload(subscription_id: str, stream: str, group: str, item: str | None,
                 context: Any) -> dict[str, Any]:
    """What ``stream:join`` and ``stream:leave`` handlers receive (§3.3)."""
    return {"subscription_id": subscription_id, "stream_name": stream, "group_id": group,
            "id": item, "context": context}


def refuses(result: Any) -> bool:
    """A join trigger refuses only with an object holding ``unauthorized: true``."""
    return isinstance(result, dict) and result.get("unauthorized") is True


def condition_allows(result: Any) -> bool:
    """§0: the handler is skipped only when the condition returned JSON ``false``."""
    return result is not False
