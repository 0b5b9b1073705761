"""The ``iii-queue`` config block (workers-b §1.2), validated strictly.

Invariants of the parsed value: ``queue_configs`` always holds a ``default`` queue (an
explicit ``default`` entry is kept as written); every fifo queue names its
``message_group_field``; ``concurrency`` is at least 1.

Storage: the reference's ``builtin`` adapter (LMDB here) or ``redis`` (``{name: redis, config:
{redis_url}}``: the same semantics on a Redis shared by several engine hosts, see
redis_service.py; optional ``lease_ms``/``heartbeat_ms``). The builtin adapter's
``store_method`` defaults here to ``file_based`` (LMDB in ``<data_dir>/queue``, or in
``file_path``: a relative one is relative to the working directory the engine was started
in, as in iii and for the state broker) instead of the reference's ``in_memory``, because this broker
promises that an acknowledged enqueue survives a crash; ``in_memory`` keeps every job in
memory only. ``bridge`` and ``rabbitmq`` are rejected with a clear message rather than
silently replaced.
"""
from __future__ import annotations

import os
from typing import Any

from brokers.kit.config import resolve_path
from brokers.kit.redisconn import redis_adapter
from brokers.kit.schema import ConfigError, Field, validate

QUEUE_FIELDS = {
    # Total delivery attempts before the DLQ (0 behaves like 1): see core.py on counting.
    "max_retries": Field(int, 3, check=lambda v: None if v >= 0 else "must be >= 0"),
    "concurrency": Field(int, 10),
    "type": Field(str, "standard"),
    "message_group_field": Field(str, None),
    "backoff_ms": Field(int, 1000, check=lambda v: None if v >= 0 else "must be >= 0"),
    "poll_interval_ms": Field(int, 100, check=lambda v: None if v >= 0 else "must be >= 0"),
    # RabbitMQ-only keys in the reference: accepted for config compatibility, not used.
    "max_priority": Field(int, None, check=lambda v: None if 1 <= v <= 255 else "must be 1..255"),
    "priority_field": Field(str, None),
}

BUILTIN_FIELDS = {
    "store_method": Field(str, "file_based",
                          check=lambda v: None if v in ("file_based", "in_memory")
                          else "must be 'file_based' or 'in_memory'"),
    "file_path": Field(str, None),
    # Kept for compatibility: LMDB commits every batch, there is no periodic save.
    "save_interval_ms": Field(int, 5000,
                              check=lambda v: None if 100 <= v <= 3_600_000 else "must be 100..3600000"),
}


def _parse_queue(name: str, raw: Any, path: str) -> dict[str, Any]:
    cfg = validate(raw, QUEUE_FIELDS, path)
    if cfg["concurrency"] < 1:
        raise ConfigError(f"{path}.concurrency: Queue '{name}' has 'concurrency' "
                          f"{cfg['concurrency']}; it must be at least 1")
    if cfg["type"] not in ("standard", "fifo"):
        raise ConfigError(f"{path}.type: Queue '{name}' has invalid type '{cfg['type']}'. "
                          "Must be 'standard' or 'fifo'")
    if cfg["type"] == "fifo" and not cfg["message_group_field"]:
        raise ConfigError(f"{path}.message_group_field: Queue '{name}' is of type 'fifo' "
                          "but 'message_group_field' is not set")
    return cfg


def _parse_queues(raw: Any, path: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, qraw in raw.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{path}: queue names must be non-empty strings, got {name!r}")
        out[name] = _parse_queue(name, qraw, f"{path}.{name}")
    if "default" not in out:
        out["default"] = _parse_queue("default", {}, f"{path}.default")
    return out


REDIS_FIELDS = {
    # How long a job stays leased to a queue process that stopped heartbeating.
    "lease_ms": Field(int, 10_000, check=lambda v: None if v >= 500 else "must be >= 500"),
    "heartbeat_ms": Field(int, 1000, check=lambda v: None if v >= 50 else "must be >= 50"),
}


def _parse_adapter(raw: Any, path: str) -> dict[str, Any]:
    adapter = validate(raw, {"name": Field(str, "builtin"), "config": Field(dict, None)}, path)
    if adapter["name"] == "redis":
        adapter["config"] = redis_adapter(adapter["config"] or {}, f"{path}.config", REDIS_FIELDS)
        if adapter["config"]["heartbeat_ms"] * 2 > adapter["config"]["lease_ms"]:
            raise ConfigError(f"{path}.config.lease_ms: must be at least twice heartbeat_ms")
        return adapter
    if adapter["name"] != "builtin":
        raise ConfigError(f"{path}.name: adapter '{adapter['name']}' is not supported by this "
                          "engine (only 'builtin', stored in LMDB, and 'redis')")
    adapter["config"] = validate(adapter["config"], BUILTIN_FIELDS, f"{path}.config")
    return adapter


DEFAULT_DIR = "queue"


def store_path(cfg: dict[str, Any], data_dir: str) -> str | None:
    """The LMDB directory of a parsed block, or None for ``in_memory``.

    A relative ``file_path`` is relative to the working directory; without one the store
    is ``<data_dir>/queue``.
    """
    adapter = cfg["adapter"]["config"]
    if cfg["adapter"]["name"] == "redis":
        return None
    if adapter["store_method"] == "in_memory":
        return None
    if adapter["file_path"]:
        return resolve_path(adapter["file_path"])
    return os.path.join(data_dir, DEFAULT_DIR)


def stores(cfg: dict[str, Any], data_dir: str) -> dict[str, str]:
    """What ``status`` shows: the queue store's place (``in memory`` for in_memory)."""
    if cfg["adapter"]["name"] == "redis":
        from urllib.parse import urlsplit
        url = urlsplit(cfg["adapter"]["config"]["redis_url"])
        where = url._replace(netloc=url.netloc.rpartition("@")[2]).geturl()  # no password
        return {"queue": f"redis {where}"}
    return {"queue": store_path(cfg, data_dir) or "in memory"}


FIELDS = {
    "adapter": Field(dict, lambda: {"name": "builtin"}, parse=_parse_adapter),
    "queue_configs": Field(dict, dict, parse=_parse_queues),
}


def parse(raw: Any, path: str) -> dict[str, Any]:
    """Validate the ``iii-queue`` block; defaults filled in, ``default`` queue added."""
    cfg = validate(raw, FIELDS, path)
    # Defaults skip ``parse``: run the nested parsers on them too.
    if "default" not in cfg["queue_configs"]:
        cfg["queue_configs"] = _parse_queues(cfg["queue_configs"], f"{path}.queue_configs")
    if "config" not in cfg["adapter"]:
        cfg["adapter"] = _parse_adapter(cfg["adapter"], f"{path}.adapter")
    return cfg
