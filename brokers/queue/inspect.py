"""The results of ``engine::queue::list_topics|topic_stats|dlq_topics|dlq_messages``.

Read-only views over a ``QueueCore`` in the shapes of workers-b §1.6. Deliberate
differences:
  * ``dlq_topics`` lists each named queue once, by its plain name (the reference lists it
    twice, once as ``__fn_queue::<q>`` and once by name);
  * ``topic_stats`` of a named queue answers its effective config (the reference always
    says ``config: null``; a plain topic still does), and every answer carries
    ``missing_functions``: what its live jobs wait for that nobody has registered.
"""
from __future__ import annotations

from typing import Any

import msgpack

from brokers.queue.core import QueueCore
from brokers.queue.jobs import Job, fn_queue_key
from brokers.queue.missing import HasRoute, missing_functions

BROKER_TYPE = "builtin"


def list_topics(core: QueueCore) -> list[dict[str, Any]]:
    """Topics with at least one subscriber, then every named queue."""
    out = [{"name": topic, "broker_type": BROKER_TYPE, "subscriber_count": count}
           for topic, count in sorted(core.subs.topics().items())]
    for name, cfg in core.configs.items():
        out.append({"name": name, "broker_type": BROKER_TYPE,
                    "subscriber_count": cfg["concurrency"]})
    return out


def topic_stats(core: QueueCore, name: str, has_route: HasRoute = lambda ns, fid: True) -> dict[str, Any]:
    """``depth`` = waiting + in flight (live jobs); a topic's consumers = its triggers;
    ``has_route(namespace, function_id)``: is that function registered now."""
    lanes = core.resolve(name)
    config = core.configs.get(name)
    consumers = config["concurrency"] if config is not None else core.subs.topics().get(name, 0)
    return {"depth": sum(len(lane.jobs) for lane in lanes), "consumer_count": consumers,
            "dlq_depth": sum(len(lane.dlq) for lane in lanes),
            "config": dict(config) if config is not None else None,
            "missing_functions": missing_functions(lanes, has_route)}


def dlq_topics(core: QueueCore) -> list[dict[str, Any]]:
    """Every named queue, and every topic that has subscribers or DLQ entries."""
    out = [{"topic": name, "broker_type": BROKER_TYPE,
            "message_count": len(core.lanes[fn_queue_key(name)].dlq)} for name in core.configs]
    counts: dict[str, int] = {topic: 0 for topic in core.subs.topics()}
    for lane in core.lanes.values():
        if lane.topic is not None:
            counts[lane.topic] = counts.get(lane.topic, 0) + len(lane.dlq)
    out.extend({"topic": topic, "broker_type": BROKER_TYPE, "message_count": n}
               for topic, n in sorted(counts.items()) if n or topic in core.subs.topics())
    return out


def _message(job: Job) -> dict[str, Any]:
    view = job.dlq_view()
    return {"id": job.id, "payload": job.data, "error": job.error,
            "failed_at": (job.failed_at or 0) // 1000, "retries": job.attempts_made,
            # The reference measures its stored JSON; ours is the msgpack of the same entry.
            "size_bytes": len(msgpack.packb(view, use_bin_type=True))}


def dlq_messages(core: QueueCore, name: str, offset: int = 0, limit: int = 50) -> list[dict[str, Any]]:
    """DLQ entries of a queue or topic, newest first, paginated."""
    jobs = [job for lane in core.resolve(name) for job in lane.dlq.values()]
    jobs.sort(key=lambda j: (j.failed_at or 0, j.seq), reverse=True)
    return [_message(job) for job in jobs[offset:offset + limit]]
