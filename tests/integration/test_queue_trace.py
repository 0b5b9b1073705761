"""W3C trace context through the brokers in a real engine (protocol §9.1, workers-b §1.4/§1.5).

A job keeps the ``traceparent``/``baggage`` of the Enqueue (or of the durable publish) that
made it, and every delivery of it (first attempt, retry, condition call) carries them
unchanged; a job made without them is delivered without them. Pub/sub ``publish`` passes the
publisher's context to its subscribers the same way. No spans are created, so the values are
the caller's own.
"""
from __future__ import annotations

import time

import pytest

from tests.harness import QUEUE_READY, running_engine
from tests.wsclient import RawClient, fid, ok, wait_for_function

QUEUES = {"traced": {"max_retries": 2, "backoff_ms": 50}}
TP = "00-e455c60af3b5da970b0a8e7937651be4-6d221395946d1e73-01"
BG = "tenant=acme,iii.function.id=producer::fn"


@pytest.fixture(scope="module")
def engine():
    with running_engine(queues=QUEUES, extra_workers_yaml="- name: iii-pubsub\n",
                        wait_for=QUEUE_READY) as eng:
        wait_for_function(eng.url, "publish", {"topic": "warmup", "data": None})
        yield eng


@pytest.fixture
def worker(engine):
    with RawClient.declared(engine.url, "trace-test") as w:
        yield w


def trace(frame: dict) -> tuple:
    return frame.get("traceparent"), frame.get("baggage")


def wait_subscribers(w: RawClient, topic: str, count: int) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if any(t["name"] == topic and t["subscriber_count"] == count
               for t in ok(w.call("engine::queue::list_topics", {}))):
            return
        time.sleep(0.05)
    raise AssertionError(f"{topic} never had {count} subscribers")


def test_enqueued_job_carries_its_trace_context_on_every_attempt(worker) -> None:
    fn = fid("traced")
    worker.register_function(fn)
    ok(worker.call(fn, {"n": 1}, action={"type": "enqueue", "queue": "traced"},
                   traceparent=TP, baggage=BG))
    first = worker.next_call(fn)
    assert first["data"] == {"n": 1} and trace(first) == (TP, BG)
    assert "metadata" not in first  # workers-b §1.4: a queue delivery carries no metadata
    worker.send({"type": "invocationresult", "invocation_id": first["invocation_id"],
                 "function_id": fn, "error": {"code": "boom", "message": "forced"}})
    retry = worker.next_call(fn)
    assert retry["invocation_id"] != first["invocation_id"] and trace(retry) == (TP, BG)
    worker.answer(retry, None)


def test_enqueued_job_without_trace_context_is_delivered_without_it(worker) -> None:
    fn = fid("plain")
    worker.register_function(fn)
    ok(worker.call(fn, {"n": 2}, action={"type": "enqueue", "queue": "traced"}))
    inv = worker.next_call(fn)
    assert inv["data"] == {"n": 2}
    assert "traceparent" not in inv and "baggage" not in inv
    worker.answer(inv, None)


def test_durable_publish_passes_the_publishers_context_to_each_subscriber(worker) -> None:
    topic, a, b, cond = fid("topic"), fid("sub.a"), fid("sub.b"), fid("cond")
    for fn in (a, b, cond):
        worker.register_function(fn)
    worker.send({"type": "registertrigger", "id": "ta-" + topic, "trigger_type": "durable:subscriber",
                 "function_id": a, "config": {"topic": topic}})
    worker.send({"type": "registertrigger", "id": "tb-" + topic, "trigger_type": "durable:subscriber",
                 "function_id": b, "config": {"topic": topic, "condition_function_id": cond}})
    wait_subscribers(worker, topic, 2)
    assert ok(worker.call("iii::durable::publish", {"topic": topic, "data": {"k": 1}},
                          traceparent=TP, baggage=BG)) is None
    seen = {}
    for _ in range(3):  # a's delivery, b's condition call, then b's delivery
        inv = worker.next_call(a, b, cond)
        seen[inv["function_id"]] = trace(inv)
        worker.answer(inv, True if inv["function_id"] == cond else None)
    assert seen == {a: (TP, BG), b: (TP, BG), cond: (TP, BG)}
    # A publish without context makes jobs without it.
    ok(worker.call("iii::durable::publish", {"topic": topic, "data": {"k": 2}}))
    got = []
    for _ in range(3):
        inv = worker.next_call(a, b, cond)
        got.append(trace(inv))
        worker.answer(inv, True if inv["function_id"] == cond else None)
    assert got == [(None, None)] * 3


def test_pubsub_publish_passes_the_publishers_context(worker) -> None:
    topic = fid("news")
    a, b = fid("pa"), fid("pb")
    for fn in (a, b):
        worker.register_function(fn)
        worker.send({"type": "registertrigger", "id": "t-" + fn, "trigger_type": "subscribe",
                     "function_id": fn, "config": {"topic": topic}})
    time.sleep(0.3)  # a subscribe trigger has no success ack
    assert ok(worker.call("publish", {"topic": topic, "data": {"n": 1}},
                          traceparent=TP, baggage=BG)) is None
    got = {}
    for _ in range(2):
        inv = worker.next_call(a, b)
        got[inv["function_id"]] = trace(inv)
    assert got == {a: (TP, BG), b: (TP, BG)}
    ok(worker.call("publish", {"topic": topic, "data": {"n": 2}}, traceparent=TP))
    got = {}
    for _ in range(2):
        inv = worker.next_call(a, b)
        got[inv["function_id"]] = trace(inv)
    assert got == {a: (TP, None), b: (TP, None)}
