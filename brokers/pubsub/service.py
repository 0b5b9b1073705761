"""The pub/sub broker process: ``publish`` and the ``subscribe`` trigger type on the bus.

Fire-and-forget (workers-a §4.1): ``publish`` answers null at once after sending one void
call per subscriber; a subscriber that is not routable is logged and skipped, and the
handlers' results and errors never reach the publisher.

Trace context (protocol §9.1): every subscriber call carries the ``traceparent`` and
``baggage`` of the ``publish`` call that caused it, unchanged (we create no spans). The
reference's local adapter spawns its calls outside the publish span and so drops them;
passing them (``Call.trace``) costs nothing and keeps the subscriber in the trace.
"""
from __future__ import annotations

import logging

from brokers.pubsub.core import (PUBLISH, PUBLISH_INPUT, SUBSCRIBE_CONFIG, TRIGGER_TYPE, PubSubCore,
                                 parse_publish)
from brokers.kit import wire
from brokers.kit.broker import Broker, BusFactory, Call, run
from brokers.kit.errors import EngineError
from brokers.kit.units import RunContext

log = logging.getLogger(__name__)



class PubSubBroker(Broker):
    worker_name = "iii-pubsub"

    def __init__(self, ctx: RunContext, *, bus: BusFactory | None = None) -> None:
        super().__init__(ctx, bus=bus)
        self.core = PubSubCore()

    async def setup(self) -> None:
        self.function(PUBLISH, self._publish, input=PUBLISH_INPUT,
                      description="Publish data to every subscriber of a topic")
        self.trigger_type(TRIGGER_TYPE, "Subscribe to a pub/sub topic", on_register=self._subscribe,
                          on_unregister=self.core.unsubscribe, config=SUBSCRIBE_CONFIG)

    def _publish(self, call: Call) -> None:
        topic, payload = parse_publish(call.data)
        # Delivered as published (the reference adds nothing), except a _caller_worker_id the
        # publisher wrote in: only the engine sets that key.
        wire.stamp_caller(payload, None)
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


def main(ctx: RunContext) -> None:
    """Entry point of the pub/sub process."""
    run(PubSubBroker, ctx)
