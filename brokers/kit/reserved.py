"""Ids that belong to the engine: no worker may register them, built or not.

The reference enforces only ``engine::`` outside ``default`` (protocol.md §10.2), so a
worker could claim ``engine::log::info`` before observability exists and receive other
workers' log lines, or provide the ``state`` trigger type and receive their bindings. Here
every engine prefix and every built-in id is refused to workers (brokers register theirs
as themselves, never through a gateway), whether or not this engine implements it yet.

Invariant: an id a broker of this engine registers is reserved (tests check the
catalogue against the brokers' declarations); SDK helper ids such as the custom stream
provider's ``stream::get(<name>)`` are not (workers-a §3.2).
"""
from __future__ import annotations

PREFIXES = ("engine::", "iii::", "configuration::", "iii-http::", "iii-state::", "iii-stream::",
            "iii-pubsub::", "iii-cron::", "iii-queue::", "iii-observability::")
FUNCTIONS = frozenset(
    [f"state::{op}" for op in ("set", "get", "delete", "update", "list", "list_groups")]
    + [f"stream::{op}" for op in ("set", "get", "delete", "update", "list", "list_groups",
                                  "list_all", "send")]
    + ["publish"])
TRIGGER_TYPES = frozenset({
    "state", "stream", "stream:join", "stream:leave", "subscribe", "cron", "http",
    "durable:subscriber", "log", "trace", "configuration",
    "engine::functions-available", "engine::workers-available"})


def function(function_id: str) -> bool:
    """Whether ``function_id`` is the engine's (workers-a §7)."""
    return function_id in FUNCTIONS or function_id.startswith(PREFIXES)


def trigger_type(type_id: str) -> bool:
    """Whether ``type_id`` is a built-in trigger type (workers-a §7)."""
    return type_id in TRIGGER_TYPES or type_id.startswith(PREFIXES)
