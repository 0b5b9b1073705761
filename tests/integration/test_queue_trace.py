"""W3C trace context through the brokers in a real engine (protocol §9.1, workers-b §1.4/§1.5).

A job keeps the trace of the Enqueue (or of the durable publish) that made it, and every
delivery of it (first attempt, retry, condition call) runs in that trace with the producer's
baggage; pub/sub ``publish`` passes the publisher's context to its subscribers the same way.
The engine's spans sit between (issue 16): a delivery's ``traceparent`` keeps the trace id
and names the engine's span as its parent, and ``baggage`` carries ``iii.function.id`` of
the function called. A job made without context is in the trace the engine started for
the call that made it (every routed call has its span).
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


TRACE = TP[3:35]


def trace(frame: dict) -> tuple:
    """(trace id, the baggage without the engine's ``iii.function.id``) of a delivery."""
    tp, bg = frame.get("traceparent"), frame.get("baggage")
    assert tp is not None and tp[36:52] != TP[36:52], "the engine's span is the parent"
    if bg is not None:
        fn = [e for e in bg.split(",") if e.startswith("iii.function.id=")]
        assert fn == [f"iii.function.id={frame['function_id']}"]
        bg = ",".join(e for e in bg.split(",") if not e.startswith("iii.function.id=")) or None
    return tp[3:35], bg


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
    assert first["data"] == {"n": 1} and trace(first) == (TRACE, "tenant=acme")
    assert "metadata" not in first  # workers-b §1.4: a queue delivery carries no metadata
    worker.send({"type": "invocationresult", "invocation_id": first["invocation_id"],
                 "function_id": fn, "error": {"code": "boom", "message": "forced"}})
    retry = worker.next_call(fn)
    assert retry["invocation_id"] != first["invocation_id"] and trace(retry) == (TRACE, "tenant=acme")
    worker.answer(retry, None)


def test_enqueued_job_without_trace_context_is_in_the_trace_of_its_enqueue(worker) -> None:
    fn = fid("plain")
    worker.register_function(fn)
    ok(worker.call(fn, {"n": 2}, action={"type": "enqueue", "queue": "traced"}))
    inv = worker.next_call(fn)
    assert inv["data"] == {"n": 2}
    trace_id, baggage = trace(inv)
    assert trace_id != TRACE and baggage is None
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
    assert seen == {a: (TRACE, "tenant=acme"), b: (TRACE, "tenant=acme"), cond: (TRACE, "tenant=acme")}
    # A publish without context: its jobs are in the trace the engine started for it.
    ok(worker.call("iii::durable::publish", {"topic": topic, "data": {"k": 2}}))
    got = []
    for _ in range(3):
        inv = worker.next_call(a, b, cond)
        got.append(trace(inv))
        worker.answer(inv, True if inv["function_id"] == cond else None)
    assert len({t for t, _ in got}) == 1 and got[0][0] != TRACE and all(b is None for _, b in got)


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
    assert got == {a: (TRACE, "tenant=acme"), b: (TRACE, "tenant=acme")}
    ok(worker.call("publish", {"topic": topic, "data": {"n": 2}}, traceparent=TP))
    got = {}
    for _ in range(2):
        inv = worker.next_call(a, b)
        got[inv["function_id"]] = trace(inv)
    assert got == {a: (TRACE, None), b: (TRACE, None)}
