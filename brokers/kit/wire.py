"""Worker-protocol JSON messages the engine reads and writes (protocol.md §3), in one place.

Encoding is orjson (compact UTF-8). Parsing tolerates Python's ``NaN``/``Infinity`` tokens
(protocol.md §2): orjson refuses them, so a failed parse retries with the stdlib, and
re-encoding with orjson turns non-finite floats into ``null`` for the Node side.

Invariants: whatever ``loads``/``parse`` return, ``dumps`` can encode again (with room for
the engine's own envelopes): a value nested deeper than ``MAX_DEPTH`` levels is refused as
undecodable, as serde_json refuses it in the reference (orjson would parse up to 1024
levels but encode only 254, and the stdlib fallback hit RecursionError), and an integer
beyond 64 bits becomes a float on every path, as orjson and serde_json read it. Only the
engine puts ``CALLER_KEY`` into a payload (§5.3; ``stamp_caller``).
"""
from __future__ import annotations

import json
from typing import Any

import orjson

dumps = orjson.dumps

MAX_DEPTH = 128
"""Deepest nesting of arrays and objects a message may have (serde_json's limit)."""
CALLER_KEY = "_caller_worker_id"
"""The payload key naming the calling worker; engine-reserved (protocol §10.2)."""

_I64_MIN, _U64_MAX = -(1 << 63), (1 << 64) - 1


def _int(text: str) -> int | float:
    value = int(text)
    return value if _I64_MIN <= value <= _U64_MAX else float(value)


def _depth_over(value: Any, limit: int) -> bool:
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


def _checked(raw: bytes | str, value: Any) -> Any:
    # Only a message with that many brackets can nest that deep: the count is a C loop
    # over the bytes, so the walk runs only for the rare big or odd message.
    if isinstance(value, (dict, list)):
        opens = raw.count(b"[") + raw.count(b"{") if isinstance(raw, bytes) else raw.count("[") + raw.count("{")
        if opens > MAX_DEPTH and _depth_over(value, MAX_DEPTH):
            raise ValueError(f"JSON nested deeper than {MAX_DEPTH} levels")
    return value


def _fallback(raw: bytes | str) -> Any:
    try:
        return json.loads(raw, parse_int=_int)  # accepts NaN / Infinity; ValueError otherwise
    except RecursionError:
        raise ValueError(f"JSON nested deeper than {MAX_DEPTH} levels") from None


def loads(raw: bytes | str) -> Any:
    """Parse one JSON message; raises ValueError if it is not JSON or nests too deep."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        value = _fallback(raw)
    return _checked(raw, value)


def parse(raw: bytes | str) -> tuple[Any, bool]:
    """Parse one JSON message; also say whether it was clean JSON (False: it held NaN or
    Infinity, so relaying its bytes as they are would break a JavaScript peer)."""
    try:
        return _checked(raw, orjson.loads(raw)), True
    except orjson.JSONDecodeError:
        return _checked(raw, _fallback(raw)), False


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
