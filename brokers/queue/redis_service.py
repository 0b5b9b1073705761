"""The queue broker on Redis (``adapter: {name: redis, config: {redis_url}}``): the builtin
queue's semantics on one Redis shared by every engine host.

Every state change of a job is one Lua script (redis_scripts.py, which also documents the
key layout): enqueue, take (a lease with a deadline), ack, nack (retry at ``now + backoff *
2^(attempts-1)``, with the job's original ``seq`` so that it goes before newer jobs, or the
DLQ), release, redrive, discard. An enqueue is acknowledged when its script returned (Redis
runs with AOF; with ``appendfsync always`` that is on disk). Enqueues of one loop iteration
(and those arriving while the previous script ran) go in one script call: group commit.

Who runs what: ready jobs live in one sorted set per (lane, namespace, function) — the
"per-function lanes" — and each host's queue process takes only from the sets of functions
its own route table has, so a job enqueued through host A runs on a worker connected to
host B when only B has that function. A set whose function no live host routes (each
incarnation announces its functions with its heartbeat) is taken by any host after two
sweeps, so a job for a missing function still fails (``function_not_found``), is retried and
reaches the DLQ, as with the builtin adapter.

Leases: a take leases jobs to this process's incarnation (``<host id>:<random>``) with a
deadline ``lease_ms`` ahead; the heartbeat (``SET hb:<inc> PX lease_ms`` every
``heartbeat_ms``) extends the deadlines of the jobs this process still has in flight (only
those: a lease it forgot expires). The reaper (every host, every sweep) returns the leases
of incarnations whose heartbeat key is gone and every expired lease; a restarted queue
process of the same host returns its predecessor's leases at once. A returned lease is not
a failed attempt (the delivery has no outcome), as after a crash of the builtin broker.

FIFO: a group is a Redis list; only its head is ever ready or leased (by one host at a
time), a failing head waits for its retry and blocks its group (retried inline), different
groups run in parallel, oldest head first.

Concurrency: per host. ``concurrency`` bounds the jobs of a queue this process has in flight
(its prefetch, like a RabbitMQ consumer's): N hosts run up to N x concurrency, which is what
scaling out is for, and it costs no shared counter on the hot path (a cluster-wide limit
would need a counter that a dead host's share must be reclaimed from). FIFO order does not
depend on it: a group's head is leased to one host at a time.

Wake-ups: a script that makes a ready set non-empty publishes its key on ``iii:queue:n``;
every host listens with a blocking ``get_message`` and takes at once. A sweep every
``heartbeat_ms / 2`` (reap, due retries, the list of non-empty sets, subscriber lanes)
covers a lost notification; a nack arms a timer for its retry time.

Durable topics: a subscription is registered in Redis (``tl:<topic>``: lane -> trigger
count, ``lanes``: its settings, last subscriber wins), so a publish through any host fans out
to every distinct (namespace, function) subscribed on any host; triggers of a dead
incarnation are removed by the reaper (the router of a restarted host registers them again).

Inspection (``engine::queue::*``) and redrive/discard read and change Redis, so every host
answers the same.

Split by concept: this module holds the life, enqueue/publish, taking jobs and outcomes;
``redis_keys`` the key layout and stored values, ``redis_admin`` subscriptions, DLQ and
inspection, ``redis_upkeep`` the timers, heartbeat, reaper, sweep and notify listener.
"""
from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any


from brokers.kit import errors, wire
from brokers.kit.broker import BusFactory, Call
from brokers.kit.errors import FUNCTION_NOT_FOUND, EngineError
from brokers.kit.redisconn import connect, host_id
from brokers.kit.units import RunContext
from brokers.queue import inputs
from brokers.queue.core import Delivery
from brokers.queue.jobs import Job, fn_queue_key, group_key, new_uuid4
from brokers.queue.redis_scripts import SCRIPTS
from brokers.queue.service import QueueBroker
from brokers.queue.redis_admin import RedisAdmin
from brokers.queue.redis_keys import (PREFIX, REMOTE_NODE, SEP, LaneCfg, _pack, _s, decode_job, now_ms,
                                      parse_ready_key, ready_key)
