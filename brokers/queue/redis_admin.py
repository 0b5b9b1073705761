"""The Redis queue's durable-topic subscriptions, DLQ (redrive, discard) and the
``engine::queue::*`` inspection functions, read from Redis: a part of ``RedisQueueBroker``
(redis_service.py), whose state it uses."""
from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

import msgpack

from brokers.kit import errors
from brokers.kit.broker import Call
from brokers.kit.errors import EngineError
from brokers.queue import inputs
from brokers.queue.jobs import fn_queue_key
from brokers.queue.redis_keys import BROKER_TYPE, PREFIX, LaneCfg, _s, decode_job, parse_ready_key
from brokers.queue.topics import parse_subscription

log = logging.getLogger(__name__)


class RedisAdmin:
    """Subscriptions, DLQ and inspection of ``RedisQueueBroker``."""

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
