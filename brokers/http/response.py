"""What a function's answer becomes on the wire (workers-b §2.5-§2.7), built purely.

``Reply`` is a complete response: status, headers as ``(name, value)`` byte pairs, body.
``from_result`` maps a handler's non-null result (an ``ApiResponse``), ``from_middleware``
a middleware's ``respond``, ``error`` the engine's envelopes.

Invariants: a status outside 100..599 or not an integer is 200; header names and values
that are not valid HTTP tokens / visible text are dropped, never sent; the body rules of
§2.5 apply in their order (a user content type with a string body sends the string raw;
with a null body nothing; a non-JSON user content type sends the JSON text; otherwise JSON
with ``content-type: application/json`` unless the user set one); ``error_id`` (lower 48
bits of the nanosecond clock, hex) is on logged 5xx envelopes only.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

JSON_CT = (b"content-type", b"application/json")
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


@dataclass
class Reply:
    status: int = 200
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""


def _status(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
        return value
    return 200


def _header(name: Any, value: Any) -> tuple[bytes, bytes] | None:
    if not isinstance(name, str) or not isinstance(value, str):
        return None
    name, value = name.strip(), value.strip()
    if not _TOKEN.match(name) or any(c in value for c in "\r\n\x00"):
        return None
    try:
        return name.encode("ascii"), value.encode("latin-1")
    except UnicodeEncodeError:
        return None


def headers_of(raw: Any) -> list[tuple[bytes, bytes]]:
    """An object ``{name: value}`` or an array of ``"Name: value"`` strings (§2.5)."""
    pairs: list[Any] = []
    if isinstance(raw, dict):
        pairs = list(raw.items())
    elif isinstance(raw, list):
        pairs = [s.split(":", 1) for s in raw if isinstance(s, str) and ":" in s]
    out = []
    for name, value in pairs:
        h = _header(name, value)
        if h is not None:
            out.append(h)
    return out


def _content_type(hdrs: list[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in hdrs:
        if name.lower() == b"content-type":
            return value
    return None


def from_result(result: Any) -> Reply:
    """A handler's non-null result as an ``ApiResponse``."""
    obj = result if isinstance(result, dict) else {}
    hdrs = headers_of(obj.get("headers"))
    body = obj.get("body", {}) if isinstance(result, dict) else result
    ct = _content_type(hdrs)
    if ct is not None and isinstance(body, str):
        data = body.encode()
    elif ct is not None and body is None:
        data = b""
    elif ct is not None and b"application/json" not in ct.lower():
        data = orjson.dumps(body)
    else:
        data = orjson.dumps(body)
        if ct is None:
            hdrs.append(JSON_CT)
    return Reply(_status(obj.get("status_code")), hdrs, data)


def from_middleware(response: Any) -> Reply:
    """A middleware's ``respond``: status default 200, body default null, always JSON,
    headers only as an object (§2.6)."""
    obj = response if isinstance(response, dict) else {}
    hdrs = headers_of(obj.get("headers")) if isinstance(obj.get("headers"), dict) else []
    if _content_type(hdrs) is None:
        hdrs.append(JSON_CT)
    return Reply(_status(obj.get("status_code")), hdrs, orjson.dumps(obj.get("body")))


def error_id() -> str:
    return format(time.time_ns() & ((1 << 48) - 1), "x")


def error(status: int, code: str, message: str, *, with_id: bool = False,
          **extra: Any) -> Reply:
    """An engine envelope ``{"error": {"code", "message", "error_id"?}, ...}``."""
    err: dict[str, Any] = {"code": code, "message": message}
    if with_id:
        err["error_id"] = error_id()
    return Reply(status, [JSON_CT], orjson.dumps({"error": err, **extra}))


NOT_FOUND = ("NOT_FOUND", "Not Found")
CONDITION_NOT_MET = ("CONDITION_NOT_MET", "Request condition not met")
MIDDLEWARE_TIMEOUT = ("MIDDLEWARE_TIMEOUT", "Middleware timeout")
INTERNAL_ERROR = ("INTERNAL_ERROR", "internal server error")


def not_found() -> Reply:
    return error(404, *NOT_FOUND)


def method_not_allowed(allowed: list[str]) -> Reply:
    """405 with an empty body and the ``Allow`` header (axum's answer)."""
    return Reply(405, [(b"allow", ", ".join(allowed).encode())], b"")


def condition_not_met() -> Reply:
    return error(422, *CONDITION_NOT_MET, skipped=True)


def timeout() -> Reply:
    """The whole request exceeded ``default_timeout``: 504 with an empty body (§2.7)."""
    return Reply(504, [], b"")
