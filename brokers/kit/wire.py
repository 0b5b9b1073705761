"""Worker-protocol JSON messages the engine reads and writes (protocol.md §3), in one place.

Encoding is orjson (compact UTF-8). Parsing tolerates Python's ``NaN``/``Infinity`` tokens
(protocol.md §2): orjson refuses them, so a failed parse retries with the stdlib, and
re-encoding with orjson turns non-finite floats into ``null`` for the Node side.

Depth: orjson parses up to 1024 levels of nesting but encodes only 254, and the stdlib
fallback raised RecursionError on a 100,000-level frame. ``loads``/``parse`` turn that into
``ValueError`` (undecodable, dropped by the gateway); a parsed value too deep to encode is
caught where the engine encodes it (the gateway answers the caller) or, for what the
engine keeps (registrations), refused beforehand with ``too_deep``. Checking every message
up front cost more than parsing it (counting brackets in a 16 KiB call: 17 us against
6 us for ``orjson.loads`` on this machine), so the hot path does not.

Invariants: an integer beyond 64 bits becomes a float on every path, as orjson and
serde_json read it; only the engine puts ``CALLER_KEY`` into a payload (§5.3,
``stamp_caller``).
"""
from __future__ import annotations

import json
from typing import Any

import orjson

dumps = orjson.dumps

MAX_DEPTH = 200
"""Deepest nesting the engine keeps (registrations): orjson encodes 254 levels, the rest
is room for the envelopes the engine wraps around a value."""
CALLER_KEY = "_caller_worker_id"
"""The payload key naming the calling worker; engine-reserved (protocol §10.2)."""

_I64_MIN, _U64_MAX = -(1 << 63), (1 << 64) - 1


def _int(text: str) -> int | float:
    value = int(text)
    return value if _I64_MIN <= value <= _U64_MAX else float(value)


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether ``value`` nests deeper than ``limit`` (iterative: no recursion to blow)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values() if isinstance(v, (dict, list)))
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item if isinstance(v, (dict, list)))
    return False


def _fallback(raw: bytes | str) -> Any:
    """The stdlib's parse of what orjson refused. A lone surrogate escape (``"\\ud800"``)
    is refused here too, as serde_json refuses it: the stdlib accepts it, and the string
    it makes can never be encoded again (the router once failed on such a binding at every
    replay)."""
    try:
        value = json.loads(raw, parse_int=_int)  # accepts NaN / Infinity; ValueError otherwise
    except RecursionError:
        raise ValueError("JSON nested too deep to parse") from None
    except OverflowError:  # an integer beyond a double's range: serde_json refuses it too
        raise ValueError("a JSON number is out of range") from None
    try:
        orjson.dumps(value)
    except orjson.JSONEncodeError as exc:
        if "surrogates" in str(exc):
            raise ValueError("a JSON string holds a lone surrogate (not valid UTF-8)") from None
    return value


def loads(raw: bytes | str) -> Any:
    """Parse one JSON message; raises ValueError if it is not JSON or nests too deep."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _fallback(raw)


def parse(raw: bytes | str) -> tuple[Any, bool]:
    """Parse one JSON message; also say whether it was clean JSON (False: it held NaN or
    Infinity, so relaying its bytes as they are would break a JavaScript peer)."""
    try:
        return orjson.loads(raw), True
    except orjson.JSONDecodeError:
        return _fallback(raw), False


def stamp_caller(data: Any, caller: str | None) -> Any:
    """``data`` with ``CALLER_KEY`` set by the engine: the calling worker's id, or removed
    when no worker called (a value the payload brought with it is never trusted)."""
    if isinstance(data, dict):
        if caller is None:
            data.pop(CALLER_KEY, None)
        else:
            data[CALLER_KEY] = caller
    return data


def invoke(invocation_id: str, function_id: str, data: Any, metadata: Any = None,
           traceparent: str | None = None, baggage: str | None = None) -> bytes:
    """E->W ``invokefunction`` (§3.5): ``action`` and ``namespace`` are never sent."""
    msg: dict[str, Any] = {"type": "invokefunction", "invocation_id": invocation_id,
                           "function_id": function_id, "data": data}
    if metadata is not None:
        msg["metadata"] = metadata
    if traceparent is not None:
        msg["traceparent"] = traceparent
    if baggage is not None:
        msg["baggage"] = baggage
    return dumps(msg)


def result(invocation_id: str, function_id: str, value: Any) -> bytes:
    """A successful ``invocationresult``; a null result is omitted as the engine does."""
    msg: dict[str, Any] = {"type": "invocationresult", "invocation_id": invocation_id,
                           "function_id": function_id}
    if value is not None:
        msg["result"] = value
    return dumps(msg)


def error(invocation_id: str, function_id: str, code: str, message: str,
          stacktrace: str | None = None) -> bytes:
    """A failed ``invocationresult`` with an ErrorBody."""
    body: dict[str, Any] = {"code": code, "message": message}
    if stacktrace:
        body["stacktrace"] = stacktrace
    return dumps({"type": "invocationresult", "invocation_id": invocation_id,
                  "function_id": function_id, "error": body})


def stopped(invocation_id: str, function_id: str) -> bytes:
    """The result a waiting caller gets when the other side went away (§4.6)."""
    return error(invocation_id, function_id, "invocation_stopped", "Invocation stopped")
