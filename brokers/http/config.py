"""The ``iii-http`` config block (workers-b §2.1), strictly validated, plus ours.

iii's keys: ``port`` (3111, 0 = any free port), ``host`` (``0.0.0.0`` as the code
default; iii's shipped config uses ``127.0.0.1``), ``default_timeout`` (ms, 30000: the
whole request, and each middleware call), ``concurrency_request_limit`` (1024; 0 is
clamped to 1; excess requests wait), ``cors`` (absent = permissive), ``middleware``
(global ``{function_id, phase="preHandler", priority=0}``, sorted by priority, other
phases skipped). Unknown keys are rejected, inside ``cors`` and ``middleware[]`` too.

Ours: ``processes`` (HTTP processes serving the port, like the gateway's) and
``max_body_bytes`` (a request body over it answers 413; unset = no limit, as iii).
"""
from __future__ import annotations

from typing import Any

from brokers.kit.schema import ConfigError, Field, port, positive, validate

MIDDLEWARE_FIELDS = {
    "function_id": Field(str),
    "phase": Field(str, "preHandler"),
    "priority": Field(int, 0),
}
CORS_FIELDS = {
    "allowed_origins": Field(list, list),
    "allowed_methods": Field(list, list),
}


def _middleware(raw: Any, path: str) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        raise ConfigError(f"{path}: expected list, got {type(raw).__name__}")
    entries = [validate(item, MIDDLEWARE_FIELDS, f"{path}[{i}]") for i, item in enumerate(raw)]
    return sorted((e for e in entries if e["phase"] == "preHandler"), key=lambda e: e["priority"])


def _cors(raw: Any, path: str) -> dict[str, Any]:
    block = validate(raw, CORS_FIELDS, path)
    for key in CORS_FIELDS:
        if not all(isinstance(v, str) for v in block[key]):
            raise ConfigError(f"{path}.{key}: expected a list of strings")
    return block


FIELDS = {
    "port": Field(int, 3111, check=port),
    "host": Field(str, "0.0.0.0"),
    "default_timeout": Field(int, 30000, check=positive),
    "concurrency_request_limit": Field(int, 1024, check=lambda v: None if v >= 0 else "must be >= 0"),
    "cors": Field(dict, None, parse=_cors),
    "middleware": Field(list, list, parse=_middleware),
    "processes": Field(int, 1, check=positive),
    "max_body_bytes": Field(int, None, check=positive),
}


def parse(raw: Any, path: str) -> dict[str, Any]:
    """Validate the block; ``concurrency_request_limit`` 0 becomes 1 (as iii clamps it)."""
    cfg = validate(raw, FIELDS, path)
    cfg["concurrency_request_limit"] = max(1, cfg["concurrency_request_limit"])
    return cfg
