"""The ``iii-state`` config block (workers-a §1.6), in iii's shape.

    adapter: {name: kv, config: {store_method, file_path, save_interval_ms}}
    triggers_enabled: true
    max_value_bytes: <int >= 1>      (unset = no limit)
    save_interval_ms: <100..3600000> (accepted; see below)

Our engine's kv adapter is LMDB. Deliberate differences from the Rust engine, both toward
durability: with no ``store_method`` the store is LMDB (iii defaults to in-memory), and
every acknowledged write is already on disk, so ``save_interval_ms`` is validated but has
nothing to pace. ``store_method: in_memory`` given explicitly keeps iii's meaning (nothing
persisted). ``file_path`` is a directory; a relative one is relative to the working directory
the engine was started in (as in iii); without ``file_path`` the store is ``<data_dir>/state``.
``redis`` (``config: {redis_url, events_maxlen}``) keeps state in Redis, shared by every
engine host on it (redis_store.py); ``events_maxlen`` (ours, default 100000) caps the
stream of change events that fires state triggers on every host. ``bridge`` is not
implemented and is rejected by name.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Mapping

from brokers.kit.config import resolve_path
from brokers.kit.schema import ConfigError, Field, positive, validate

DEFAULT_DIR = "state"


def _interval(value: Any) -> str | None:
    return None if 100 <= value <= 3_600_000 else "must be 100..3600000"


def _store_method(value: Any) -> str | None:
    return None if value in ("in_memory", "file_based") else "must be in_memory or file_based"


KV_FIELDS = {
    "store_method": Field(str, None, check=_store_method),
    "file_path": Field(str, None),
    # iii floors a smaller value to 100 instead of rejecting it.
    "save_interval_ms": Field(int, None),
}


def kv_adapter(extra: Mapping[str, Field] | None = None) -> Callable[[Any, str], dict[str, Any]]:
    """The parser of a ``kv`` adapter block (shared with iii-stream, whose store this is),
    with ``extra`` config keys beside ``KV_FIELDS``."""
    fields = {**KV_FIELDS, **(extra or {})}

    def parse_adapter(raw: Any, path: str) -> dict[str, Any]:
        block = validate(raw, {"name": Field(str), "config": Field(dict, None)}, path)
        if block["name"] != "kv":
            raise ConfigError(f"{path}.name: adapter {block['name']!r} is not supported (only kv)")
        return {"name": "kv", **validate(block["config"], fields, f"{path}.config")}
    return parse_adapter


def kv_store(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` with its adapter block read into ``store`` (``lmdb`` or ``memory``) and ``path``
    (``file_path`` made absolute, or None for the default under the data dir)."""
    adapter = cfg.pop("adapter") or {}
    memory = adapter.get("store_method") == "in_memory"
    cfg["store"] = "memory" if memory else "lmdb"
    cfg["path"] = None if memory or not adapter.get("file_path") else resolve_path(adapter["file_path"])
    return cfg


REDIS_EXTRA = {"events_maxlen": Field(int, 100_000, check=positive)}


def state_adapter(raw: Any, path: str) -> dict[str, Any]:
    """``kv`` (``kv_adapter``) or ``redis`` (``kit.redisconn.redis_adapter``)."""
    from brokers.kit.redisconn import check_adapter_name, redis_adapter
    if check_adapter_name(raw, path, ("kv", "redis")) == "redis":
        block = validate(raw, {"name": Field(str), "config": Field(dict, None)}, path)
        return redis_adapter(block["config"] or {}, f"{path}.config", REDIS_EXTRA)
    return _KV(raw, path)


_KV = kv_adapter()

FIELDS = {
    "adapter": Field(dict, None, parse=state_adapter),
    "triggers_enabled": Field(bool, True),
    "max_value_bytes": Field(int, None, check=positive),
    "save_interval_ms": Field(int, None, check=_interval),
}


def parse(raw: Any, path: str) -> dict[str, Any]:
    """Validate the block; ``store`` is ``lmdb``, ``memory`` or ``redis``, ``path`` the LMDB
    directory: ``file_path`` made absolute, or None for the default under the data dir
    (``store_path``) and for redis (then ``redis_url`` and ``events_maxlen`` are set)."""
    cfg = validate(raw, FIELDS, path)
    adapter = cfg.get("adapter") or {}
    if adapter.get("name") == "redis":
        cfg.pop("adapter")
        cfg.update(store="redis", path=None, redis_url=adapter["redis_url"],
                   events_maxlen=adapter["events_maxlen"])
        return cfg
    return kv_store(cfg)


def store_path(cfg: dict[str, Any], data_dir: str, default_dir: str = DEFAULT_DIR) -> str | None:
    """The LMDB directory for ``cfg`` (``<data_dir>/<default_dir>`` unless ``file_path``),
    or None for the in-memory store."""
    if cfg["store"] != "lmdb":
        return None
    return cfg["path"] or os.path.join(data_dir, default_dir)


def stores(cfg: dict[str, Any], data_dir: str) -> dict[str, str]:
    """What ``status`` shows: the state store's place (``in memory`` for in_memory)."""
    if cfg["store"] == "redis":
        from brokers.state.redis_store import describe
        return {"state": describe(cfg["redis_url"])}
    return {"state": store_path(cfg, data_dir) or "in memory"}


def shares(cfg: dict[str, Any]) -> dict[str, Any]:
    """What the state unit tells every process (``Unit.shares``): where its LMDB store is
    and its value limit, so that a gateway can serve ``state::*`` on it (inplace.py). Never
    a Redis URL (it may hold a password)."""
    return {"store": cfg["store"], "path": cfg.get("path"), "max_value_bytes": cfg.get("max_value_bytes")}
