"""The ``iii-worker-manager`` config block (workers-a §1.6), plus ``processes``."""
from __future__ import annotations

from typing import Any

from brokers.kit.schema import Field, port, positive, validate

FIELDS = {
    "port": Field(int, 49134, check=port),
    "host": Field(str, "0.0.0.0"),
    "processes": Field(int, 1, check=positive),
    "handshake_timeout_ms": Field(int, 10000, check=positive),
    "max_message_bytes": Field(int, 64 * 1024 * 1024, check=positive),
    # Accepted for config compatibility with iii; RBAC is a later issue and is not enforced.
    "middleware_function_id": Field(str, None),
    "rbac": Field(dict, None),
}


def parse(raw: Any, path: str) -> dict[str, Any]:
    """Validate the gateway block; ``processes`` gateway processes share ``port``."""
    return validate(raw, FIELDS, path)
