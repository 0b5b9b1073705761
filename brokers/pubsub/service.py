"""The pub/sub broker process: ``publish`` and the ``subscribe`` trigger type on the bus.

Fire-and-forget (workers-a §4.1): ``publish`` answers null at once after sending one void
call per subscriber; a subscriber that is not routable is logged and skipped, and the
handlers' results and errors never reach the publisher.

Trace context (protocol §9.1): every subscriber call carries the ``traceparent`` and
``baggage`` of the ``publish`` call that caused it, unchanged (we create no spans). The
reference's local adapter spawns its calls outside the publish span and so drops them;
passing them (``Call.trace``) costs nothing and keeps the subscriber in the trace.

On the ``redis`` adapter (``redis_bus.py``) ``publish`` answers null at once too, after
queueing its ``PUBLISH``; the subscriber calls are made by every host (this one included)
from what Redis delivers to it, with no trace context (the raw topic carries only the data).
"""
from __future__ import annotations

import logging

import orjson

from brokers.pubsub.core import (PUBLISH, PUBLISH_INPUT, SUBSCRIBE_CONFIG, TRIGGER_TYPE, PubSubCore,
                                 parse_publish)
from brokers.kit import redisconn, wire
from brokers.kit.broker import Broker, BusFactory, Call, run
from brokers.kit.errors import EngineError
from brokers.kit.units import RunContext
from brokers.pubsub.redis_bus import RedisTopics

log = logging.getLogger(__name__)



class PubSubBroker(Broker):
    worker_name = "iii-pubsub"

    def __init__(self, ctx: RunContext, *, bus: BusFactory | None = None) -> None:
        super().__init__(ctx, bus=bus)
        self.core = PubSubCore()
        self.redis: RedisTopics | None = None
        adapter = ctx.config.get("adapter") or {}
        if adapter.get("name") == "redis":
            self.redis = RedisTopics(redisconn.connect(adapter["redis_url"], socket_connect_timeout=5),
                                     self._deliver)

    async def setup(self) -> None:
        self.function(PUBLISH, self._publish, input=PUBLISH_INPUT,
                      description="Publish data to every subscriber of a topic")
        self.trigger_type(TRIGGER_TYPE, "Subscribe to a pub/sub topic", on_register=self._subscribe,
                          on_unregister=self._unsubscribe, config=SUBSCRIBE_CONFIG)
        if self.redis is not None:
            self.redis.start()
            log.info("iii-pubsub on Redis (host %s)", redisconn.host_id())

    async def teardown(self) -> None:
        if self.redis is not None:
            await self.redis.close()

    def _publish(self, call: Call) -> None:
        topic, payload = parse_publish(call.data)
        # Delivered as published (the reference adds nothing), except a _caller_worker_id the
        # publisher wrote in: only the engine sets that key.
        wire.stamp_caller(payload, None)
        if self.redis is not None:
            self.redis.publish(topic, orjson.dumps(payload))
            return
        traceparent, baggage = call.trace
        for delivery in self.core.publish(topic, payload):
            try:
                self.call_void(delivery.function_id, delivery.data, namespace=delivery.namespace,
                               traceparent=traceparent, baggage=baggage)
            except EngineError as exc:
                log.warning("publish to %s: subscriber %s skipped: %s", topic,
                            delivery.function_id, exc.message)

    def _subscribe(self, binding: dict) -> None:
        self.core.subscribe(binding["id"], binding.get("config"), binding["function_id"],
                            binding["namespace"])
        if self.redis is not None:
            self.redis.want(self.core.topics())

    def _unsubscribe(self, trigger_id: str) -> None:
        self.core.unsubscribe(trigger_id)
        if self.redis is not None:
            self.redis.want(self.core.topics())

    def _deliver(self, topic: str, data: bytes) -> None:
        """A message Redis delivered on ``topic``: one void call per local subscriber."""
        subscribers = self.core.subscribers(topic)
        if not subscribers:
            return
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            log.warning("pubsub: a message on %s is not JSON (%s); skipped", topic, exc)
            return
        for sub in subscribers:
            try:
                self.call_void(sub.function_id, payload, namespace=sub.namespace)
            except EngineError as exc:
                log.warning("publish to %s: subscriber %s skipped: %s", topic, sub.function_id, exc.message)


def main(ctx: RunContext) -> None:
    """Entry point of the pub/sub process."""
    run(PubSubBroker, ctx)
