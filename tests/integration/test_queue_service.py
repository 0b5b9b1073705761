"""The queue broker process in a real engine: Enqueue, retries, DLQ, redrive, durable
fan-out, a missing target, and redelivery of a leased job after ``kill -9``."""
from __future__ import annotations

import os
import signal
import threading
import time
import uuid

import pytest

from tests.harness import QUEUE_READY, running_engine
from tests.wsclient import RawClient, fid, ok

QUEUES = {
    "payment": {"type": "fifo", "message_group_field": "tx", "backoff_ms": 50, "max_retries": 3},
    "flaky": {"max_retries": 3, "backoff_ms": 100},
    "twice": {"max_retries": 2, "backoff_ms": 50},
    "once": {"max_retries": 1, "backoff_ms": 50},
}


@pytest.fixture(scope="module")
def engine():
    # The gateway accepts workers before the queue broker has registered its functions.
    with running_engine(queues=QUEUES, wait_for=QUEUE_READY) as eng:
        yield eng


@pytest.fixture
def worker(engine):
    with RawClient.declared(engine.url, "queue-test") as w:
        yield w


def enqueue(w: RawClient, fn: str, data, queue: str) -> dict:
    return w.call(fn, data, action={"type": "enqueue", "queue": queue})


def fail(w: RawClient, inv: dict) -> None:
    w.send({"type": "invocationresult", "invocation_id": inv["invocation_id"],
            "function_id": inv["function_id"], "error": {"code": "boom", "message": "forced failure"}})


def test_enqueue_roundtrip_and_errors(worker) -> None:
    fn = fid("orders")
    worker.register_function(fn)
    ack = enqueue(worker, fn, {"tx": "t1", "amount": 5}, "payment")
    receipt = ok(ack)["messageReceiptId"]
    uuid.UUID(receipt)
    inv = worker.next_call(fn)
    assert inv["data"] == {"tx": "t1", "amount": 5}
    worker.answer(inv, {"ok": True})
    err = enqueue(worker, fn, {"x": 1}, "nope")["error"]
    assert err["code"] == "enqueue_error" and "nope" in err["message"]
    err = enqueue(worker, fn, {"amount": 1}, "payment")["error"]
    assert err["code"] == "enqueue_error" and "'tx'" in err["message"]


def test_a_job_never_overtakes_the_registration_of_its_function(engine, worker) -> None:
    """The queue broker learns routes from the router but gets jobs from the gateway.
    With the router held up (SIGSTOP), a job enqueued right after registering its function
    used to reach the queue first: its only attempt missed the route and went to the DLQ
    as ``function_not_found`` (seen in CI under load). Two workers: one declared long ago
    (its call goes through the router until the router ACKs the registration) and one that
    declares, registers and enqueues while the router is stopped (its call waits behind
    its buffered registration until the router answers the declaration)."""
    old_fn, new_fn = fid("fresh"), fid("fresh")
    router = engine.pid("router")
    os.kill(router, signal.SIGSTOP)
    resume = threading.Timer(0.5, os.kill, (router, signal.SIGCONT))
    resume.start()
    try:
        with RawClient.declared(engine.url, "queue-newcomer") as newcomer:
            newcomer.register_function(new_fn)
            newcomer.send({"type": "invokefunction", "function_id": new_fn, "invocation_id": "n1",
                           "data": {"n": 2}, "action": {"type": "enqueue", "queue": "once"}})
            worker.register_function(old_fn)
            ok(enqueue(worker, old_fn, {"n": 1}, "once"))
            worker.answer(worker.next_call(old_fn), None)
            newcomer.answer(newcomer.next_call(new_fn), None)
    finally:
        resume.cancel()
        os.kill(router, signal.SIGCONT)
    assert ok(worker.call("engine::queue::dlq_messages", {"topic": "once"})) == []


