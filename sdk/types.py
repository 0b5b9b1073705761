"""Wire types of the worker SDK: plain dataclasses with ``to_wire()`` (public as ``iii.iii_types``).

Owns the JSON shapes of protocol.md §2.1 (TriggerAction) and §7 (HttpInvocationRef and its
auth variants). Invariants: no engine imports, no third-party imports (importing ``iii``
must stay cheap); ``to_wire()`` omits unset optional fields exactly as the official Python
SDK 0.25 does (``exclude_none``), except ``method`` which the SDKs always send.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Union

HttpMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
HTTP_METHODS: frozenset[str] = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class HttpAuthBearer:
    """``Authorization: Bearer <env[token_key]>``; the key names an engine env var, not a secret."""

    token_key: str
    type: Literal["bearer"] = "bearer"

    def to_wire(self) -> dict[str, Any]:
        return {"type": "bearer", "token_key": self.token_key}


@dataclass(frozen=True)
class HttpAuthHmac:
    """``x-iii-Signature: sha256=HMAC(env[secret_key], "<ts>:<base64 body>")``."""

    secret_key: str
    type: Literal["hmac"] = "hmac"

    def to_wire(self) -> dict[str, Any]:
        return {"type": "hmac", "secret_key": self.secret_key}


@dataclass(frozen=True)
class HttpAuthApiKey:
    """``<header>: <env[value_key]>``."""

    header: str
    value_key: str
    type: Literal["api_key"] = "api_key"

    def to_wire(self) -> dict[str, Any]:
        return {"type": "api_key", "header": self.header, "value_key": self.value_key}


HttpAuthConfig = Union[HttpAuthBearer, HttpAuthHmac, HttpAuthApiKey]


def http_auth_from_wire(raw: Any) -> HttpAuthConfig:
    """Parse a wire ``auth`` object; raises ValueError naming what is wrong."""
    if not isinstance(raw, dict):
        raise ValueError("auth must be an object")
    kind = raw.get("type")
    try:
        if kind == "bearer":
            return HttpAuthBearer(token_key=str(raw["token_key"]))
        if kind == "hmac":
            return HttpAuthHmac(secret_key=str(raw["secret_key"]))
        if kind == "api_key":
            return HttpAuthApiKey(header=str(raw["header"]), value_key=str(raw["value_key"]))
    except KeyError as missing:
        raise ValueError(f"auth.{missing.args[0]} is required for auth type {kind!r}") from None
    raise ValueError(f"auth.type must be bearer, hmac or api_key, got {kind!r}")


@dataclass(frozen=True)
class HttpInvocationConfig:
    """An HTTP-invoked function's endpoint (protocol.md §7, ``registerfunction.invocation``)."""

    url: str
    method: HttpMethod = "POST"
    timeout_ms: int | None = None
    headers: dict[str, str] | None = None
    auth: HttpAuthConfig | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not self.url:
            raise ValueError("HttpInvocationConfig.url is required")
        if self.method not in HTTP_METHODS:
            raise ValueError(f"HttpInvocationConfig.method must be one of {sorted(HTTP_METHODS)}")

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"url": self.url, "method": self.method}
        if self.timeout_ms is not None:
            out["timeout_ms"] = self.timeout_ms
        if self.headers is not None:
            out["headers"] = dict(self.headers)
        if self.auth is not None:
            out["auth"] = self.auth.to_wire()
        return out

    @classmethod
    def from_wire(cls, raw: Any) -> HttpInvocationConfig:
        """The gateway's parser for ``registerfunction.invocation``; raises ValueError."""
        if not isinstance(raw, dict):
            raise ValueError("invocation must be an object")
        headers = raw.get("headers")
        if headers is not None and not isinstance(headers, dict):
            raise ValueError("invocation.headers must be an object")
        auth = raw.get("auth")
        return cls(
            url=raw.get("url", ""),
            method=raw.get("method") or "POST",
            timeout_ms=raw.get("timeout_ms"),
            headers={str(k): str(v) for k, v in headers.items()} if headers else headers,
            auth=http_auth_from_wire(auth) if auth is not None else None,
        )


@dataclass(frozen=True)
class TriggerActionVoid:
    """Fire-and-forget: no ``invocation_id`` on the wire, no reply."""

    type: Literal["void"] = "void"

    def to_wire(self) -> dict[str, Any]:
        return {"type": "void"}


@dataclass(frozen=True)
class TriggerActionEnqueue:
    """Hand the call to the queue provider; the reply is ``{"messageReceiptId": ...}``."""

    queue: str
    type: Literal["enqueue"] = "enqueue"

    def to_wire(self) -> dict[str, Any]:
        return {"type": "enqueue", "queue": self.queue}


TriggerActionType = Union[TriggerActionVoid, TriggerActionEnqueue]


class TriggerAction:
    """Factories as in the docs: ``TriggerAction.Void()``, ``TriggerAction.Enqueue(queue=...)``."""

    @staticmethod
    def Void() -> TriggerActionVoid:  # noqa: N802 - the documented spelling
        return TriggerActionVoid()

    @staticmethod
    def Enqueue(*, queue: str) -> TriggerActionEnqueue:  # noqa: N802
        return TriggerActionEnqueue(queue=queue)


def action_to_wire(action: Any) -> dict[str, Any] | None:
    """Normalise a user-given action (dataclass, dict or None) to its wire object."""
    if action is None:
        return None
    if isinstance(action, (TriggerActionVoid, TriggerActionEnqueue)):
        return action.to_wire()
    if isinstance(action, dict):
        kind = action.get("type")
        if kind == "void":
            return {"type": "void"}
        if kind == "enqueue":
            queue = action.get("queue")
            if not isinstance(queue, str) or not queue:
                raise ValueError("enqueue action needs a queue name")
            return {"type": "enqueue", "queue": queue}
    raise ValueError(f"unknown trigger action {action!r}")


@dataclass
class TriggerConfig:
    """One binding as delivered to a trigger-type provider (protocol.md §3.8)."""

    id: str
    function_id: str
    config: Any = None
    metadata: Any = None
    namespace: str | None = None
    trigger_type: str | None = field(default=None)
