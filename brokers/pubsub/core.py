"""Pub/sub bindings: topic -> subscriber triggers, and the fan-out of one publish.

Semantics of the reference's ``local`` adapter (workers-a §4), with its bug fixed:
unsubscribing one trigger removes only that trigger, the topic's other subscribers keep
receiving. Fire-and-forget: no persistence, no retries; every subscriber of the exact
topic (no wildcards) gets the raw ``data`` (no envelope, no trigger metadata).

Invariant: a topic appears in ``_topics`` only while it has at least one trigger; a
trigger id is bound to at most one topic (re-subscribing an id replaces its binding).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from brokers.kit.decode import DecodeError
from brokers.kit.errors import TOPIC_NOT_SET
from brokers.kit.inputs import ANY, STR, Field, Input

log = logging.getLogger(__name__)

PUBLISH = "publish"
TRIGGER_TYPE = "subscribe"


@dataclass(frozen=True, slots=True)
class Subscriber:
    trigger_id: str
    topic: str
    function_id: str
    namespace: str = "default"


@dataclass(frozen=True, slots=True)
class Delivery:
    """Invoke ``function_id`` in ``namespace`` with ``data``; the result is ignored."""

    function_id: str
    namespace: str
    data: Any


PUBLISH_INPUT = Input(PUBLISH, "PublishInput",
                      Field("topic", STR, empty=(TOPIC_NOT_SET, "Topic is not set"),
                            description="The topic to publish to"),
                      Field("data", ANY, description="Sent to every subscriber as it is"))
SUBSCRIBE_CONFIG = Input(TRIGGER_TYPE, "SubscribeTriggerConfig",
                         Field("topic", STR, required=False, description="The topic to receive"))
"""A ``subscribe`` binding's config; a missing or empty topic subscribes nothing (logged)."""


def parse_publish(raw: Any) -> tuple[str, Any]:
    """``publish {topic, data}``: ``data`` is required but may be null."""
    args = PUBLISH_INPUT.parse(raw)
    return args["topic"], args["data"]


class PubSubCore:
    """The live ``subscribe`` triggers of this engine."""

    def __init__(self) -> None:
        self._by_trigger: dict[str, Subscriber] = {}
        self._topics: dict[str, dict[str, Subscriber]] = {}

    def subscribe(self, trigger_id: str, config: Any, function_id: str,
                  namespace: str = "default") -> bool:
        """Bind a trigger; a missing/empty topic is accepted but subscribes nothing."""
        self.unsubscribe(trigger_id)
        try:
            topic = SUBSCRIBE_CONFIG.decode(config)["topic"]
        except DecodeError:
            topic = None
        if not topic:
            log.warning("subscribe trigger %s has no topic; nothing subscribed", trigger_id)
            return False
        sub = Subscriber(trigger_id, topic, function_id, namespace)
        self._by_trigger[trigger_id] = sub
        self._topics.setdefault(topic, {})[trigger_id] = sub
        return True

    def unsubscribe(self, trigger_id: str) -> bool:
        """Unbind this one trigger only."""
        sub = self._by_trigger.pop(trigger_id, None)
        if sub is None:
            return False
        subs = self._topics[sub.topic]
        del subs[trigger_id]
        if not subs:
            del self._topics[sub.topic]
        return True

    def publish(self, topic: str, data: Any) -> list[Delivery]:
        """One delivery per subscriber trigger of ``topic`` (each runs concurrently)."""
        return [Delivery(s.function_id, s.namespace, data)
                for s in self._topics.get(topic, {}).values()]

    def topics(self) -> set[str]:
        """Every topic with at least one trigger."""
        return set(self._topics)

    def subscribers(self, topic: str) -> list[Subscriber]:
        return list(self._topics.get(topic, {}).values())
