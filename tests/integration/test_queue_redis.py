"""The queue broker on Redis (``adapter: {name: redis}``) in a real engine against the
session's real redis-server: the builtin queue's semantics — enqueue validation, retries with
backoff, retries ahead of newer jobs, FIFO per group with groups in parallel, DLQ, redrive,
discard, durable fan-out, a missing target, redelivery after ``kill -9`` — with the state in
Redis (checked there too)."""
from __future__ import annotations

import json
import time
import uuid

import pytest

from tests.harness import QUEUE_READY, running_engine
from tests.integration.test_queue_service import enqueue, fail, wait_subscribers
# the builtin queue's own tests, run here again against this module's engine on Redis
from tests.integration.test_queue_service import (  # noqa: F401
    test_durable_fanout_and_unsubscribe_one, test_leased_job_is_delivered_again_after_kill_9)
from tests.wsclient import RawClient, fid, ok

QUEUES = {
    "payment": {"type": "fifo", "message_group_field": "tx", "backoff_ms": 50, "max_retries": 3,
                "concurrency": 4},
    "flaky": {"max_retries": 3, "backoff_ms": 100},
    "twice": {"max_retries": 2, "backoff_ms": 50},
    "once": {"max_retries": 1, "backoff_ms": 50},
    "order": {"max_retries": 5, "backoff_ms": 300, "concurrency": 1},
}


def queue_yaml(url: str, queues: dict, lease_ms: int = 3000) -> str:
    return (f"- name: iii-queue\n  config:\n    queue_configs: {json.dumps(queues)}\n"
            f"    adapter: {{name: redis, config: {{redis_url: \"{url}\", lease_ms: {lease_ms}, "
            f"heartbeat_ms: 500}}}}\n")


@pytest.fixture(scope="module")
def redis_url(redis_server):
    return redis_server.url(redis_server.fresh_db())


@pytest.fixture(scope="module")
def engine(redis_url):
    with running_engine(extra_workers_yaml=queue_yaml(redis_url, QUEUES), wait_for=QUEUE_READY) as eng:
        yield eng


@pytest.fixture
def worker(engine):
    with RawClient.declared(engine.url, "queue-redis-test") as w:
        yield w


@pytest.fixture(scope="module")
def rdb(redis_url):
    import redis
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def test_enqueue_roundtrip_errors_and_the_job_in_redis(worker, rdb) -> None:
    fn = fid("orders")
    worker.register_function(fn)
    ack = enqueue(worker, fn, {"tx": "t1", "amount": 5}, "payment")
    uuid.UUID(ok(ack)["messageReceiptId"])
    inv = worker.next_call(fn)
    assert inv["data"] == {"tx": "t1", "amount": 5}
    assert rdb.zcard("iii:queue:leased") >= 1  # leased with a deadline while it runs
    worker.answer(inv, {"ok": True})
    err = enqueue(worker, fn, {"x": 1}, "nope")["error"]
    assert err["code"] == "enqueue_error" and "nope" in err["message"]
    err = enqueue(worker, fn, {"amount": 1}, "payment")["error"]
    assert err["code"] == "enqueue_error" and "'tx'" in err["message"]
    err = enqueue(worker, fn, {"tx": None}, "payment")["error"]
    assert err["code"] == "enqueue_error" and "must not be null" in err["message"]
    deadline = time.monotonic() + 3
    while rdb.hget("iii:queue:depth", "__fn_queue::payment") not in (b"0", None):
        assert time.monotonic() < deadline, "the ack never reached Redis"
        time.sleep(0.02)


def test_fifo_order_with_a_failing_head(worker) -> None:
    fn = fid("pay")
    worker.register_function(fn)
    for seq in range(3):
        ok(enqueue(worker, fn, {"tx": "g", "seq": seq}, "payment"))
    first = worker.next_call(fn)
    assert first["data"]["seq"] == 0
    assert not [f for f in worker.frames_within(0.2) if f.get("function_id") == fn]  # group blocked
    fail(worker, first)
    order = []
    for _ in range(3):
        inv = worker.next_call(fn)
        order.append(inv["data"]["seq"])
        worker.answer(inv, None)
    assert order == [0, 1, 2]  # the retry of 0 came before 1: no overtaking


def test_fifo_groups_run_in_parallel(worker) -> None:
    fn = fid("pay.par")
    worker.register_function(fn)
    for g in ("a", "b", "c"):
        for seq in range(2):
            ok(enqueue(worker, fn, {"tx": g, "seq": seq}, "payment"))
    heads = [worker.next_call(fn) for _ in range(3)]  # one head per group, all at once
    assert sorted((h["data"]["tx"], h["data"]["seq"]) for h in heads) == [("a", 0), ("b", 0), ("c", 0)]
    for h in heads:
        worker.answer(h, None)
    rest = [worker.next_call(fn) for _ in range(3)]
    assert sorted((h["data"]["tx"], h["data"]["seq"]) for h in rest) == [("a", 1), ("b", 1), ("c", 1)]
    for h in rest:
        worker.answer(h, None)


