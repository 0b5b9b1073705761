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
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import msgpack

from brokers.kit import errors, frames, wire
from brokers.kit.broker import BusFactory, Call
from brokers.kit.errors import FUNCTION_NOT_FOUND, EngineError
from brokers.kit.redisconn import connect, host_id
from brokers.kit.units import RunContext
from brokers.queue import inputs
from brokers.queue.core import Delivery
from brokers.queue.jobs import Job, fn_queue_key, group_key, new_uuid4
from brokers.queue.redis_scripts import SCRIPTS
from brokers.queue.service import QueueBroker
from brokers.queue.topics import SUBSCRIBER_CONFIG, TRIGGER_TYPE, Subscription, parse_subscription

log = logging.getLogger(__name__)

PREFIX = "iii:queue:"
REMOTE_NODE = frames.CLUSTER
"""The owner of remote route entries: a job is taken only for a function served here."""
SEP = "\x1f"
BROKER_TYPE = "builtin"
ORPHAN_SWEEPS = 2
"""Sweeps a ready set must stay without any host routing its function before any host
takes it (its deliveries then fail with function_not_found)."""
_pack = msgpack.Packer(use_bin_type=True).pack


def now_ms() -> int:
    return int(time.time() * 1000)


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(slots=True)
class LaneCfg:
    key: str
    name: str
    topic: str | None
    fifo: bool
    concurrency: int
    max_attempts: int
    backoff_ms: int
    condition_function_id: str | None = None
    function_id: str | None = None
    namespace: str | None = None

    def settings(self) -> bytes:
        return _pack({"name": self.name, "topic": self.topic, "fifo": self.fifo,
                      "concurrency": self.concurrency, "max_attempts": self.max_attempts,
                      "backoff_ms": self.backoff_ms, "condition": self.condition_function_id,
                      "function_id": self.function_id, "namespace": self.namespace})

    @classmethod
    def from_settings(cls, key: str, raw: bytes) -> LaneCfg:
        d = msgpack.unpackb(raw, raw=False)
        return cls(key, d["name"], d["topic"], d["fifo"], d["concurrency"], d["max_attempts"],
                   d["backoff_ms"], d.get("condition"), d.get("function_id"), d.get("namespace"))


def ready_key(lane: str, namespace: str, function_id: str) -> str:
    return f"{PREFIX}r:{lane}{SEP}{namespace}{SEP}{function_id}"


def parse_ready_key(rk: str) -> tuple[str, str, str]:
    lane, ns, fid = rk[len(PREFIX) + 2:].split(SEP, 2)
    return lane, ns, fid


def decode_job(row: list) -> Job:
    """A take's row ``[id, rec, att, max, bo, seq]`` -> Job."""
    job_id, rec, att, mx, bo, seq = row
    fields = msgpack.unpackb(rec, raw=False)
    return Job(id=_s(job_id), seq=int(seq), max_attempts=int(mx), backoff_ms=int(bo),
               attempts_made=int(att), **fields)


