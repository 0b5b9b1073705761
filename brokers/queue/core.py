"""The queue broker's scheduler: a pure state machine, time passed in.

Inputs (events): ``enqueue``, ``publish``, ``subscribe``/``unsubscribe``, the outcome of a
delivery (``succeeded``/``failed``/``released``), the DLQ commands, ``restore`` at boot.
Outputs (actions): ``poll(now)`` returns the deliveries to make now ("invoke F with the
data of job J") and the time of the next wake-up; ``take_writes()`` returns the job records
to persist (put or delete) since the last call. Nothing here touches a socket, a clock or
a disk.

How attempts are counted (one rule for named queues and topics):
  * ``attempts_made`` is the number of deliveries whose outcome was a failure (an error
    result, a missing target function, a disconnected worker, a failing condition).
  * After a failure, when ``attempts_made >= max_attempts`` the job goes to the DLQ;
    otherwise it is retried after ``backoff_ms * 2 ** (attempts_made - 1)`` ms.
  * Named queue: ``max_attempts = max_retries`` = total deliveries (``0`` behaves as 1),
    like the reference's builtin adapter. Durable subscriber: ``queue_config.maxRetries``
    counts retries, so ``max_attempts = maxRetries + 1`` (default 3 attempts).
  * A delivery cut short by a broker restart has no outcome and is not counted: the job
    is simply ready again (at-least-once, see below). ``redrive`` resets the count to 0.

At-least-once: a job handed out by ``poll`` is leased until its outcome arrives. Leases
live only in memory and are never written, so every stored job is ready (or waiting for
a retry) when the broker restarts: ``restore`` hands leased-at-crash jobs out again.

Contract with the shell (it keeps the durability promise): write ``take_writes()`` to the
store and wait for the commit before replying to an enqueue; hand ``poll`` the ``last_seq``
read at the ``take_writes`` of the newest commit that completed, so a new job is delivered
only once its record is on disk (deliveries never wait for unrelated commits).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from brokers.queue.inputs import EnqueueRequest
from brokers.queue.jobs import FN_QUEUE_PREFIX, Job, fn_queue_key, group_key, new_uuid4
from brokers.queue.lanes import Lane
from brokers.queue.topics import (DEFAULT_ATTEMPTS, DEFAULT_BACKOFF_MS, DEFAULT_CONCURRENCY,
                                  Subscription, Subscriptions)
from brokers.kit.errors import ENQUEUE_ERROR, EngineError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Delivery:
    """Invoke ``job.function_id`` in ``job.namespace`` with ``job.data``; report the outcome."""

    job: Job
    condition_function_id: str | None = None


@dataclass(frozen=True, slots=True)
class Poll:
    deliveries: list[Delivery]
    wake_at: int | None
    """Call ``poll`` again at this unix ms at the latest (a retry falls due)."""


class QueueCore:
    """Named queues, durable topics and their DLQs."""

    def __init__(self, queue_configs: dict[str, dict[str, Any]],
                 new_id: Callable[[], str] = new_uuid4) -> None:
        self.configs = queue_configs
        self.lanes: dict[str, Lane] = {}
        self.subs = Subscriptions()
        self._new_id = new_id
        self._seq = 0
        self._where: dict[str, Lane] = {}
        """job id -> its lane, for live and DLQ jobs."""
        self._dirty: dict[str, Job | None] = {}
        for name, cfg in queue_configs.items():
            self.lanes[fn_queue_key(name)] = Lane(
                fn_queue_key(name), name=name, topic=None, fifo=cfg["type"] == "fifo",
                concurrency=cfg["concurrency"], max_attempts=cfg["max_retries"],
                backoff_ms=cfg["backoff_ms"], group_field=cfg.get("message_group_field"))

    # -- boot ----------------------------------------------------------------------
    def restore(self, jobs: Iterable[Job], now: int) -> None:
        """Load stored jobs (any order); live ones become ready or wait for their retry."""
        for job in sorted(jobs, key=lambda j: j.seq):
            self._seq = max(self._seq, job.seq)
            lane = self.lanes.get(job.lane) or self._orphan_lane(job)
            self._where[job.id] = lane
            if job.failed_at is not None:
                lane.dlq[job.id] = job
            else:
                lane.add(job, now)

    def _orphan_lane(self, job: Job) -> Lane:
        """A lane for stored jobs whose queue or subscription is not (yet) configured."""
        if job.lane.startswith(FN_QUEUE_PREFIX):
            log.warning("stored jobs of queue %r, which the config no longer has, are kept "
                        "but not delivered", job.lane[len(FN_QUEUE_PREFIX):])
            name, topic = job.lane[len(FN_QUEUE_PREFIX):], None
        else:
            name, topic = job.topic or job.lane, job.topic
        lane = Lane(job.lane, name=name, topic=topic, fifo=False, concurrency=DEFAULT_CONCURRENCY,
                    max_attempts=DEFAULT_ATTEMPTS, backoff_ms=DEFAULT_BACKOFF_MS, active=False)
        self.lanes[job.lane] = lane
        return lane

    # -- producers -----------------------------------------------------------------
    def enqueue(self, req: EnqueueRequest, now: int) -> Job:
        """Store one job for a named queue; ``enqueue_error`` for a bad queue or message."""
        cfg = self.configs.get(req.queue)
        if cfg is None:
            raise EngineError(ENQUEUE_ERROR, f"Queue '{req.queue}' not found")
        group_id = None
        field = cfg.get("message_group_field")
        if cfg["type"] == "fifo":
            if not isinstance(req.data, dict) or field not in req.data:
                raise EngineError(ENQUEUE_ERROR, f"FIFO queue '{req.queue}' requires field "
                                                 f"'{field}' in data, but it was not found")
            if req.data[field] is None:
                raise EngineError(ENQUEUE_ERROR,
                                  f"FIFO queue '{req.queue}': field '{field}' must not be null")
            group_id = group_key(req.data[field])
        lane = self.lanes[fn_queue_key(req.queue)]
        job = self._new_job(lane, req.function_id, req.namespace, req.data, now,
                            message_id=req.message_id, group_id=group_id,
                            traceparent=req.traceparent, baggage=req.baggage)
        return job

    def publish(self, topic: str, data: Any, now: int, traceparent: str | None = None,
                baggage: str | None = None) -> list[Job]:
        """One job per subscribed function of ``topic``; none (dropped) without subscribers."""
        out = []
        for key in self.subs.lanes_of(topic):
            lane = self.lanes[key]
            sub = self.subs.triggers_of_lane(topic, key)[0]
            out.append(self._new_job(lane, sub.function_id, sub.namespace, data, now,
                                     topic=topic, traceparent=traceparent, baggage=baggage))
        return out

    def _new_job(self, lane: Lane, function_id: str, namespace: str, data: Any, now: int,
                 **extra: Any) -> Job:
        self._seq += 1
        job = Job(id=self._new_id(), lane=lane.key, function_id=function_id, data=data,
                  seq=self._seq, created_at=now, max_attempts=lane.max_attempts,
                  backoff_ms=lane.backoff_ms, namespace=namespace, **extra)
        lane.add(job, now)
        self._where[job.id] = lane
        self._dirty[job.id] = job
        return job

    # -- subscriptions ---------------------------------------------------------------
    def subscribe(self, sub: Subscription) -> None:
        """Bind a ``durable:subscriber`` trigger; its lane adopts the trigger's settings."""
        old = self.subs.add(sub)
        if old is not None and old.lane != sub.lane:
            self._deactivate_if_unused(old)
        lane = self.lanes.get(sub.lane)
        if lane is None:
            lane = self.lanes[sub.lane] = Lane(
                sub.lane, name=sub.topic, topic=sub.topic, fifo=sub.fifo,
                concurrency=sub.concurrency, max_attempts=sub.max_attempts,
                backoff_ms=sub.backoff_ms)
        elif lane.fifo != sub.fifo and (lane.jobs or lane.leased):
            log.warning("lane %s keeps mode %s while it holds jobs", lane.key,
                        "fifo" if lane.fifo else "concurrent")
        else:
            lane.fifo = sub.fifo
        # The last subscriber's settings win, as in the reference (§1.5).
        lane.concurrency, lane.max_attempts = sub.concurrency, sub.max_attempts
        lane.backoff_ms, lane.condition_function_id = sub.backoff_ms, sub.condition_function_id
        lane.active = True

    def unsubscribe(self, trigger_id: str) -> bool:
        """Unbind one trigger; the topic's other subscribers keep receiving."""
        sub = self.subs.remove(trigger_id)
        if sub is None:
            return False
        self._deactivate_if_unused(sub)
        return True

    def _deactivate_if_unused(self, sub: Subscription) -> None:
        if not self.subs.triggers_of_lane(sub.topic, sub.lane):
            self.lanes[sub.lane].active = False  # queued jobs stay stored

    # -- consumers -----------------------------------------------------------------
    def poll(self, now: int, durable_seq: int | None = None) -> Poll:
        """Lease every job that may be delivered now.

        ``durable_seq``: the largest ``seq`` whose record the shell knows is on disk; newer
        jobs (enqueued, their commit still running) stay ready for a later poll. None = all.
        Only new jobs need this: a retried or redriven job keeps its old ``seq``, and its
        record was durable before (a crash before its update commits costs at most a
        recount of one attempt, never the job).
        """
        out: list[Delivery] = []
        wake: int | None = None
        for lane in self.lanes.values():
            for job in lane.take(now, durable_seq):
                out.append(Delivery(job, lane.condition_function_id))
            if lane.active:
                due = lane.next_due()
                if due is not None and (wake is None or due < wake):
                    wake = due
        return Poll(out, wake)

    def succeeded(self, job_id: str, now: int) -> bool:
        lane = self._where.get(job_id)
        if lane is None or lane.ack(job_id, now) is None:
            return False  # a stale outcome (job discarded, or from before a restart)
        del self._where[job_id]
        self._dirty[job_id] = None
        return True

    def failed(self, job_id: str, error: str, now: int) -> Job | None:
        """Count a failed attempt; returns the job (``failed_at`` set if it hit the DLQ)."""
        lane = self._where.get(job_id)
        job = lane.nack(job_id, error, now) if lane is not None else None
        if job is not None:
            self._dirty[job_id] = job
            if job.failed_at is not None:
                log.warning("job %s of %s moved to the DLQ after %d attempts: %s",
                            job_id, lane.name, job.attempts_made, error)
        return job

    def released(self, job_id: str, now: int) -> bool:
        """A delivery that never happened (shutdown): ready again, no attempt counted."""
        lane = self._where.get(job_id)
        return lane is not None and lane.release(job_id, now)

    def abandon(self, writes: Iterable[tuple[str, Job | None]], after_seq: int, now: int) -> int:
        """A commit of ``writes`` failed: the jobs it created (``seq > after_seq``) were
        never stored and their enqueuers were told so; they must never run. Outcomes in it
        stand (the disk keeps the old record: at most one more delivery after a restart).
        Returns how many jobs were dropped."""
        dropped = 0
        for job_id, job in writes:
            if job is not None and job.seq > after_seq:
                lane = self._where.pop(job_id, None)
                if lane is not None and lane.drop(job_id, now):
                    dropped += 1
                self._dirty.pop(job_id, None)
        return dropped

    @property
    def last_seq(self) -> int:
        """The ``seq`` of the newest job so far: once the writes taken now are committed,
        every job up to it is durable."""
        return self._seq

    def has_writes(self) -> bool:
        return bool(self._dirty)

    def take_writes(self) -> list[tuple[str, Job | None]]:
        """Records changed since the last call: (job id, job to put, or None to delete)."""
        out, self._dirty = list(self._dirty.items()), {}
        return out

    # -- DLQ -----------------------------------------------------------------------
    def resolve(self, name: str) -> list[Lane]:
        """A configured queue name -> its lane; any other name is a topic -> its lanes."""
        if name in self.configs:
            return [self.lanes[fn_queue_key(name)]]
        return [lane for lane in self.lanes.values() if lane.topic == name]

    def redrive(self, name: str, now: int) -> int:
        """Move every DLQ job of a queue or topic back to ready with a fresh budget."""
        count = 0
        for lane in self.resolve(name):
            for job_id in sorted(lane.dlq, key=lambda j: lane.dlq[j].seq):
                self._redrive_one(lane, job_id, now)
                count += 1
        return count

    def redrive_message(self, name: str, job_id: str, now: int) -> int:
        for lane in self.resolve(name):
            if job_id in lane.dlq:
                self._redrive_one(lane, job_id, now)
                return 1
        return 0

    def discard_message(self, name: str, job_id: str) -> int:
        for lane in self.resolve(name):
            if lane.take_dlq(job_id) is not None:
                del self._where[job_id]
                self._dirty[job_id] = None
                return 1
        return 0

    def _redrive_one(self, lane: Lane, job_id: str, now: int) -> None:
        job = lane.take_dlq(job_id)
        assert job is not None
        job.attempts_made, job.failed_at, job.error, job.process_at = 0, None, None, None
        job.max_attempts = lane.max_attempts
        lane.add(job, now)
        self._dirty[job_id] = job