def test_fifo_order_with_a_failing_head(worker) -> None:
    fn = fid("pay")
    worker.register_function(fn)
    for seq in range(3):
        ok(enqueue(worker, fn, {"tx": "g", "seq": seq}, "payment"))
    first = worker.next_call(fn)
    assert first["data"]["seq"] == 0
    fail(worker, first)
    order = []
    for _ in range(3):
        inv = worker.next_call(fn)
        order.append(inv["data"]["seq"])
        worker.answer(inv, None)
    assert order == [0, 1, 2]  # the retry of 0 came before 1: no overtaking


def test_retry_backoff_dlq_and_redrive(worker) -> None:
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
    assert ok(worker.call("iii::queue::redrive", {"queue": "flaky"})) == {"queue": "flaky", "redriven": 1}
    inv = worker.next_call(fn)
    worker.answer(inv, None)
    assert ok(worker.call("engine::queue::topic_stats", {"topic": "flaky"}))["dlq_depth"] == 0
    err = worker.call("iii::queue::redrive", {"queue": ""})["error"]
    assert err == {"code": "queue_not_set", "message": "Queue name is required"}


def test_missing_target_retries_then_dlq(worker) -> None:
    ok(enqueue(worker, "ghost::nobody", {"n": 2}, "twice"))
    deadline = time.monotonic() + 5
    msgs: list = []
    while time.monotonic() < deadline and not msgs:
        time.sleep(0.05)
        msgs = ok(worker.call("engine::queue::dlq_messages", {"topic": "twice"}))
    [msg] = msgs
    assert msg["retries"] == 2 and msg["error"].startswith("function_not_found")
    assert ok(worker.call("iii::queue::discard_message",
                              {"queue": "twice", "message_id": msg["id"]}))["redriven"] == 1


def subscribe(w: RawClient, trigger_id: str, fn: str, topic: str) -> None:
    w.send({"type": "registertrigger", "id": trigger_id, "trigger_type": "durable:subscriber",
            "function_id": fn, "config": {"topic": topic}})


def wait_subscribers(w: RawClient, topic: str, count: int) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        topics = ok(w.call("engine::queue::list_topics", {}))
        if any(t["name"] == topic and t["subscriber_count"] == count for t in topics):
            return
        time.sleep(0.05)
    raise AssertionError(f"{topic} never had {count} subscribers: {topics}")


def test_durable_fanout_and_unsubscribe_one(worker) -> None:
    topic, a, b = fid("topic"), fid("sub.a"), fid("sub.b")
    worker.register_function(a)
    worker.register_function(b)
    subscribe(worker, "ta-" + topic, a, topic)
    subscribe(worker, "tb-" + topic, b, topic)
    wait_subscribers(worker, topic, 2)
    assert ok(worker.call("iii::durable::publish", {"topic": topic, "data": {"k": 1}})) is None
    got = {}
    for _ in range(2):
        inv = worker.recv_until(lambda f: f.get("type") == "invokefunction" and f["function_id"] in (a, b))
        got[inv["function_id"]] = inv["data"]
        worker.answer(inv, None)
    assert got == {a: {"k": 1}, b: {"k": 1}}
    worker.send({"type": "unregistertrigger", "id": "ta-" + topic, "trigger_type": "durable:subscriber"})
    wait_subscribers(worker, topic, 1)
    ok(worker.call("iii::durable::publish", {"topic": topic, "data": 2}))
    inv = worker.recv_until(lambda f: f.get("type") == "invokefunction" and f["function_id"] in (a, b))
    assert inv["function_id"] == b
    worker.answer(inv, None)
    assert not [f for f in worker.frames_within(0.3) if f.get("function_id") == a]


def test_leased_job_is_delivered_again_after_kill_9(engine, worker) -> None:
    fn = fid("durable")
    worker.register_function(fn)
    ok(enqueue(worker, fn, {"keep": "me"}, "flaky"))
    first = worker.next_call(fn)  # leased, never answered
    pid = engine.kill("queue")
    engine.wait_running("queue", timeout=10, not_pid=pid)
    again = worker.next_call(fn, timeout=10)
    assert again["data"] == {"keep": "me"} and again["invocation_id"] != first["invocation_id"]
    worker.answer(again, None)
