"""HTTP-invoked functions, the pure part (workers-b §3.1-§3.3): no sockets, no clock, no env
of its own (the environment and the time come in as arguments).

    spec   = parse_invocation(raw)             the ``invocation`` block of a registration
    auth   = resolve_auth(spec.auth, environ)  secrets by variable name, once, at registration
    req    = build_request(fid, spec, auth, data, ts, invocation_id)
    result = map_response(status, body)        or raises the coded EngineError

Secrets: ``Auth`` holds the resolved values and its repr hides them; nothing here puts a
secret in an error message (a missing one is named by its variable name only).
Invariant: the header order is the reference's: content-type, x-iii-function-path,
x-iii-invocation-id, x-iii-timestamp, the user headers, then the auth header; names go
lower-case on the wire as the reference's HTTP stack sends them.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

import orjson

from brokers.kit import errors
from brokers.kit.errors import EngineError

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
DEFAULT_TIMEOUT_MS = 30_000
CLIENT_TIMEOUT_MS = 60_000
"""The client-wide hard limit: a longer ``timeout_ms`` is cut to it, as in the reference."""

# The reason phrases of Rust's http crate (the reference's "HTTP <code> <reason>"), where
# they differ from or are missing in Python's http.HTTPStatus.
_REASONS = {
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
    407: "Proxy Authentication Required", 408: "Request Timeout", 409: "Conflict", 410: "Gone",
    411: "Length Required", 412: "Precondition Failed", 413: "Payload Too Large",
    414: "URI Too Long", 415: "Unsupported Media Type", 416: "Range Not Satisfiable",
    417: "Expectation Failed", 418: "I'm a teapot", 421: "Misdirected Request",
    422: "Unprocessable Entity", 423: "Locked", 424: "Failed Dependency",
    426: "Upgrade Required", 428: "Precondition Required", 429: "Too Many Requests",
    431: "Request Header Fields Too Large", 451: "Unavailable For Legal Reasons",
    500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout", 505: "HTTP Version Not Supported",
    506: "Variant Also Negotiates", 507: "Insufficient Storage", 508: "Loop Detected",
    510: "Not Extended", 511: "Network Authentication Required",
}


@dataclass(frozen=True)
class AuthRef:
    """``invocation.auth`` as registered: a type and the names of environment variables."""

    type: str
    key: str
    """The variable holding the secret (``secret_key`` / ``token_key`` / ``value_key``)."""
    header: str | None = None
    """``api_key`` only: the header to send it in."""


@dataclass(frozen=True)
class Invocation:
    """An HTTP-invoked function's endpoint (protocol.md §7)."""

    url: str
    method: str = "POST"
    timeout_ms: int | None = None
    headers: tuple[tuple[str, str], ...] = ()
    auth: AuthRef | None = None

    @property
    def timeout_s(self) -> float:
        return min(self.timeout_ms if self.timeout_ms is not None else DEFAULT_TIMEOUT_MS,
                   CLIENT_TIMEOUT_MS) / 1000


@dataclass(frozen=True)
class Auth:
    """Resolved auth: the header it adds (or the HMAC secret). The repr shows no secret."""

    type: str
    header: str = ""
    secret: str = field(default="", repr=False)


def _bad(message: str) -> EngineError:
    return EngineError(errors.DESERIALIZATION_ERROR, f"invalid invocation: {message}")


_AUTH_FIELDS = {"hmac": ("secret_key",), "bearer": ("token_key",), "api_key": ("header", "value_key")}


def _auth_ref(raw: Any) -> AuthRef | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise _bad("auth must be an object")
    kind = raw.get("type")
    names = _AUTH_FIELDS.get(kind) if isinstance(kind, str) else None
    if names is None:
        raise _bad(f"unknown auth type {kind!r} (expected hmac, bearer or api_key)")
    for name in names:
        if not isinstance(raw.get(name), str):
            raise _bad(f"auth.{name} is required for auth type {kind} (a string)")
    if kind == "api_key":
        return AuthRef(kind, raw["value_key"], raw["header"])
    return AuthRef(kind, raw[names[0]])


