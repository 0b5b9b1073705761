"""Worker-protocol JSON messages the engine writes (protocol.md §3), built in one place.

Encoding is orjson (compact UTF-8). Parsing tolerates Python's ``NaN``/``Infinity`` tokens
(protocol.md §2): orjson refuses them, so a failed parse retries with the stdlib, and
re-encoding with orjson turns non-finite floats into ``null`` for the Node side.
"""
from __future__ import annotations

import json
from typing import Any

import orjson

dumps = orjson.dumps


def loads(raw: bytes | str) -> Any:
    """Parse one JSON message; raises ValueError if it is not JSON at all."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)  # accepts NaN / Infinity; raises ValueError otherwise


def parse(raw: bytes | str) -> tuple[Any, bool]:
    """Parse one JSON message; also say whether it was clean JSON (False: it held NaN or
    Infinity, so relaying its bytes as they are would break a JavaScript peer)."""
    try:
        return orjson.loads(raw), True
    except orjson.JSONDecodeError:
        return json.loads(raw), False


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
