"""The queue broker process: QueueCore + LMDB store on the engine bus.

Registers ``engine::queue::enqueue`` (the provider the gateway calls for
``TriggerAction.Enqueue``), ``iii::durable::publish``, the DLQ commands, the inspection
functions and the ``durable:subscriber`` trigger type, and delivers jobs by calling their
target functions through the bus.

Ordering invariants (the durability promise of core.py):
  * an enqueue/publish is answered only after the transaction holding its job is on disk;
  * the pump commits (or waits for) every pending write before it hands out jobs, so a
    job is never delivered before it is durable.
The broker is event-driven: it pumps on every enqueue and delivery outcome and arms one
timer for the next retry, so ``poll_interval_ms`` (a polling period in the reference) is
accepted but has nothing to do.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from brokers.queue import inputs, inspect
from brokers.queue.config import store_path
from brokers.queue.core import Delivery, QueueCore
from brokers.queue.store import GroupCommitter, LmdbStore, MemoryStore, Store, encode
from brokers.queue.topics import TRIGGER_TYPE, parse_subscription
from iii.core.broker import Broker, run
from iii.core.errors import EngineError
from iii.core.units import RunContext

log = logging.getLogger(__name__)

_STR = {"type": "string"}
ENQUEUE_FORMAT = {
    "type": "object",
    "properties": {"queue": _STR, "function_id": _STR, "data": {}, "messageReceiptId": _STR,
                   "traceparent": {"type": ["string", "null"]}, "baggage": {"type": ["string", "null"]},
                   "namespace": _STR},
    "required": ["queue", "function_id", "data", "messageReceiptId"],
}
PUBLISH_FORMAT = {"type": "object", "properties": {"topic": _STR, "data": {}},
                  "required": ["topic", "data"]}
SUBSCRIBER_FORMAT = {
    "type": "object",
    "properties": {"topic": _STR, "condition_function_id": _STR,
                   "queue_config": {"type": "object", "properties": {
                       "type": _STR, "maxRetries": {"type": "integer"}, "concurrency": {"type": "integer"},
                       "backoffDelayMs": {"type": "integer"}}}},
    "required": ["topic"],
}


def now_ms() -> int:
    return int(time.time() * 1000)


class QueueBroker(Broker):
    worker_name = "iii-queue"

    def __init__(self, ctx: RunContext) -> None:
        super().__init__(ctx)
        self.core = QueueCore(ctx.config["queue_configs"])
        self.store: Store | None = None
        self.committer: GroupCommitter | None = None
        self._pump_task: asyncio.Task[None] | None = None
        self._again = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: int | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._routes_ready = False
        """No delivery before the first route table: a job sent to a route we simply do
        not know yet would burn an attempt with ``function_not_found``."""
        self._closing = False

    # -- lifecycle -----------------------------------------------------------------
    def _open_store(self) -> Store:
        path = store_path(self.ctx.config, self.ctx.data_dir)
        return MemoryStore() if path is None else LmdbStore(path)

    async def setup(self) -> None:
        self.store = self._open_store()
        jobs = self.store.load()
        self.core.restore(jobs, now_ms())  # leased-at-crash jobs are ready again
        log.info("queue store open: %d stored jobs restored", len(jobs))
        self.committer = GroupCommitter(self.store)
        self.function(inputs.ENQUEUE, self._enqueue, request_format=ENQUEUE_FORMAT,
                      description="Store a job for a named queue (TriggerAction.Enqueue)")
        self.function(inputs.PUBLISH, self._publish, request_format=PUBLISH_FORMAT,
                      description="Publish to a durable topic")
        self.function(inputs.REDRIVE, self._redrive, description="Move a DLQ back to its queue")
        self.function(inputs.REDRIVE_MESSAGE, self._redrive_message,
                      description="Move one DLQ message back to its queue")
        self.function(inputs.DISCARD_MESSAGE, self._discard_message,
                      description="Delete one DLQ message")
        self.function(inputs.LIST_TOPICS, lambda data, md: inspect.list_topics(self.core))
        self.function(inputs.TOPIC_STATS, lambda data, md: inspect.topic_stats(
            self.core, inputs.topic_name(inputs.TOPIC_STATS, data)))
        self.function(inputs.DLQ_TOPICS, lambda data, md: inspect.dlq_topics(self.core))
        self.function(inputs.DLQ_MESSAGES, lambda data, md: inspect.dlq_messages(
            self.core, *inputs.dlq_page(data)))
        self.trigger_type(TRIGGER_TYPE, "Queue core module", on_register=self._subscribe,
                          on_unregister=self._unsubscribe, trigger_request_format=SUBSCRIBER_FORMAT)

    async def teardown(self) -> None:
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._inflight):
            task.cancel()  # their jobs stay stored and are delivered again at the next start
        assert self.committer is not None and self.store is not None
        await self.committer.commit(encode(self.core.take_writes()))
        self.committer.close()
        self.store.close()

    # -- functions -----------------------------------------------------------------
    async def _durable(self) -> None:
        assert self.committer is not None
        await self.committer.commit(encode(self.core.take_writes()))
        self._kick()

    async def _enqueue(self, data: Any, metadata: Any) -> dict[str, Any]:
        req = inputs.enqueue(data)
        self.core.enqueue(req, now_ms())
        await self._durable()
        return {"messageReceiptId": req.message_id}

    async def _publish(self, data: Any, metadata: Any) -> None:
        topic, payload = inputs.publish(data)
        self.core.publish(topic, payload, now_ms())
        await self._durable()

    async def _redrive(self, data: Any, metadata: Any) -> dict[str, Any]:
        name = inputs.queue_name(inputs.REDRIVE, data)
        count = self.core.redrive(name, now_ms())
        await self._durable()
        return {"queue": name, "redriven": count}

    async def _redrive_message(self, data: Any, metadata: Any) -> dict[str, Any]:
        name, message_id = inputs.queue_and_message(inputs.REDRIVE_MESSAGE, data)
        count = self.core.redrive_message(name, message_id, now_ms())
        await self._durable()
        return {"queue": name, "message_id": message_id, "redriven": count}

    async def _discard_message(self, data: Any, metadata: Any) -> dict[str, Any]:
        name, message_id = inputs.queue_and_message(inputs.DISCARD_MESSAGE, data)
        count = self.core.discard_message(name, message_id)
        await self._durable()
        return {"queue": name, "message_id": message_id, "redriven": count}

    def _subscribe(self, binding: dict) -> None:
        sub = parse_subscription(binding["id"], binding["function_id"], binding["namespace"],
                                 binding.get("config"))
        if sub is not None:
            self.core.subscribe(sub)
            self._kick()

    def _unsubscribe(self, trigger_id: str) -> None:
        self.core.unsubscribe(trigger_id)

    # -- delivery ------------------------------------------------------------------
    def _on_routes(self, sender: str, header: dict, body: bytes) -> None:
        super()._on_routes(sender, header, body)
        if not self._routes_ready:
            self._routes_ready = True
            self._kick()

    def _kick(self) -> None:
        """Pump soon; coalesces the many kicks of a burst into one pass."""
        if self._closing or not self._routes_ready:
            return
        if self._pump_task is None:
            self._pump_task = asyncio.ensure_future(self._pump())
        else:
            self._again = True

    async def _pump(self) -> None:
        assert self.committer is not None
        try:
            while True:
                self._again = False
                # Every job handed out below must be durable first (a barrier if empty).
                await self.committer.commit(encode(self.core.take_writes()))
                poll = self.core.poll(now_ms())
                for delivery in poll.deliveries:
                    task = asyncio.ensure_future(self._deliver(delivery))
                    self._inflight.add(task)
                    task.add_done_callback(self._inflight.discard)
                self._arm(poll.wake_at)
                if not self._again:
                    return
        except Exception:
            log.exception("queue pump failed; retrying on the next event")
            self._arm(now_ms() + 1000)
        finally:
            self._pump_task = None

    def _arm(self, at: int | None) -> None:
        if at is None or (self._timer_at is not None and self._timer_at <= at):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = asyncio.get_running_loop().call_later(
            max(0.0, (at - now_ms()) / 1000), self._on_timer)

    def _on_timer(self) -> None:
        self._timer, self._timer_at = None, None
        self._kick()

    async def _deliver(self, delivery: Delivery) -> None:
        job = delivery.job
        try:
            if delivery.condition_function_id:
                try:
                    verdict = await self.call(delivery.condition_function_id, job.data,
                                              namespace=job.namespace)
                except EngineError as exc:
                    raise EngineError(exc.code, f"Condition function error: {exc.message}") from None
                if verdict is False:
                    self.core.succeeded(job.id, now_ms())  # filtered out: acked, skipped
                    return
            await self.call(job.function_id, job.data, namespace=job.namespace)
        except asyncio.CancelledError:
            raise
        except EngineError as exc:
            self.core.failed(job.id, f"{exc.code}: {exc.message}", now_ms())
        except Exception as exc:  # a bug on our side counts as a failed attempt, not a loss
            log.exception("delivery of job %s failed", job.id)
            self.core.failed(job.id, f"invocation_failed: {exc}", now_ms())
        else:
            self.core.succeeded(job.id, now_ms())
        finally:
            self._kick()


def main(ctx: RunContext) -> None:
    """Entry point of the queue process."""
    run(QueueBroker, ctx)