def parse_invocation(raw: Any) -> Invocation:
    """``registerfunction.invocation``; raises ``deserialization_error`` saying which field."""
    if not isinstance(raw, dict):
        raise _bad("must be an object")
    url, method = raw.get("url"), raw.get("method")
    if not isinstance(url, str):
        raise _bad("url is required (a string)")
    if method is None:
        method = "POST"
    if method not in METHODS:
        raise _bad(f"unknown method {method!r} (expected one of {', '.join(METHODS)})")
    timeout = raw.get("timeout_ms")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 0):
        raise _bad("timeout_ms must be a non-negative integer")
    headers = raw.get("headers") or {}
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise _bad("headers must be an object of strings")
    return Invocation(url, method, timeout, tuple(headers.items()), _auth_ref(raw.get("auth")))


_MISSING = {"hmac": (errors.SECRET_NOT_FOUND, "Secret not found"),
            "bearer": (errors.TOKEN_NOT_FOUND, "Token not found"),
            "api_key": (errors.API_KEY_NOT_FOUND, "API key not found")}


def resolve_auth(ref: AuthRef | None, environ: Mapping[str, str]) -> Auth | None:
    """The secret of ``ref`` from ``environ`` (the engine's environment), or the
    reference's ``secret_not_found`` / ``token_not_found`` / ``api_key_not_found``."""
    if ref is None:
        return None
    value = environ.get(ref.key)
    if value is None:
        code, text = _MISSING[ref.type]
        raise EngineError(code, f"{text}: {ref.key}")
    if ref.type == "bearer":
        return Auth("bearer", "authorization", f"Bearer {value}")
    if ref.type == "api_key":
        return Auth("api_key", ref.header.lower(), value)
    return Auth("hmac", "x-iii-signature", value)


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """``x-iii-signature``: ``sha256=`` + hex HMAC-SHA256 of ``"<ts>:<base64(body)>"``."""
    msg = f"{timestamp}:{base64.b64encode(body).decode()}".encode()
    return "sha256=" + hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Request:
    method: str
    headers: list[tuple[str, str]]
    body: bytes


def build_request(function_id: str, spec: Invocation, auth: Auth | None, data: Any,
                  timestamp: int, invocation_id: str) -> Request:
    """The outgoing request of §3.2: the call's data as compact JSON (also for GET)."""
    try:
        body = orjson.dumps(data)
    except TypeError as exc:
        raise EngineError(errors.SERIALIZATION_ERROR, str(exc)) from None
    headers = [("content-type", "application/json"), ("x-iii-function-path", function_id),
               ("x-iii-invocation-id", invocation_id), ("x-iii-timestamp", str(timestamp))]
    headers.extend((k.lower(), v) for k, v in spec.headers)
    if auth is not None:
        value = sign(body, auth.secret, timestamp) if auth.type == "hmac" else auth.secret
        headers.append((auth.header, value))
    return Request(spec.method, headers, body)


def status_text(status: int) -> str:
    """``HTTP 400 Bad Request``, as the reference words a failed status."""
    return f"HTTP {status} {_REASONS.get(status, '<unknown status code>')}"


def _json(body: bytes) -> Any:
    return json.loads(body)


def map_response(status: int, body: bytes) -> Any:
    """The function's result for an upstream answer (§3.3), or raises its EngineError."""
    if 200 <= status < 300:
        if not body:
            return None
        try:
            return _json(body)
        except ValueError as exc:
            raise EngineError(errors.INVALID_RESPONSE, _serde_words(exc)) from None
    if status < 400:
        try:
            return _json(body) if body else None
        except ValueError:
            return None
    try:
        parsed = _json(body) if body else None
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and "error" in parsed:  # even null: the reference's Some(..)
        err = parsed["error"]
        code = err.get("code") if isinstance(err, dict) else None
        message = err.get("message") if isinstance(err, dict) else None
        return _raise(code if isinstance(code, str) else errors.HTTP_ERROR,
                      message if isinstance(message, str) else "HTTP request failed")
    return _raise(errors.HTTP_ERROR, status_text(status))


def _raise(code: str, message: str) -> Any:
    raise EngineError(code, message)


def _serde_words(exc: ValueError) -> str:
    """A JSON decode error in serde's words (``expected value at line 1 column 1``)."""
    if isinstance(exc, json.JSONDecodeError):
        what = "expected value" if exc.msg.startswith("Expecting value") else exc.msg[:1].lower() + exc.msg[1:]
        return f"{what} at line {exc.lineno} column {exc.colno}"
    return str(exc)
