"""Redis for the engine's adapters: the ``redis`` adapter block and one pooled asyncio client.

The reference's adapters are configured as ``adapter: {name: redis, config: {redis_url:
"redis://host:6379"}}`` in the ``iii-state``, ``iii-stream``, ``iii-pubsub``, ``iii-cron`` and
``iii-queue`` blocks; ``redis_adapter`` parses that block (the same shape everywhere, so a
reference config works as written). ``connect`` makes the process's client: redis-py's
asyncio client over a connection pool, replies parsed by hiredis when it is installed (it is a
dependency), every command's errors raised as ``redis.exceptions.RedisError``.

Key layouts are the reference's and live with each adapter (state ``state:<scope>``, stream
``stream:<name>:<group>`` and channel ``stream::events``, pub/sub on the raw topic,
``cron_lock:*``); what several adapters share of the cluster (host ids, heartbeats) is here.

Invariants: no I/O at import; a URL is validated at config time (scheme redis, rediss or
unix), so a typo fails ``check``/``start``, not the first write.
"""
from __future__ import annotations

import asyncio
import os
import socket
from typing import Any
from urllib.parse import urlsplit

from brokers.kit.schema import ConfigError, Field, validate

DEFAULT_URL = "redis://localhost:6379"
SCHEMES = ("redis", "rediss", "unix")


class Backoff:
    """The pause of a loop that talks to Redis between a failure and its next attempt:
    ``first`` seconds, doubled after each failure up to ``cap``, ``first`` again after a
    success. ``delay`` is the next pause (for the log line that announces it)."""

    def __init__(self, first: float = 0.1, cap: float = 5.0) -> None:
        self.first, self.cap = first, cap
        self.delay = first

    def reset(self) -> None:
        self.delay = self.first

    async def pause(self) -> None:
        delay, self.delay = self.delay, min(self.delay * 2, self.cap)
        await asyncio.sleep(delay)


def _url(value: Any) -> str | None:
    scheme = urlsplit(value).scheme
    return None if scheme in SCHEMES else f"must be a redis://, rediss:// or unix:// URL, got {value!r}"


REDIS_FIELDS = {"redis_url": Field(str, DEFAULT_URL, check=_url)}


def redis_adapter(raw: Any, path: str, extra: dict[str, Field] | None = None) -> dict[str, Any]:
    """The ``config`` of a ``{name: redis, config: {...}}`` adapter block, validated:
    ``{"name": "redis", "redis_url": ...}`` plus ``extra`` keys."""
    cfg = validate(raw, {**REDIS_FIELDS, **(extra or {})}, path)
    return {"name": "redis", **cfg}


def is_redis(adapter: Any) -> bool:
    """Whether an adapter block (raw, before validation) names the redis adapter."""
    return isinstance(adapter, dict) and adapter.get("name") == "redis"


def connect(url: str, **kw: Any) -> Any:
    """The process's asyncio Redis client for ``url`` (pooled; hiredis parser when present)."""
    import redis.asyncio as aioredis  # here: processes without a redis adapter never load it
    return aioredis.from_url(url, decode_responses=False, health_check_interval=30, **kw)


def host_id() -> str:
    """This engine host's id in the cluster: ``$III_HOST_ID``, else ``<hostname>-<pid of the
    supervisor or this process>`` (unique per engine on one machine)."""
    return os.environ.get("III_HOST_ID") or f"{socket.gethostname()}-{os.environ.get('III_SUPERVISOR_PID', os.getpid())}"


def check_adapter_name(raw: Any, path: str, allowed: tuple[str, ...]) -> str:
    """The adapter's name, refused with a clear error when this worker has no such adapter."""
    if raw is None:
        return allowed[0]
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise ConfigError(f"{path}.name: required (one of {', '.join(allowed)})")
    if raw["name"] not in allowed:
        raise ConfigError(f"{path}.name: adapter {raw['name']!r} is not supported (one of {', '.join(allowed)})")
    return raw["name"]
