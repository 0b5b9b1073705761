"""The auth call on each upgrade of a listener with ``rbac`` (protocol.md Appendix C, §4.1).

The gateway calls ``rbac.auth_function_id`` through the engine with the request's headers
(lower-case names), query parameters (every value) and peer address; the answer is parsed
by ``rbac.parse_auth``. An error, a timeout, no result or a malformed one ⇒ an ``error``
frame ``AUTH_ERROR`` and the socket closed; nothing of the connection exists yet. A
session is made per connection and never reused.
"""
from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qs, urlsplit

from brokers.gateway import rbac
from brokers.kit import wire
from brokers.kit.errors import EngineError

log = logging.getLogger(__name__)

AUTH_ERROR = "AUTH_ERROR"


def auth_input(path: str, headers: Any, ip: str | None) -> dict[str, Any]:
    """The auth function's input: ``{headers, query_params, ip_address}``."""
    heads: dict[str, str] = {}
    for name, value in headers.raw_items():
        key = name.lower()
        heads[key] = f"{heads[key]}, {value}" if key in heads else value
    query = parse_qs(urlsplit(path).query, keep_blank_values=True)
    return {"headers": heads, "query_params": query, "ip_address": ip or ""}


async def authenticate(core: Any, sock: Any) -> rbac.Session | None:
    """The session of a new connection, or None once it was refused and closed."""
    rules = core.rules
    if rules is None or not rules.auth:
        return rbac.open_session()
    peer = sock.remote_address[0] if sock.remote_address else None
    try:
        result = await core.engine_call_for(rules.auth, auth_input(sock.request.path, sock.request.headers, peer),
                                            core.hook_timeout_s)
        return rbac.parse_auth(result)
    except EngineError as exc:
        message = exc.message
    except ValueError as exc:
        message = str(exc)
    log.info("refusing a worker from %s: %s: %s", peer, AUTH_ERROR, message[:200])
    try:
        await sock.send(wire.dumps({"type": "error", "error": {"code": AUTH_ERROR, "message": message}}).decode())
        await sock.close()
    except Exception:  # noqa: BLE001 - it may be gone already
        pass
    return None
