"""The ``iii-cron`` config block (workers-a §1.6), in iii's shape.

    adapter:
      name: kv
      config: {lock_ttl_ms: 30000, lock_index: cron_locks,
               store_method: file_based | in_memory, file_path: <dir>, save_interval_ms: <ms>}

    adapter:
      name: redis
      config: {redis_url: "redis://host:6379", lock_ttl_ms: 30000}

``redis`` (issue 19, ``redis_lock.py``): every engine host sharing the Redis fires each tick
of a trigger id once between them, by a lock per job and tick; ``lock_ttl_ms`` (ours, default
30000, at least ``redis_lock.MIN_TTL_MS``) is how long a tick's lock outlives the tick. Any
other adapter name is refused, never replaced by ``kv``.

Locks are in memory, as in iii. The backing store of the reference's kv adapter is our
fired mark (``store.py``): with no ``store_method`` it is on disk (iii defaults to memory;
our engine promises that no tick fires twice across a restart), ``<data_dir>/cron`` unless
``file_path`` names a directory (relative to the directory the engine was started in, as
in iii); ``store_method: in_memory`` keeps nothing. ``save_interval_ms`` is validated but
paces nothing: the mark is written before the ticks it covers fire.
"""
from __future__ import annotations

import os
from typing import Any

from brokers.cron.locks import DEFAULT_INDEX, DEFAULT_TTL_MS
from brokers.kit import redisconn
from brokers.kit.config import resolve_path
from brokers.kit.schema import ConfigError, Field, positive, validate

DEFAULT_DIR = "cron"


def _store_method(value: Any) -> str | None:
    return None if value in ("in_memory", "file_based") else "must be in_memory or file_based"


def _index(value: Any) -> str | None:
    return None if value.strip() else "must not be empty"


KV_FIELDS = {
    "lock_ttl_ms": Field(int, DEFAULT_TTL_MS, check=positive),
    "lock_index": Field(str, DEFAULT_INDEX, check=_index),
    "store_method": Field(str, None, check=_store_method),
    "file_path": Field(str, None),
    "save_interval_ms": Field(int, None, check=positive),
}


def _adapter(raw: Any, path: str) -> dict[str, Any]:
    block = validate(raw, {"name": Field(str), "config": Field(dict, None)}, path)
    if block["name"] == "redis":
        return redisconn.redis_adapter(block["config"], f"{path}.config",
                                       {"lock_ttl_ms": Field(int, DEFAULT_TTL_MS, check=positive)})
    if block["name"] != "kv":
        raise ConfigError(f"{path}.name: adapter {block['name']!r} is not supported (only kv and redis)")
    return {"name": "kv", **validate(block["config"], KV_FIELDS, f"{path}.config")}


FIELDS = {"adapter": Field(dict, None, parse=_adapter)}


def parse(raw: Any, path: str) -> dict[str, Any]:
    """Validate the block: ``lock_ttl_ms``, ``lock_index``, and ``store`` (``file`` or
    ``memory``) with ``path`` (``file_path`` made absolute, or None for the default); with
    the redis adapter also ``locks: redis`` and ``redis_url`` (the fired mark stays a file
    of this host's)."""
    kv = validate(raw, FIELDS, path)["adapter"] or {"name": "kv", **validate(None, KV_FIELDS, path)}
    if kv["name"] == "redis":
        return {"lock_ttl_ms": kv["lock_ttl_ms"], "lock_index": DEFAULT_INDEX, "store": "file",
                "path": None, "locks": "redis", "redis_url": kv["redis_url"]}
    memory = kv["store_method"] == "in_memory"
    return {"lock_ttl_ms": kv["lock_ttl_ms"], "lock_index": kv["lock_index"],
            "store": "memory" if memory else "file",
            "path": None if memory or not kv["file_path"] else resolve_path(kv["file_path"])}


def store_dir(cfg: dict[str, Any], data_dir: str) -> str | None:
    """The fired mark's directory, or None when nothing is stored."""
    if cfg["store"] != "file":
        return None
    return cfg["path"] or os.path.join(data_dir, DEFAULT_DIR)


def stores(cfg: dict[str, Any], data_dir: str) -> dict[str, str]:
    """What ``status`` shows."""
    return {"cron": store_dir(cfg, data_dir) or "in memory"}