from brokers.queue.redis_upkeep import RedisUpkeep
from brokers.queue.topics import SUBSCRIBER_CONFIG, TRIGGER_TYPE, Subscription

log = logging.getLogger(__name__)


class RedisQueueBroker(RedisUpkeep, RedisAdmin, QueueBroker):
    """QueueBroker's delivery path (``_deliver``, conditions, missing-function warnings) over
    the Redis scripts instead of QueueCore + LMDB."""

    def __init__(self, ctx: RunContext, *, bus: BusFactory | None = None) -> None:
        super().__init__(ctx, bus=bus)
        acfg = ctx.config["adapter"]["config"]
        self.redis_url: str = acfg["redis_url"]
        self.lease_ms: int = acfg["lease_ms"]
        self.heartbeat_ms: int = acfg["heartbeat_ms"]
        self.host = host_id()
        self.inc = f"{self.host}:{new_uuid4()[:8]}"
        self.r: Any = None
        self.s: dict[str, Any] = {}
        self.lane_cfgs: dict[str, LaneCfg] = {
            fn_queue_key(name): LaneCfg(fn_queue_key(name), name, None, cfg["type"] == "fifo",
                                        cfg["concurrency"], cfg["max_retries"], cfg["backoff_ms"])
            for name, cfg in ctx.config["queue_configs"].items()}
        self.active: set[str] = set(self.lane_cfgs)
        """Lanes that are consumed: every named queue, subscriber lanes with a trigger."""
        self.busy: Counter[str] = Counter()
        self.inflight: dict[str, Job] = {}
        self.known: set[str] = set()
        """Ready keys believed non-empty (notified, swept, or not drained by the last take)."""
        self.orphans: set[str] = set()
        self._orphan_seen: Counter[str] = Counter()
        self.my_subs: dict[str, Subscription] = {}
        self._acks: list[str] = []
        self._nacks: list[tuple[str, str, int, int]] = []
        self._outcome_wake = asyncio.Event()
        self._enq: list[tuple[list, asyncio.Future]] = []
        self._enq_wake = asyncio.Event()
        self._taking = False
        self._take_again = False
        self._tasks: list[asyncio.Task] = []
        self._promote_at: int | None = None
        self._promote_handle: asyncio.TimerHandle | None = None
        self._fns = ""
        self._depth: dict[str, int] = {}
        self._dlq_size: dict[str, int] = {}

    # -- lifecycle -----------------------------------------------------------------
    def telemetry_figures(self) -> dict[str, Any]:
        figures = super(QueueBroker, self).telemetry_figures()
        names = {k: c.name for k, c in self.lane_cfgs.items()}
        figures["gauges"] = {
            "queue_depth": [[{"queue": names.get(k, k)}, n] for k, n in self._depth.items()],
            "queue_dlq_size": [[{"queue": names.get(k, k)}, n] for k, n in self._dlq_size.items()]}
        return figures

    async def setup(self) -> None:
        self.r = connect(self.redis_url)
        self.s = {name: self.r.register_script(text) for name, text in SCRIPTS.items()}
        while True:
            try:
                returned = await self._run("CLAIM", self.host, self.inc, self.lease_ms)
                break
            except Exception as exc:  # Redis not up yet: the queue waits for it
                log.warning("queue: Redis at %s not reachable (%s); retrying", self.redis_url, exc)
                await asyncio.sleep(0.5)
        log.info("queue on Redis %s as %s (%d leases of a previous run returned)",
                 self.redis_url, self.inc, returned)
        await self._refresh_lanes()
        self._register()
        for coro in (self._listen(), self._sweeper(), self._outcome_writer(), self._enqueue_writer()):
            self._tasks.append(asyncio.ensure_future(coro))

    def _register(self) -> None:
        shapes = inputs.INPUTS
        for fid, handler, text in (
                (inputs.ENQUEUE, self._enqueue, "Store a job for a named queue (TriggerAction.Enqueue)"),
                (inputs.PUBLISH, self._publish, "Publish to a durable topic"),
                (inputs.REDRIVE, self._redrive, "Move a DLQ back to its queue"),
                (inputs.REDRIVE_MESSAGE, self._redrive_message, "Move one DLQ message back to its queue"),
                (inputs.DISCARD_MESSAGE, self._discard_message, "Delete one DLQ message"),
                (inputs.TOPIC_STATS, self._topic_stats,
                 "Depth, consumers, DLQ depth and config of a queue or topic"),
                (inputs.DLQ_MESSAGES, self._dlq_messages, "DLQ messages of a queue or topic")):
            self.function(fid, handler, description=text, input=shapes.get(fid))
        self.function(inputs.LIST_TOPICS, self._list_topics, description="Topics and named queues")
        self.function(inputs.DLQ_TOPICS, self._dlq_topics,
                      description="Queues and topics with their DLQ counts")
        self.trigger_type(TRIGGER_TYPE, "Queue core module", on_register=self._subscribe,
                          on_unregister=self._unsubscribe, config=SUBSCRIBER_CONFIG)

    async def teardown(self) -> None:
        self._closing = True
        for task in self._tasks:
            task.cancel()
        if self._promote_handle is not None:
            self._promote_handle.cancel()
        try:
            await asyncio.wait_for(self._stop_cleanly(), 3.0)
        except Exception as exc:  # the reaper returns our leases when the heartbeat expires
            log.warning("queue: could not hand back leases on stop: %s", exc)
        await self.r.aclose()

    async def _stop_cleanly(self) -> None:
        await self._flush_outcomes()
        if self.inflight:
            await self._run("RELEASE", self.inc, *self.inflight)
        await self._run("RETIRE", self.inc)

    async def _run(self, name: str, *args: Any) -> Any:
        return await self.s[name](args=[PREFIX, *args])

    # -- enqueue / publish ---------------------------------------------------------
    def _job_args(self, lane: str, function_id: str, namespace: str, data: Any, *,
                  max_attempts: int, backoff_ms: int, group_id: str | None = None, **rec: Any) -> list:
        job_id = new_uuid4()
        record = {"lane": lane, "function_id": function_id, "data": data, "created_at": now_ms(),
                  "namespace": namespace, "group_id": group_id, **rec}
        grp = f"{PREFIX}g:{lane}{SEP}{group_id}" if group_id is not None else ""
        return [job_id, lane, ready_key(lane, namespace, function_id), grp, _pack(record),
                max_attempts, backoff_ms]

    def _store(self, args: list, value: Any, function_id: str) -> asyncio.Future:
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._enq.append((args, fut))
        self._enq_wake.set()
        code, text = _FAILED[function_id]

        out: asyncio.Future = asyncio.get_running_loop().create_future()

        def done(f: asyncio.Future) -> None:
            if out.done():
                return
            if f.cancelled():
                out.cancel()
            elif (exc := f.exception()) is not None:
                out.set_exception(EngineError(code, f"{text}: {exc}"))
            else:
                out.set_result(value)
        fut.add_done_callback(done)
        return out

    async def _enqueue_writer(self) -> None:
        """One script call for every enqueue that arrived while the previous one ran."""
        while True:
            await self._enq_wake.wait()
            self._enq_wake.clear()
            batch, self._enq = self._enq, []
            if not batch:
                continue
            flat = [a for args, _ in batch for a in args]
            try:
                await self._run("ENQUEUE", *flat)
            except asyncio.CancelledError:
                for _, fut in batch:
                    fut.cancel()
                raise
            except Exception as exc:
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for _, fut in batch:
                if not fut.done():
                    fut.set_result(None)

    def _enqueue(self, call: Call) -> asyncio.Future:
        req = inputs.enqueue(call.data)
        wire.stamp_caller(req.data, None)
        cfg = self.ctx.config["queue_configs"].get(req.queue)
        if cfg is None:
            raise EngineError(errors.ENQUEUE_ERROR, f"Queue '{req.queue}' not found")
        group_id = None
        if cfg["type"] == "fifo":
            field = cfg.get("message_group_field")
            if not isinstance(req.data, dict) or field not in req.data:
                raise EngineError(errors.ENQUEUE_ERROR, f"FIFO queue '{req.queue}' requires field "
                                                        f"'{field}' in data, but it was not found")
            if req.data[field] is None:
                raise EngineError(errors.ENQUEUE_ERROR,
                                  f"FIFO queue '{req.queue}': field '{field}' must not be null")
            group_id = group_key(req.data[field])
        args = self._job_args(fn_queue_key(req.queue), req.function_id, req.namespace, req.data,
                              max_attempts=cfg["max_retries"], backoff_ms=cfg["backoff_ms"],
                              group_id=group_id, message_id=req.message_id,
                              traceparent=req.traceparent, baggage=req.baggage)
        return self._store(args, {"messageReceiptId": req.message_id}, inputs.ENQUEUE)

    async def _topic_lanes(self, topic: str) -> list[LaneCfg]:
        """The subscriber lanes of ``topic`` on every host (Redis) and this one (pending)."""
        keys = {_s(k) for k in await self.r.hkeys(PREFIX + "tl:" + topic)}
        keys.update(s.lane for s in self.my_subs.values() if s.topic == topic)
        missing = [k for k in keys if k not in self.lane_cfgs]
        if missing:
            for key, raw in zip(missing, await self.r.hmget(PREFIX + "lanes", missing)):
                if raw is not None:
                    self.lane_cfgs[key] = LaneCfg.from_settings(key, raw)
        return [self.lane_cfgs[k] for k in sorted(keys) if k in self.lane_cfgs]

    async def _publish(self, call: Call) -> Any:
        topic, payload = inputs.publish(call.data)
        wire.stamp_caller(payload, None)
        traceparent, baggage = call.trace
        lanes = await self._topic_lanes(topic)
        if not lanes:
            return None  # nobody subscribed: dropped, as in the reference
        flat: list = []
        for lane in lanes:
            flat += self._job_args(lane.key, lane.function_id or "", lane.namespace or "default", payload,
                                   max_attempts=lane.max_attempts, backoff_ms=lane.backoff_ms,
                                   topic=topic, traceparent=traceparent, baggage=baggage)
        return await self._store(flat, None, inputs.PUBLISH)

    # -- taking jobs ---------------------------------------------------------------
    def _has_route(self, namespace: str, function_id: str) -> bool:
        """Routed by a process of this host: a remote entry (the cluster node's, issue 19's
        cross-host calls) does not count, the host that has the worker takes the job."""
        route = self.routes.get(namespace, function_id)
        return route is not None and route[0] != REMOTE_NODE

    def _on_routes(self, sender: str, header: dict, body: bytes) -> None:
        super()._on_routes(sender, header, body)
        # The functions this host routes, announced with the heartbeat (orphan detection).
        self._fns = "\n".join(f"{ns}{SEP}{fid}" for (ns, fid), (node, _) in self.routes.items()
                               if node != REMOTE_NODE)

    def _pump(self) -> None:
        self._pump_scheduled = False
        if self._closing or self.r is None:
            return
        if self._taking:
            self._take_again = True
            return
        plan = self._plan()
        if plan:
            self._taking = True
            task = asyncio.ensure_future(self._take(plan))
            task.add_done_callback(self._took)

    def _plan(self) -> list:
        by_lane: dict[str, list[str]] = {}
        for rk in self.known:
            try:
                lane, ns, fid = parse_ready_key(rk)
            except ValueError:
                continue
            if lane not in self.active or lane not in self.lane_cfgs:
                continue
            if not self._has_route(ns, fid) and rk not in self.orphans:
                continue
            by_lane.setdefault(lane, []).append(rk)
        plan: list = []
        for lane, rks in by_lane.items():
            room = self.lane_cfgs[lane].concurrency - self.busy[lane]
            if room <= 0:
                continue
            share = max(1, room // len(rks))
            for rk in rks:
                n = min(share, room)
                if n <= 0:
                    break
                plan += [rk, n]
                room -= n
        return plan

    async def _take(self, plan: list) -> None:
        deadline = now_ms() + self.lease_ms
        rows = await self._run("TAKE", self.inc, deadline, *plan)
        asked = {plan[i]: plan[i + 1] for i in range(0, len(plan), 2)}
        got: Counter[str] = Counter()
        for row in rows:
            try:
                job = decode_job(row)
            except Exception:
                log.exception("queue: undecodable job %r; released", row[0])
                await self._run("RELEASE", self.inc, row[0])
                continue
            rk = ready_key(job.lane, job.namespace, job.function_id)
            got[rk] += 1
            self.inflight[job.id] = job
            self.busy[job.lane] += 1
            lane = self.lane_cfgs.get(job.lane)
            self._deliver(Delivery(job, lane.condition_function_id if lane else None))
        for rk, n in asked.items():
            if got[rk] < n:
                self.known.discard(rk)  # drained; the next push into it notifies again

    def _took(self, task: asyncio.Task) -> None:
        self._taking = False
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.warning("queue: take failed (%s); retrying at the next sweep", exc)
            return
        self._take_again = False
        self._kick()  # a key that filled the whole ask may hold more; _plan decides

    # -- outcomes ------------------------------------------------------------------
    def _outcome(self, job: Job, exc: BaseException | None, target: str | None = None) -> None:
        if self._closing:
            return  # the lease is handed back at teardown (or expires)
        if self.inflight.pop(job.id, None) is None:
            return
        self.busy[job.lane] -= 1
        if isinstance(exc, EngineError) and exc.code == FUNCTION_NOT_FOUND:
            self._missed(job, target or job.function_id)
        if exc is None:
            self._acks.append(job.id)
        else:
            if isinstance(exc, EngineError):
                error = f"{exc.code}: {exc.message}"
            else:
                log.error("delivery of job %s failed: %r", job.id, exc)
                error = f"invocation_failed: {exc}"
            lane = self.lane_cfgs.get(job.lane)
            mx = lane.max_attempts if lane else job.max_attempts
            bo = lane.backoff_ms if lane else job.backoff_ms
            self._nacks.append((job.id, error, mx, bo))
        self._outcome_wake.set()
        self._kick()

    async def _outcome_writer(self) -> None:
        while True:
            await self._outcome_wake.wait()
            self._outcome_wake.clear()
            try:
                await self._flush_outcomes()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("queue: writing outcomes failed (%s); retrying", exc)
                await asyncio.sleep(0.2)
                self._outcome_wake.set()

    async def _flush_outcomes(self) -> None:
        """Acks and nacks in one script call each; on an error they are kept and retried."""
        while self._acks or self._nacks:
            acks, nacks = self._acks, self._nacks
            self._acks, self._nacks = [], []
            try:
                if acks:
                    await self._run("ACK", self.inc, *acks)
                    acks = []
                if nacks:
                    flat = [x for n in nacks for x in n]
                    retry_at = await self._run("NACK", self.inc, now_ms(), *flat)
                    nacks = []
                    due = [int(t) for t in retry_at if int(t) > 0]
                    if due:
                        self._arm_promote(min(due))
            except BaseException:
                self._acks[:0], self._nacks[:0] = acks, nacks
                raise

    @property
    def _held(self) -> list[str]:
        """Jobs whose lease this process must keep: in flight, or their outcome unwritten."""
        return [*self.inflight, *self._acks, *(n[0] for n in self._nacks)]


_FAILED = {
    inputs.ENQUEUE: (errors.ENQUEUE_ERROR, "Failed to enqueue job"),
    inputs.PUBLISH: (errors.PUBLISH_FAILED, "Failed to publish"),
}
