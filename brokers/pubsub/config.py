"""The ``iii-pubsub`` config block (workers-a §1.6): ``adapter`` only.

    adapter: {name: local}                           (default: in this process)
    adapter: {name: redis, config: {redis_url}}      (issue 19: one Redis shared by every host)

``local`` takes no config. ``redis``: ``publish`` is a Redis ``PUBLISH`` on the raw topic and
every host delivers to its own ``subscribe`` triggers what it receives (``redis_bus.py``).
Any other name is refused rather than silently replaced by ``local`` (it would change who
receives what).
"""
from __future__ import annotations

from typing import Any

from brokers.kit import redisconn
from brokers.kit.schema import ConfigError, Field, validate


def _parse_adapter(raw: Any, path: str) -> dict[str, Any]:
    adapter = validate(raw, {"name": Field(str, "local"), "config": Field(dict, None)}, path)
    if adapter["name"] == "redis":
        return redisconn.redis_adapter(adapter["config"], f"{path}.config")
    if adapter["name"] != "local":
        raise ConfigError(f"{path}.name: adapter '{adapter['name']}' is not supported by this "
                          "engine (only 'local' and 'redis')")
    if adapter["config"]:
        raise ConfigError(f"{path}.config: the 'local' adapter takes no config")
    return adapter


FIELDS = {"adapter": Field(dict, lambda: {"name": "local", "config": None}, parse=_parse_adapter)}


def parse(raw: Any, path: str) -> dict[str, Any]:
    """Validate the ``iii-pubsub`` block."""
    return validate(raw, FIELDS, path)
