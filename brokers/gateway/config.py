"""The ``iii-worker-manager`` config block (workers-a §1.6), plus ``processes``."""
from __future__ import annotations

from typing import Any

from brokers.gateway import rbac
from brokers.gateway.conns import SEND_BUDGET
from brokers.kit.schema import Field, port, positive, validate

FIELDS = {
    "port": Field(int, 49134, check=port),
    "host": Field(str, "0.0.0.0"),
    "processes": Field(int, 1, check=positive),
    "handshake_timeout_ms": Field(int, 10000, check=positive),
    "max_message_bytes": Field(int, 64 * 1024 * 1024, check=positive),
    # Issue 11: what one worker can make the gateway hold, and how a dead peer is found.
    # Calls to a worker with more than this waiting to be sent to it are refused; a worker
    # with twice this waiting is not read until it drains (it does not read its answers).
    "send_budget_bytes": Field(int, SEND_BUDGET, check=positive),
    # A worker whose send budget stays full this long is closed (1008).
    "send_stall_close_ms": Field(int, 30000, check=positive),
    # What a worker sends before its namespace is fixed (§4.4) and the gateway holds.
    "max_held_bytes": Field(int, 64 * 1024 * 1024, check=positive),
    # WebSocket pings from the engine (§1.4 allows them; the SDKs answer): a peer that does
    # not pong within the timeout is closed; then the close handshake waits close_timeout.
    "ping_interval_ms": Field(int, 20000, check=positive),
    "ping_timeout_ms": Field(int, 20000, check=positive),
    "close_timeout_ms": Field(int, 10000, check=positive),
    # RBAC (protocol.md Appendix C, brokers/gateway/rbac.py): on a listener with either,
    # every connection has a session.
    "middleware_function_id": Field(str, None),
    "rbac": Field(dict, None),
}


def parse(raw: Any, path: str) -> dict[str, Any]:
    """Validate the gateway block; ``processes`` gateway processes share ``port``."""
    cfg = validate(raw, FIELDS, path)
    cfg["rbac"] = rbac.parse_config(cfg["rbac"], f"{path}.rbac")
    return cfg
