"""Durable topics: ``iii::durable::publish`` to a topic, delivered to every subscriber with retries.

Shows two functions bound to the topic ``order.placed`` with ``durable:subscriber``
triggers, and one ``iii::durable::publish``: the ``iii-queue`` worker stores the message
before it answers, then delivers a copy to each subscriber, retrying a subscriber whose
handler fails (``shipping::reserve`` fails its first delivery here) without delivering
again to the one that succeeded. Unlike pub/sub (``pubsub.py``), nothing is lost when a
handler fails or the engine restarts. ``engine::queue::list_topics`` shows the topic
and its subscribers.

Run it (two shells, from the repository's top):

    .venv/bin/iii-supervisor start conf/iii-config.yaml
    .venv/bin/python examples/durable_topic.py

Exits with 0 once both subscribers have handled the message, 1 otherwise.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from collections import Counter

from iii import register_worker

URL = os.environ.get("III_URL", "ws://127.0.0.1:49134")
TOPIC = "order.placed"


def main() -> int:
    iii = register_worker(URL)
    deliveries: Counter[str] = Counter()
    handled: dict[str, dict] = {}
    both = threading.Event()
    lock = threading.Lock()

    def subscriber(function_id: str, fail_first: bool):
        def handler(message: dict) -> None:
            with lock:
                deliveries[function_id] += 1
                if fail_first and deliveries[function_id] == 1:
                    raise RuntimeError("warehouse offline")  # the queue retries this one
                handled[function_id] = message
                if len(handled) == 2:
                    both.set()
        return handler

    try:
        if not iii.wait_connected(5):
            print(f"could not reach the engine at {URL}", file=sys.stderr)
            return 1
        for function_id, fail_first in (("billing::invoice", False), ("shipping::reserve", True)):
            iii.register_function(function_id, subscriber(function_id, fail_first))
            iii.register_trigger({"type": "durable:subscriber", "function_id": function_id,
                                  "config": {"topic": TOPIC}})

        # register_trigger returns at once; a message published before a subscription
        # reaches iii-queue is not delivered to it. The queue's own listing says when
        # both subscriptions are in place.
        deadline = time.monotonic() + 5
        while True:
            topics = iii.trigger({"function_id": "engine::queue::list_topics", "payload": {}})
            subscribers = next((t["subscriber_count"] for t in topics if t["name"] == TOPIC), 0)
            if subscribers >= 2:
                break
            if time.monotonic() > deadline:
                print(f"{TOPIC} has {subscribers} subscribers, not 2", file=sys.stderr)
                return 1
            time.sleep(0.05)
        print(f"topic {TOPIC!r} has {subscribers} subscribers")

        result = iii.trigger({"function_id": "iii::durable::publish",
                              "payload": {"topic": TOPIC, "data": {"order": "A-17", "total": 42}}})
        print(f"published order A-17: iii::durable::publish returned {result!r}")

        if not both.wait(15):
            print(f"not both subscribers handled it: deliveries {dict(deliveries)}", file=sys.stderr)
            return 1
        for function_id in sorted(handled):
            print(f"{function_id} handled order {handled[function_id]['order']} "
                  f"after {deliveries[function_id]} deliveries")
        return 0
    finally:
        iii.shutdown()


if __name__ == "__main__":
    sys.exit(main())
