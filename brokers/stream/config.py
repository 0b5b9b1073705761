"""The ``iii-stream`` config block (workers-a §1.6), in iii's shape, plus ours.

    port: 3112                       host: 0.0.0.0
    auth_function: <function id>     (called on each subscriber upgrade, §3.6)
    adapter: {name: kv, config: {store_method, file_path, save_interval_ms, channel_size}}
    adapter: {name: redis, config: {redis_url}}     (items in the shared Redis, issue 19)

As for ``iii-state`` (whose store this is): with no ``store_method`` the store is LMDB under
``<data_dir>/stream`` (iii defaults to in-memory), every acknowledged write is on disk, so
``save_interval_ms`` paces nothing; ``store_method: in_memory`` keeps nothing. iii's
``channel_size`` (1..1048576) bounded a broadcast channel shared by every subscriber, past
which slow ones missed events; here it is accepted and unused: each connection has its own
bound instead.

Ours: ``max_send_queue_bytes`` (default 4 MiB): bytes of pushes waiting to be sent to one
subscriber; past it that subscriber alone is closed with 1008 "subscriber too slow" and
nobody misses an event. ``close_timeout_ms`` (default 10000): how long a closed
subscriber has to read what was queued before it and the close frame, then it is cut.
"""
from __future__ import annotations

from typing import Any

from brokers.kit import redisconn
from brokers.kit.schema import Field, port, positive, validate
from brokers.state import config as state_config
from brokers.state.config import kv_adapter, kv_store

DEFAULT_DIR = "stream"


def _channel_size(value: Any) -> str | None:
    return None if 1 <= value <= 1_048_576 else "must be 1..1048576"


FIELDS = {
    "port": Field(int, 3112, check=port),
    "host": Field(str, "0.0.0.0"),
    "auth_function": Field(str, None),
    "adapter": Field(dict, None, parse=kv_adapter({"channel_size": Field(int, None, check=_channel_size)})),
    "max_send_queue_bytes": Field(int, 4 * 1024 * 1024, check=positive),
    "close_timeout_ms": Field(int, 10_000, check=positive),
}


def _redis(raw: Any, path: str) -> dict[str, Any]:
    block = validate(raw, {"name": Field(str), "config": Field(dict, None)}, path)
    return redisconn.redis_adapter(block["config"], f"{path}.config")


def parse(raw: Any, path: str) -> dict[str, Any]:
    """Validate the block; ``store`` is ``lmdb``, ``memory`` or ``redis``; ``path`` the LMDB
    directory (``file_path`` made absolute) or None for the default under the data dir (and
    for the other stores); ``redis_url`` for the redis adapter."""
    if isinstance(raw, dict) and redisconn.is_redis(raw.get("adapter")):
        cfg = validate(raw, {**FIELDS, "adapter": Field(dict, None, parse=_redis)}, path)
        adapter = cfg.pop("adapter")
        return {**cfg, "store": "redis", "path": None, "redis_url": adapter["redis_url"]}
    return kv_store(validate(raw, FIELDS, path))


def store_path(cfg: dict[str, Any], data_dir: str) -> str | None:
    """The LMDB directory for ``cfg``, or None for the in-memory store."""
    return state_config.store_path(cfg, data_dir, DEFAULT_DIR)


def stores(cfg: dict[str, Any], data_dir: str) -> dict[str, str]:
    """What ``status`` shows: the stream store's place (``in memory`` for in_memory)."""
    if cfg["store"] == "redis":
        return {"stream": "redis"}
    return {"stream": store_path(cfg, data_dir) or "in memory"}
