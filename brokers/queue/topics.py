"""Durable-topic subscriptions: ``durable:subscriber`` triggers and their lanes.

Each distinct (topic, namespace, function) gets one lane; several triggers of the same
function (replicas) share it and compete, so each message is processed once per function
(workers-b §1.5). The registry lives in memory: after a restart the triggers are replayed
by the router, and their persisted jobs resume when the subscription comes back.

Invariant: ``lanes_of(topic)`` holds exactly the lane keys with at least one trigger.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from brokers.queue.jobs import subscriber_lane_key
from brokers.kit.errors import TRIGGER_REGISTRATION_FAILED, EngineError

log = logging.getLogger(__name__)

TRIGGER_TYPE = "durable:subscriber"

# Durable-topic jobs default to the reference adapter's internal defaults (§1.2 [QUIRK]).
DEFAULT_ATTEMPTS = 3
DEFAULT_BACKOFF_MS = 1000
DEFAULT_CONCURRENCY = 10


@dataclass(frozen=True, slots=True)
class Subscription:
    trigger_id: str
    topic: str
    function_id: str
    namespace: str
    lane: str
    fifo: bool = False
    max_attempts: int = DEFAULT_ATTEMPTS
    """``queue_config.maxRetries`` counts retries after the first attempt: +1 here."""
    concurrency: int = DEFAULT_CONCURRENCY
    backoff_ms: int = DEFAULT_BACKOFF_MS
    condition_function_id: str | None = None


def _uint(qc: dict[str, Any], key: str, default: int) -> int:
    value = qc.get(key)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise EngineError(TRIGGER_REGISTRATION_FAILED,
                          f"durable:subscriber queue_config.{key} must be a non-negative integer")
    return value


def parse_subscription(trigger_id: str, function_id: str, namespace: str,
                       config: Any) -> Subscription | None:
    """A trigger's config -> Subscription; None (accepted, nothing subscribed) without topic.

    ``queue_config`` keys are camelCase as in the reference; snake_case keys and the
    parsed-but-unused ones (``visibilityTimeout``, ``delaySeconds``, ``backoffType``,
    ``maxPriority``) are ignored.
    """
    config = config if isinstance(config, dict) else {}
    topic = config.get("topic")
    if not isinstance(topic, str) or not topic:
        log.warning("durable:subscriber trigger %s has no topic; nothing subscribed", trigger_id)
        return None
    qc = config.get("queue_config") or {}
    if not isinstance(qc, dict):
        raise EngineError(TRIGGER_REGISTRATION_FAILED, "durable:subscriber queue_config must be an object")
    cond = config.get("condition_function_id")
    return Subscription(
        trigger_id=trigger_id, topic=topic, function_id=function_id, namespace=namespace,
        lane=subscriber_lane_key(topic, function_id, namespace),
        fifo=qc.get("type") == "fifo",
        max_attempts=_uint(qc, "maxRetries", DEFAULT_ATTEMPTS - 1) + 1,
        concurrency=_uint(qc, "concurrency", DEFAULT_CONCURRENCY),
        backoff_ms=_uint(qc, "backoffDelayMs", DEFAULT_BACKOFF_MS),
        condition_function_id=cond if isinstance(cond, str) and cond else None,
    )


@dataclass
class Subscriptions:
    """trigger id -> Subscription, and topic -> {lane key -> trigger ids}."""

    by_trigger: dict[str, Subscription] = field(default_factory=dict)
    _topics: dict[str, dict[str, set[str]]] = field(default_factory=dict)

    def add(self, sub: Subscription) -> Subscription | None:
        """Bind ``sub`` (replacing a trigger with the same id); returns the replaced one."""
        old = self.remove(sub.trigger_id)
        self.by_trigger[sub.trigger_id] = sub
        self._topics.setdefault(sub.topic, {}).setdefault(sub.lane, set()).add(sub.trigger_id)
        return old

    def remove(self, trigger_id: str) -> Subscription | None:
        """Unbind one trigger; the other triggers of its topic stay."""
        sub = self.by_trigger.pop(trigger_id, None)
        if sub is None:
            return None
        lanes = self._topics[sub.topic]
        lanes[sub.lane].discard(trigger_id)
        if not lanes[sub.lane]:
            del lanes[sub.lane]
        if not lanes:
            del self._topics[sub.topic]
        return sub

    def lanes_of(self, topic: str) -> list[str]:
        return list(self._topics.get(topic, ()))

    def triggers_of_lane(self, topic: str, lane: str) -> list[Subscription]:
        return [self.by_trigger[t] for t in self._topics.get(topic, {}).get(lane, ())]

    def topics(self) -> dict[str, int]:
        """topic -> number of triggers."""
        return {t: sum(len(ids) for ids in lanes.values()) for t, lanes in self._topics.items()}
