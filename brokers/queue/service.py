"""The queue broker process: QueueCore + LMDB store on the engine bus.

Registers ``engine::queue::enqueue`` (the provider the gateway calls for
``TriggerAction.Enqueue``), ``iii::durable::publish``, the DLQ commands, the inspection
functions and the ``durable:subscriber`` trigger type, and delivers jobs by calling their
target functions through the bus.

Ordering invariants (the durability promise of core.py):
  * an enqueue/publish is answered only after the transaction holding its job is on disk;
  * a job is never delivered before it is durable: ``_durable_seq`` is the core's
    ``last_seq`` read when the newest completed commit took its writes, and ``poll`` hands
    out only jobs up to it. Deliveries therefore never wait for a commit of unrelated
    writes (acks, retries), and an enqueue burst is delivered as soon as its batch lands.
Trace context (protocol §9.1, workers-b §1.4/§1.5): a job keeps the ``traceparent`` and
``baggage`` it was enqueued or published with, and every delivery of it (retries, the
condition call, redrives) carries them unchanged on its ``invokefunction``. The reference
parents a ``fn_queue``/``queue`` span on them; we create no spans, so the worker's span is
a child of the producer's. A durable publish takes the context of its own
``invokefunction`` (the publisher's), read from ``Call.trace``.

A delivery that finds no such function is a failed attempt, as in the reference
(``missing.py`` says why we keep that); the first one per (queue, function) logs a
WARNING, again after the function was registered and went away, and ``topic_stats``
lists the functions its live jobs wait for (``missing_functions``).

The broker is event-driven: it pumps (once per loop iteration, however many events) on
every enqueue, commit and delivery outcome and arms one timer for the next retry, so
``poll_interval_ms`` (a polling period in the reference) is accepted but has nothing to do.

Hot path, per job: the enqueue INV is answered by a callback on the group commit of its
loop iteration (one commit future per iteration, no task), the delivery is a future in the
base's reply table with a callback (no task, no coroutine), the ack is one delete in a
later group commit.

What limits throughput (tests/e2e/test_queue_throughput.py, 16,000 jobs, 2 shared cores,
relay baseline of perf/servers.py in the same run):
  * CPU, not the disk. Per job: this process ~50-60 us (four bus frames: enqueue INV/RES,
    delivery INV/RES; one JSON decode of the enqueue, one msgpack record, one JSON encode
    of the delivery, a put and a delete in LMDB), the gateway ~50 us (four WebSocket and
    four bus frames), the clients ~30 us: ~140 us of CPU per job, so 10,000 jobs/s uses
    ~1.4 of the machine's 2 cores. Measured: 1 producer (64 in flight) 6-11k jobs/s end
    to end; 16 producers (16 in flight each) 7-14k enqueues/s. The relay baseline swung
    between 14k and 37k calls/s across runs (other load on the machine), so the ratios
    (0.17-0.79) say more about the neighbours than about us; in quiet windows both shapes
    reached 10.7-10.9k jobs/s end to end.
  * Group commit: one LMDB transaction (one fsync) per batch of everything written while
    the previous one ran; fsync latency sets the batch size, not the rate.
  * With 16 producers and ``concurrency: 64`` deliveries trail enqueues: at most
    ``concurrency`` jobs are out, and a delivery's round trip grows with the gateway's
    backlog of enqueues (~10 ms under this load, so ~6k/s); ``concurrency: 256`` delivered
    as fast as jobs were enqueued (10.8k/s).
  * Next steps outside this package: the gateway's one write syscall per WebSocket frame
    (~30 % of its samples in py-spy).
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from brokers.queue import inputs, inspect, missing
from brokers.queue.config import store_path
from brokers.queue.core import Delivery, QueueCore
from brokers.queue.jobs import Job
from brokers.queue.store import Op, Store, encode, open_committer, open_store
from brokers.kit.commit import GroupCommitter
from brokers.queue.topics import SUBSCRIBER_CONFIG, TRIGGER_TYPE, parse_subscription
from brokers.kit import wire
from brokers.kit.broker import Broker, BusFactory, Call, run
from brokers.kit import errors
from brokers.kit.errors import FUNCTION_NOT_FOUND, EngineError
from brokers.kit.lmdbenv import caller_reason
from brokers.kit.units import RunContext

log = logging.getLogger(__name__)

def now_ms() -> int:
    return int(time.time() * 1000)


_FAILED = {
    inputs.ENQUEUE: (errors.ENQUEUE_ERROR, "Failed to enqueue job"),
    inputs.PUBLISH: (errors.PUBLISH_FAILED, "Failed to publish"),
    inputs.REDRIVE: (errors.REDRIVE_FAILED, "Failed to redrive"),
    inputs.REDRIVE_MESSAGE: (errors.REDRIVE_MESSAGE_FAILED, "Failed to redrive message"),
    inputs.DISCARD_MESSAGE: (errors.DISCARD_MESSAGE_FAILED, "Failed to discard message"),
}
"""What a caller gets when the commit holding its writes failed: its function's code
(workers-b §1.1, §1.6) and why, e.g. ``enqueue_error`` "Failed to enqueue job: no space
left on device"; never ``invocation_failed`` with our traceback (the store is not a bug)."""