class RedisQueueBroker(QueueBroker):
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

    # -- subscriptions -------------------------------------------------------------
    def _subscribe(self, binding: dict) -> Any:
        sub = parse_subscription(binding["id"], binding["function_id"], binding["namespace"],
                                 binding.get("config"))
        if sub is None:
            return None
        old = self.my_subs.get(sub.trigger_id)
        self.my_subs[sub.trigger_id] = sub
        cfg = LaneCfg(sub.lane, sub.topic, sub.topic, sub.fifo, sub.concurrency, sub.max_attempts,
                      sub.backoff_ms, sub.condition_function_id, sub.function_id, sub.namespace)
        self.lane_cfgs[sub.lane] = cfg
        self.active.add(sub.lane)
        if old is not None and old.lane != sub.lane and not any(
                s.lane == old.lane for s in self.my_subs.values()):
            self.active.discard(old.lane)  # the sweep re-reads the cluster's view
        return self._run("SUBSCRIBE", self.inc, sub.trigger_id, sub.topic, sub.lane, cfg.settings())

    def _unsubscribe(self, trigger_id: str) -> None:
        sub = self.my_subs.pop(trigger_id, None)
        if sub is None:
            return
        task = asyncio.ensure_future(self._unsubscribe_in_redis(trigger_id))
        self._tasks.append(task)
        task.add_done_callback(lambda t: t in self._tasks and self._tasks.remove(t))

    async def _unsubscribe_in_redis(self, trigger_id: str) -> None:
        for _ in range(20):
            try:
                await self._run("UNSUBSCRIBE", self.inc, trigger_id)
                await self._refresh_lanes()
                return
            except Exception as exc:
                log.warning("queue: unsubscribe of %s failed (%s); retrying", trigger_id, exc)
                await asyncio.sleep(0.5)

    async def _refresh_lanes(self) -> None:
        """Subscriber lanes and their settings as the cluster has them."""
        lanes = await self.r.hgetall(PREFIX + "lanes")
        topics = [_s(t) for t in await self.r.smembers(PREFIX + "topics")]
        active = set(k for k, c in self.lane_cfgs.items() if c.topic is None)
        if topics:
            pipe = self.r.pipeline(transaction=False)
            for t in topics:
                pipe.hkeys(PREFIX + "tl:" + t)
            for keys in await pipe.execute():
                active.update(_s(k) for k in keys)
        for key, raw in lanes.items():
            key = _s(key)
            try:
                self.lane_cfgs[key] = LaneCfg.from_settings(key, raw)
            except Exception:
                log.error("queue: undecodable settings of lane %r", key)
        active.update(s.lane for s in self.my_subs.values())
        self.active = active

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

    def _kick(self) -> None:
        if self._closing or not self.routes_known.is_set() or self._pump_scheduled:
            return
        self._pump_scheduled = True
        asyncio.get_running_loop().call_soon(self._pump)

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

    # -- timers: retries, heartbeat, reaper, sweep ---------------------------------
    def _arm_promote(self, at: int) -> None:
        if self._closing or (self._promote_at is not None and self._promote_at <= at):
            return
        if self._promote_handle is not None:
            self._promote_handle.cancel()
        self._promote_at = at
        loop = asyncio.get_running_loop()
        self._promote_handle = loop.call_later(max(0.0, (at - now_ms()) / 1000),
                                               lambda: self._tasks.append(asyncio.ensure_future(self._promote())))

    async def _promote(self) -> None:
        self._promote_at, self._promote_handle = None, None
        try:
            nxt = int(await self._run("PROMOTE", now_ms()))
        except Exception as exc:
            log.warning("queue: promoting due retries failed (%s)", exc)
            nxt = now_ms() + 200
        if nxt > 0:
            self._arm_promote(nxt)

    async def _sweeper(self) -> None:
        beat_every = self.heartbeat_ms / 1000
        last_beat = 0.0
        while True:
            try:
                if time.monotonic() - last_beat >= beat_every:
                    current = await self._run("HEARTBEAT", self.inc, self.host, self.lease_ms,
                                              now_ms() + self.lease_ms, self._fns, *self._held)
                    last_beat = time.monotonic()
                    if not current:
                        log.warning("queue: host %s has a newer queue process; this one keeps "
                                    "its leases until it stops", self.host)
                await self._sweep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("queue: sweep failed (%s)", exc)
            await asyncio.sleep(beat_every / 2)

    async def _sweep(self) -> None:
        now = now_ms()
        returned = await self._run("REAP", now)
        if returned:
            log.info("queue: %d leases of stopped hosts or expired returned", returned)
        nxt = int(await self._run("PROMOTE", now))
        if nxt > 0:
            self._arm_promote(nxt)
        await self._refresh_lanes()
        pipe = self.r.pipeline(transaction=False)
        pipe.smembers(PREFIX + "ne")
        pipe.hgetall(PREFIX + "fns")
        pipe.hgetall(PREFIX + "depth")
        ne, fns, depth = await pipe.execute()
        nonempty = {_s(k) for k in ne}
        self._depth = {_s(k): int(v) for k, v in depth.items()}
        served: set[str] = set()
        for text in fns.values():
            served.update(_s(text).split("\n"))
        self.known |= nonempty
        orphans = set()
        for rk in nonempty:
            try:
                _, ns, fid = parse_ready_key(rk)
            except ValueError:
                continue
            if not self._has_route(ns, fid) and f"{ns}{SEP}{fid}" not in served:
                self._orphan_seen[rk] += 1
                if self._orphan_seen[rk] >= ORPHAN_SWEEPS:
                    orphans.add(rk)
            else:
                self._orphan_seen.pop(rk, None)
        for rk in list(self._orphan_seen):
            if rk not in nonempty and rk not in self.orphans:
                del self._orphan_seen[rk]
        self.orphans = orphans | {rk for rk in self.orphans if rk in nonempty and rk in self._orphan_seen}
        self._kick()

    async def _listen(self) -> None:
        """Wake-ups: ready keys that became non-empty (and "L": subscriber lanes changed)."""
        while True:
            pubsub = self.r.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(PREFIX + "n")
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if msg is None or msg.get("type") != "message":
                        continue
                    data = _s(msg["data"])
                    if data == "L":
                        await self._refresh_lanes()
                    else:
                        self.known.add(data)
                    self._kick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("queue: Redis notifications lost (%s); resubscribing", exc)
                await asyncio.sleep(0.2)
            finally:
                try:
                    await pubsub.aclose()
                except Exception:
                    pass

    # -- DLQ -----------------------------------------------------------------------
    async def _resolve(self, name: str) -> list[LaneCfg]:
        if name in self.ctx.config["queue_configs"]:
            return [self.lane_cfgs[fn_queue_key(name)]]
        await self._refresh_lanes()
        return [c for c in self.lane_cfgs.values() if c.topic == name]

    async def _redrive(self, call: Call) -> Any:
        name = inputs.queue_name(inputs.REDRIVE, call.data)
        try:
            count = 0
            for lane in await self._resolve(name):
                count += int(await self._run("REDRIVE", lane.key, lane.max_attempts, ""))
        except EngineError:
            raise
        except Exception as exc:
            raise EngineError(errors.REDRIVE_FAILED, f"Failed to redrive: {exc}") from None
        return {"queue": name, "redriven": count}

    async def _redrive_message(self, call: Call) -> Any:
        name, message_id = inputs.queue_and_message(inputs.REDRIVE_MESSAGE, call.data)
        count = 0
        try:
            for lane in await self._resolve(name):
                count = int(await self._run("REDRIVE", lane.key, lane.max_attempts, message_id))
                if count:
                    break
        except Exception as exc:
            raise EngineError(errors.REDRIVE_MESSAGE_FAILED, f"Failed to redrive message: {exc}") from None
        return {"queue": name, "message_id": message_id, "redriven": count}

    async def _discard_message(self, call: Call) -> Any:
        name, message_id = inputs.queue_and_message(inputs.DISCARD_MESSAGE, call.data)
        count = 0
        try:
            for lane in await self._resolve(name):
                count = int(await self._run("DISCARD", lane.key, message_id))
                if count:
                    break
        except Exception as exc:
            raise EngineError(errors.DISCARD_MESSAGE_FAILED, f"Failed to discard message: {exc}") from None
        return {"queue": name, "message_id": message_id, "redriven": count}

    # -- inspection ----------------------------------------------------------------
    async def _topic_counts(self) -> dict[str, int]:
        topics = sorted(_s(t) for t in await self.r.smembers(PREFIX + "topics"))
        pipe = self.r.pipeline(transaction=False)
        for t in topics:
            pipe.hvals(PREFIX + "tl:" + t)
        out = {}
        for t, vals in zip(topics, await pipe.execute()):
            n = sum(int(v) for v in vals)
            if n > 0:
                out[t] = n
        return out

    async def _list_topics(self, call: Call) -> Any:
        try:
            counts = await self._topic_counts()
        except Exception as exc:
            raise EngineError("list_topics_failed", str(exc)) from None
        out = [{"name": t, "broker_type": BROKER_TYPE, "subscriber_count": n} for t, n in counts.items()]
        for name, cfg in self.ctx.config["queue_configs"].items():
            out.append({"name": name, "broker_type": BROKER_TYPE, "subscriber_count": cfg["concurrency"]})
        return out

    async def _topic_stats(self, call: Call) -> Any:
        name = inputs.topic_name(inputs.TOPIC_STATS, call.data)
        lanes = await self._resolve(name)
        config = self.ctx.config["queue_configs"].get(name)
        keys = [c.key for c in lanes]
        pipe = self.r.pipeline(transaction=False)
        if keys:
            pipe.hmget(PREFIX + "depth", keys)
        for k in keys:
            pipe.zcard(PREFIX + "dlq:" + k)
        pipe.smembers(PREFIX + "ne")
        res = await pipe.execute()
        depths = res.pop(0) if keys else []
        ne = res.pop()
        if config is not None:
            consumers = config["concurrency"]
        else:
            consumers = (await self._topic_counts()).get(name, 0)
        missing: Counter[tuple[str, str]] = Counter()
        mine = set(keys)
        rks = [_s(rk) for rk in ne]
        rks = [rk for rk in rks if parse_ready_key(rk)[0] in mine]
        if rks:
            pipe = self.r.pipeline(transaction=False)
            for rk in rks:
                pipe.zcard(rk)
            for rk, n in zip(rks, await pipe.execute()):
                _, ns, fid = parse_ready_key(rk)
                if n and not self._has_route(ns, fid):
                    missing[(fid, ns)] += n
        return {"depth": sum(int(d or 0) for d in depths), "consumer_count": consumers,
                "dlq_depth": sum(int(n) for n in res),
                "config": dict(config) if config is not None else None,
                "missing_functions": [{"function_id": f, "namespace": ns, "jobs": n}
                                      for (f, ns), n in sorted(missing.items())]}

    async def _dlq_topics(self, call: Call) -> Any:
        await self._refresh_lanes()
        names = list(self.ctx.config["queue_configs"])
        subs = [c for c in self.lane_cfgs.values() if c.topic is not None]
        pipe = self.r.pipeline(transaction=False)
        for name in names:
            pipe.zcard(PREFIX + "dlq:" + fn_queue_key(name))
        for c in subs:
            pipe.zcard(PREFIX + "dlq:" + c.key)
        res = await pipe.execute()
        out = [{"topic": n, "broker_type": BROKER_TYPE, "message_count": int(c)}
               for n, c in zip(names, res)]
        topics = await self._topic_counts()
        counts: dict[str, int] = {t: 0 for t in topics}
        for c, n in zip(subs, res[len(names):]):
            counts[c.topic] = counts.get(c.topic, 0) + int(n)  # type: ignore[index]
        self._dlq_size = {fn_queue_key(n): int(c) for n, c in zip(names, res)}
        out.extend({"topic": t, "broker_type": BROKER_TYPE, "message_count": n}
                   for t, n in sorted(counts.items()) if n or t in topics)
        return out

    async def _dlq_messages(self, call: Call) -> Any:
        name, offset, limit = inputs.dlq_page(call.data)
        lanes = await self._resolve(name)
        pipe = self.r.pipeline(transaction=False)
        for c in lanes:
            pipe.zrevrange(PREFIX + "dlq:" + c.key, 0, offset + limit - 1, withscores=True)
        entries = [( _s(i), int(score)) for rows in await pipe.execute() for i, score in rows]
        if not entries:
            return []
        pipe = self.r.pipeline(transaction=False)
        for job_id, _ in entries:
            pipe.hmget(PREFIX + "j:" + job_id, "rec", "att", "max", "bo", "seq", "err", "fat")
        jobs = []
        for (job_id, _), f in zip(entries, await pipe.execute()):
            if f[0] is None:
                continue
            job = decode_job([job_id, f[0], f[1], f[2], f[3], f[4]])
            job.error = _s(f[5]) if f[5] is not None else None
            job.failed_at = int(f[6]) if f[6] is not None else None
            jobs.append(job)
        jobs.sort(key=lambda j: (j.failed_at or 0, j.seq), reverse=True)
        return [{"id": j.id, "payload": j.data, "error": j.error, "failed_at": (j.failed_at or 0) // 1000,
                 "retries": j.attempts_made,
                 "size_bytes": len(msgpack.packb(j.dlq_view(), use_bin_type=True))}
                for j in jobs[offset:offset + limit]]


_FAILED = {
    inputs.ENQUEUE: (errors.ENQUEUE_ERROR, "Failed to enqueue job"),
    inputs.PUBLISH: (errors.PUBLISH_FAILED, "Failed to publish"),
}
