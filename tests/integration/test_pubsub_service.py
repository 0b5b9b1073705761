"""The pub/sub broker process in a real engine: fan-out to two subscribers, unsubscribe of
one leaves the other, publish input errors."""
from __future__ import annotations

import time
import uuid

import pytest

from tests.harness import running_engine
from tests.wsclient import RawClient


@pytest.fixture(scope="module")
def engine():
    with running_engine(extra_workers_yaml="- name: iii-pubsub\n", wait_for="publish",
                        wait_data={"topic": "warmup", "data": None}) as eng:
        yield eng


def calls_of(w: RawClient, fns: set[str], seconds: float) -> list[dict]:
    out = []
    for frame in w.frames_within(seconds):
        if frame.get("type") == "invokefunction" and frame["function_id"] in fns:
            out.append(frame)
    return out


def test_fanout_and_unsubscribe_one_of_two(engine) -> None:
    topic = f"news-{uuid.uuid4().hex[:8]}"
    a, b = f"a::{topic}", f"b::{topic}"
    with RawClient.worker(engine.url) as w:
        w.declare("pubsub-test")
        for fn in (a, b):
            w.register_function(fn)
            w.send({"type": "registertrigger", "id": "t-" + fn, "trigger_type": "subscribe",
                    "function_id": fn, "config": {"topic": topic}})
        time.sleep(0.3)  # trigger registration has no success ack
        assert w.call("publish", {"topic": topic, "data": {"n": 1}}).get("result") is None
        got = calls_of(w, {a, b}, 0.5)
        assert sorted((f["function_id"], f["data"]["n"]) for f in got) == [(a, 1), (b, 1)]
        w.send({"type": "unregistertrigger", "id": "t-" + a, "trigger_type": "subscribe"})
        time.sleep(0.3)
        w.call("publish", {"topic": topic, "data": {"n": 2}})
        got = calls_of(w, {a, b}, 0.5)
        assert [(f["function_id"], f["data"]["n"]) for f in got] == [(b, 2)]


def test_publish_input_errors(engine) -> None:
    with RawClient.worker(engine.url) as w:
        assert w.call("publish", {"topic": "", "data": 1})["error"] == {
            "code": "topic_not_set", "message": "Topic is not set"}
        assert w.call("publish", {"topic": "t"})["error"]["code"] == "deserialization_error"


def test_a_publish_right_after_subscribing_is_delivered(engine) -> None:
    """No wait between registertrigger and publish: the binding must be in place, as in the
    reference (which binds synchronously). The pub/sub broker used to bind in a task of its
    own, so a publish the router passed on right after could find no subscriber (3 runs of
    5 of examples/pubsub.py missed their first event)."""
    with RawClient.worker(engine.url) as w:
        w.declare("eager-subscriber")
        for i in range(20):
            topic = f"eager-{uuid.uuid4().hex[:8]}"
            fn = f"eager::{topic}"
            w.register_function(fn)
            w.send({"type": "registertrigger", "id": "t-" + topic, "trigger_type": "subscribe",
                    "function_id": fn, "config": {"topic": topic}})
            assert w.call("publish", {"topic": topic, "data": {"i": i}}).get("error") is None
            try:
                assert w.next_call(fn, timeout=2.0)["data"]["i"] == i
            except TimeoutError:
                raise AssertionError(f"publish {i} right after subscribing was lost") from None