class QueueBroker(Broker):
    worker_name = "iii-queue"

    def __init__(self, ctx: RunContext, *, bus: BusFactory | None = None) -> None:
        super().__init__(ctx, bus=bus)
        self.core = QueueCore(ctx.config["queue_configs"])
        self.store: Store | None = None
        self.committer: GroupCommitter | None = None
        self._pump_scheduled = False
        self._batch: asyncio.Future[None] | None = None
        """The commit collecting this loop iteration's writes (flushed by call_soon)."""
        self._durable_seq = 0
        self._flushed_seq = 0
        """``last_seq`` at the previous flush: a batch's new jobs have a greater ``seq``."""
        """Every job with a ``seq`` up to this is on disk (core.poll's ``durable_seq``)."""
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: int | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._closing = False
        self.missing = missing.MissingFunctions()

    def telemetry_figures(self) -> dict[str, Any]:
        """Depth (live jobs) and DLQ size per lane: a named queue, or a topic's subscriber."""
        figures = super().telemetry_figures()
        lanes = self.core.lanes.values()
        figures["gauges"] = {"queue_depth": [[{"queue": lane.name}, len(lane.jobs)] for lane in lanes],
                             "queue_dlq_size": [[{"queue": lane.name}, len(lane.dlq)] for lane in lanes]}
        return figures

    # -- lifecycle -----------------------------------------------------------------
    def _open_store(self) -> Store:
        path = store_path(self.ctx.config, self.ctx.data_dir)
        return open_store(path)

    async def setup(self) -> None:
        self.store = self._open_store()
        jobs = self.store.load()
        self.core.restore(jobs, now_ms())  # leased-at-crash jobs are ready again
        self._durable_seq = self._flushed_seq = self.core.last_seq
        log.info("queue store open: %d stored jobs restored", len(jobs))
        self.committer = open_committer(self.store)
        shapes = inputs.INPUTS
        for fid, handler, text in (
                (inputs.ENQUEUE, self._enqueue, "Store a job for a named queue (TriggerAction.Enqueue)"),
                (inputs.PUBLISH, self._publish, "Publish to a durable topic"),
                (inputs.REDRIVE, self._redrive, "Move a DLQ back to its queue"),
                (inputs.REDRIVE_MESSAGE, self._redrive_message, "Move one DLQ message back to its queue"),
                (inputs.DISCARD_MESSAGE, self._discard_message, "Delete one DLQ message"),
                (inputs.TOPIC_STATS, lambda call: inspect.topic_stats(
                    self.core, inputs.topic_name(inputs.TOPIC_STATS, call.data), self._has_route),
                 "Depth, consumers, DLQ depth and config of a queue or topic"),
                (inputs.DLQ_MESSAGES, lambda call: inspect.dlq_messages(
                    self.core, *inputs.dlq_page(call.data)), "DLQ messages of a queue or topic")):
            self.function(fid, handler, description=text, input=shapes.get(fid))
        self.function(inputs.LIST_TOPICS, lambda call: inspect.list_topics(self.core),
                      description="Topics and named queues")
        self.function(inputs.DLQ_TOPICS, lambda call: inspect.dlq_topics(self.core),
                      description="Queues and topics with their DLQ counts")
        self.trigger_type(TRIGGER_TYPE, "Queue core module", on_register=self._subscribe,
                          on_unregister=self._unsubscribe, config=SUBSCRIBER_CONFIG)

    async def teardown(self) -> None:
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._inflight):
            task.cancel()  # their jobs stay stored and are delivered again at the next start
        assert self.committer is not None and self.store is not None
        await self._submit(encode(self.core.take_writes()))
        self.committer.close()
        self.store.close()

    # -- functions -----------------------------------------------------------------
    def _commit(self) -> asyncio.Future[None]:
        """The commit of the core's writes of this loop iteration (one per iteration, however
        many enqueues and outcomes it held); once on disk, jobs up to now are deliverable."""
        if self._batch is None:
            loop = asyncio.get_running_loop()
            self._batch = loop.create_future()
            # Marks a failure as seen: an outcome-only batch has nobody else waiting on it.
            self._batch.add_done_callback(lambda f: f.cancelled() or f.exception())
            loop.call_soon(self._flush)
        return self._batch

    def _flush(self) -> None:
        assert self.committer is not None
        batch, self._batch = self._batch, None
        assert batch is not None
        seq, after = self.core.last_seq, self._flushed_seq
        self._flushed_seq = seq
        writes = self.core.take_writes()
        fut = self._submit(encode(writes))
        fut.add_done_callback(lambda f: self._on_committed(seq, f, batch, writes, after))

    def _submit(self, ops: list[Op]) -> asyncio.Future[None]:
        """Durable once resolved; nothing to write waits for the earlier writes only."""
        assert self.committer is not None
        return self.committer.submit(ops) if ops else self.committer.barrier()

    def _on_committed(self, seq: int, fut: asyncio.Future[None], batch: asyncio.Future[None],
                      writes: list, after: int) -> None:
        exc = None if fut.cancelled() else fut.exception()
        if not fut.cancelled() and exc is None and seq > self._durable_seq:
            self._durable_seq = seq
        if exc is not None:
            # Its enqueuers get the error: their jobs must not run once a later commit
            # moves the durable mark past them.
            dropped = self.core.abandon(writes, after, now_ms())
            if dropped:
                log.warning("%d jobs of a failed commit dropped (their enqueuers were told)", dropped)
            batch.set_exception(exc)
        elif fut.cancelled():
            batch.cancel()
        else:
            batch.set_result(None)
        self._kick()

    def _answer_when_durable(self, value: Any, function_id: str) -> asyncio.Future[Any]:
        """A future the broker base settles by callback (no task per call); a failed commit
        answers ``_FAILED[function_id]``."""
        out: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def done(fut: asyncio.Future[None]) -> None:
            if out.done():
                return
            if fut.cancelled():
                out.cancel()
            elif (exc := fut.exception()) is not None:
                code, text = _FAILED[function_id]
                out.set_exception(EngineError(code, f"{text}: {caller_reason(exc)}"))
            else:
                out.set_result(value)

        self._commit().add_done_callback(done)
        return out

    def _enqueue(self, call: Call) -> asyncio.Future[Any]:
        req = inputs.enqueue(call.data)
        wire.stamp_caller(req.data, None)  # the enqueue adds none, and the payload's is not trusted
        self.core.enqueue(req, now_ms())
        return self._answer_when_durable({"messageReceiptId": req.message_id}, inputs.ENQUEUE)

    def _publish(self, call: Call) -> asyncio.Future[Any]:
        topic, payload = inputs.publish(call.data)
        wire.stamp_caller(payload, None)  # as for pub/sub: delivered as published, minus a forgery
        traceparent, baggage = call.trace
        self.core.publish(topic, payload, now_ms(), traceparent, baggage)
        return self._answer_when_durable(None, inputs.PUBLISH)

    def _redrive(self, call: Call) -> asyncio.Future[Any]:
        name = inputs.queue_name(inputs.REDRIVE, call.data)
        count = self.core.redrive(name, now_ms())
        return self._answer_when_durable({"queue": name, "redriven": count}, inputs.REDRIVE)

    def _redrive_message(self, call: Call) -> asyncio.Future[Any]:
        name, message_id = inputs.queue_and_message(inputs.REDRIVE_MESSAGE, call.data)
        count = self.core.redrive_message(name, message_id, now_ms())
        return self._answer_when_durable({"queue": name, "message_id": message_id, "redriven": count},
                                         inputs.REDRIVE_MESSAGE)

    def _discard_message(self, call: Call) -> asyncio.Future[Any]:
        name, message_id = inputs.queue_and_message(inputs.DISCARD_MESSAGE, call.data)
        count = self.core.discard_message(name, message_id)
        return self._answer_when_durable({"queue": name, "message_id": message_id, "redriven": count},
                                         inputs.DISCARD_MESSAGE)

    def _subscribe(self, binding: dict) -> None:
        sub = parse_subscription(binding["id"], binding["function_id"], binding["namespace"],
                                 binding.get("config"))
        if sub is not None:
            self.core.subscribe(sub)
            self._kick()

    def _unsubscribe(self, trigger_id: str) -> None:
        self.core.unsubscribe(trigger_id)

    # -- delivery ------------------------------------------------------------------
    def _has_route(self, namespace: str, function_id: str) -> bool:
        return self.routes.get(namespace, function_id) is not None

    def _on_routes(self, sender: str, header: dict, body: bytes) -> None:
        super()._on_routes(sender, header, body)
        self.missing.routed(self._has_route)
        self._kick()  # no delivery before the first route table (routes_known): a job sent
        # to a route we simply do not know yet would burn an attempt as function_not_found

    def _kick(self) -> None:
        """Pump once at the end of this loop iteration: a burst of events costs one pass."""
        if self._closing or not self.routes_known.is_set() or self._pump_scheduled:
            return
        self._pump_scheduled = True
        asyncio.get_running_loop().call_soon(self._pump)

    def _pump(self) -> None:
        self._pump_scheduled = False
        if self._closing:
            return
        try:
            if self.core.has_writes():
                self._commit()  # outcomes (acks, retries) need not be on disk before delivering
            poll = self.core.poll(now_ms(), self._durable_seq)
            for delivery in poll.deliveries:
                self._deliver(delivery)
            self._arm(poll.wake_at)
        except Exception:
            log.exception("queue pump failed; retrying in a second")
            self._arm(now_ms() + 1000)

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

    def _deliver(self, delivery: Delivery) -> None:
        """Invoke the job's target; its outcome arrives by callback (no task per job)."""
        job = delivery.job
        if delivery.condition_function_id:
            task = asyncio.ensure_future(self._deliver_with_condition(delivery))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
            return
        try:
            fut = self.call_future(job.function_id, job.data, namespace=job.namespace,
                                   traceparent=job.traceparent, baggage=job.baggage)
        except EngineError as exc:  # no route: a failed attempt, decided at once
            self._outcome(job, exc)
            return
        fut.add_done_callback(lambda f: self._outcome(job, None if f.cancelled() else f.exception()))

    def _outcome(self, job: Job, exc: BaseException | None, target: str | None = None) -> None:
        """Record a delivery's outcome; ``target``: the function ``exc`` is about, when it
        is not the job's own (its condition function)."""
        if self._closing:
            return  # the job stays stored and is delivered again at the next start
        job_id = job.id
        if isinstance(exc, EngineError) and exc.code == FUNCTION_NOT_FOUND:
            self._missed(job, target or job.function_id)
        if exc is None:
            self.core.succeeded(job_id, now_ms())
        elif isinstance(exc, EngineError):
            self.core.failed(job_id, f"{exc.code}: {exc.message}", now_ms())
        else:  # a bug on our side counts as a failed attempt, not a loss
            log.error("delivery of job %s failed: %r", job_id, exc)
            self.core.failed(job_id, f"invocation_failed: {exc}", now_ms())
        self._kick()

    def _missed(self, job: Job, function_id: str) -> None:
        lane = self.core.lanes.get(job.lane)
        if lane is not None and self.missing.missed(lane.key, job.namespace, function_id):
            log.warning("%s", missing.warning(lane, job.namespace, function_id))

    async def _deliver_with_condition(self, delivery: Delivery) -> None:
        job = delivery.job
        target = job.function_id
        try:
            try:
                verdict = await self.call(delivery.condition_function_id, job.data,  # type: ignore[arg-type]
                                          namespace=job.namespace, traceparent=job.traceparent,
                                          baggage=job.baggage)
            except EngineError as exc:
                target = delivery.condition_function_id
                raise EngineError(exc.code, f"Condition function error: {exc.message}") from None
            if verdict is not False:  # only exactly false skips the job (acked, not run)
                await self.call(job.function_id, job.data, namespace=job.namespace,
                                traceparent=job.traceparent, baggage=job.baggage)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._outcome(job, exc, target)
        else:
            self._outcome(job, None)


def main(ctx: RunContext) -> None:
    """Entry point of the queue process (``adapter: redis``: the shared queue on Redis)."""
    if ctx.config["adapter"]["name"] == "redis":
        from brokers.queue.redis_service import RedisQueueBroker
        run(RedisQueueBroker, ctx)
        return
    run(QueueBroker, ctx)