def test_a_retry_goes_before_newer_jobs(worker) -> None:
    fn = fid("order")
    worker.register_function(fn)
    ok(enqueue(worker, fn, {"n": 0}, "order"))
    first = worker.next_call(fn)
    for n in (1, 2):
        ok(enqueue(worker, fn, {"n": n}, "order"))
    fail(worker, first)  # concurrency 1: 1 runs during the backoff and is held past it
    held = worker.next_call(fn)
    assert held["data"] == {"n": 1}
    time.sleep(0.5)  # the retry of 0 is due now, 2 has waited longer: the retry goes first
    worker.answer(held, None)
    order = [1]
    for _ in range(2):
        inv = worker.next_call(fn)
        order.append(inv["data"]["n"])
        worker.answer(inv, None)
    assert order == [1, 0, 2], order


def test_retry_backoff_dlq_and_redrive(worker, rdb) -> None:
    fn = fid("flaky")
    worker.register_function(fn)
    ok(enqueue(worker, fn, {"n": 1}, "flaky"))
    times = []
    for _ in range(3):
        inv = worker.next_call(fn)
        times.append(time.monotonic())
        fail(worker, inv)
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps[0] >= 0.09 and gaps[1] >= 0.19, gaps
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        msgs = ok(worker.call("engine::queue::dlq_messages", {"topic": "flaky"}))
        if msgs:
            break
        time.sleep(0.05)
    [msg] = msgs
    assert msg["payload"] == {"n": 1} and msg["retries"] == 3 and msg["error"].startswith("boom")
    assert rdb.zscore("iii:queue:dlq:__fn_queue::flaky", msg["id"]) is not None
    stats = ok(worker.call("engine::queue::topic_stats", {"topic": "flaky"}))
    assert stats["dlq_depth"] == 1 and stats["depth"] == 0 and stats["consumer_count"] == 10
    assert any(t["topic"] == "flaky" and t["message_count"] == 1
               for t in ok(worker.call("engine::queue::dlq_topics", {})))
    assert ok(worker.call("iii::queue::redrive", {"queue": "flaky"})) == {"queue": "flaky", "redriven": 1}
    inv = worker.next_call(fn)
    worker.answer(inv, None)
    assert ok(worker.call("engine::queue::topic_stats", {"topic": "flaky"}))["dlq_depth"] == 0
    err = worker.call("iii::queue::redrive", {"queue": ""})["error"]
    assert err == {"code": "queue_not_set", "message": "Queue name is required"}


def test_redrive_one_message_and_discard(worker) -> None:
    fn = fid("once")
    worker.register_function(fn)
    for n in (1, 2):
        ok(enqueue(worker, fn, {"n": n}, "once"))
        fail(worker, worker.next_call(fn))
    deadline = time.monotonic() + 3
    msgs: list = []
    while time.monotonic() < deadline and len(msgs) < 2:
        msgs = ok(worker.call("engine::queue::dlq_messages", {"topic": "once"}))
        time.sleep(0.05)
    assert [m["payload"]["n"] for m in msgs] == [2, 1]  # newest first
    one = ok(worker.call("iii::queue::redrive_message", {"queue": "once", "message_id": msgs[1]["id"]}))
    assert one == {"queue": "once", "message_id": msgs[1]["id"], "redriven": 1}
    inv = worker.next_call(fn)
    assert inv["data"] == {"n": 1}
    worker.answer(inv, None)
    gone = ok(worker.call("iii::queue::discard_message", {"queue": "once", "message_id": msgs[0]["id"]}))
    assert gone["redriven"] == 1
    assert ok(worker.call("engine::queue::dlq_messages", {"topic": "once"})) == []


def test_missing_target_retries_then_dlq(worker) -> None:
    ok(enqueue(worker, "ghost::nobody", {"n": 2}, "twice"))
    deadline = time.monotonic() + 8  # a function no host routes is taken after two sweeps
    msgs: list = []
    while time.monotonic() < deadline and not msgs:
        time.sleep(0.05)
        msgs = ok(worker.call("engine::queue::dlq_messages", {"topic": "twice"}))
    [msg] = msgs
    assert msg["retries"] == 2 and msg["error"].startswith("function_not_found")
    assert ok(worker.call("iii::queue::discard_message",
                          {"queue": "twice", "message_id": msg["id"]}))["redriven"] == 1


def test_durable_subscriber_retries_then_dlq(worker) -> None:
    topic, a = fid("topic.dlq"), fid("sub.dlq")
    worker.register_function(a)
    worker.send({"type": "registertrigger", "id": "td-" + topic, "trigger_type": "durable:subscriber",
                 "function_id": a, "config": {"topic": topic,
                                              "queue_config": {"maxRetries": 1, "backoffDelayMs": 50}}})
    wait_subscribers(worker, topic, 1)
    ok(worker.call("iii::durable::publish", {"topic": topic, "data": {"d": 1}}))
    for _ in range(2):  # maxRetries 1: two attempts
        fail(worker, worker.next_call(a))
    deadline = time.monotonic() + 3
    msgs: list = []
    while time.monotonic() < deadline and not msgs:
        time.sleep(0.05)
        msgs = ok(worker.call("engine::queue::dlq_messages", {"topic": topic}))
    assert [m["retries"] for m in msgs] == [2]
    assert ok(worker.call("iii::queue::redrive", {"topic": topic}))["redriven"] == 1
    worker.answer(worker.next_call(a), None)
