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

from brokers.kit.decode import DecodeError
from brokers.kit.errors import TRIGGER_REGISTRATION_FAILED, EngineError
from brokers.kit.inputs import STR, UINT, Field, Input
from brokers.queue.jobs import subscriber_lane_key

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


QUEUE_CONFIG = Input(TRIGGER_TYPE, "SubscriberQueueConfig",
                     Field("type", STR, required=False, description="standard or fifo"),
                     Field("maxRetries", UINT, required=False, default=DEFAULT_ATTEMPTS - 1,
                           description="Retries after the first attempt"),
                     Field("concurrency", UINT, required=False, default=DEFAULT_CONCURRENCY),
                     Field("backoffDelayMs", UINT, required=False, default=DEFAULT_BACKOFF_MS))
SUBSCRIBER_CONFIG = Input(TRIGGER_TYPE, "DurableSubscriberConfig",
                          Field("topic", STR, required=False, description="The durable topic"),
                          Field("condition_function_id", STR, required=False),
                          Field("queue_config", required=False, parse=QUEUE_CONFIG.decode))
"""A ``durable:subscriber`` binding's config (its ``trigger_request_format``)."""


def parse_subscription(trigger_id: str, function_id: str, namespace: str,
                       config: Any) -> Subscription | None:
    """A trigger's config -> Subscription; None (accepted, nothing subscribed) without topic.

    ``queue_config`` keys are camelCase as in the reference; snake_case keys and the
    parsed-but-unused ones (``visibilityTimeout``, ``delaySeconds``, ``backoffType``,
    ``maxPriority``) are ignored.
    """
    try:
        args = SUBSCRIBER_CONFIG.decode(config if isinstance(config, dict) else {})
        qc = args["queue_config"] or QUEUE_CONFIG.decode({})
    except DecodeError as exc:
        raise EngineError(TRIGGER_REGISTRATION_FAILED, f"Failed to parse trigger config: {exc}") from None
    topic = args["topic"]
    if not topic:
        log.warning("durable:subscriber trigger %s has no topic; nothing subscribed", trigger_id)
        return None
    return Subscription(
        trigger_id=trigger_id, topic=topic, function_id=function_id, namespace=namespace,
        lane=subscriber_lane_key(topic, function_id, namespace), fifo=qc["type"] == "fifo",
        max_attempts=qc["maxRetries"] + 1, concurrency=qc["concurrency"],
        backoff_ms=qc["backoffDelayMs"], condition_function_id=args["condition_function_id"] or None)


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
