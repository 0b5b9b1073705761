"""Pub/sub: ``publish`` an event to a topic; every ``subscribe`` trigger on it gets a copy.

Shows two functions, ``welcome::email`` and ``welcome::metrics``, each bound to the topic
``user.signed-up`` with a ``subscribe`` trigger, and two ``publish`` calls: both
subscribers receive both events. Pub/sub (the ``iii-pubsub`` worker) is fire-and-forget:
nothing is stored, a topic nobody subscribes to drops its events, and ``publish`` returns
``None`` once the event is handed out. For durable topics with retries, see
``durable_topic.py``.

Run it (two shells, from the repository's top):

    .venv/bin/iii-supervisor start conf/iii-config.yaml
    .venv/bin/python examples/pubsub.py

Exits with 0 once both subscribers have received both events, 1 otherwise.
"""
from __future__ import annotations

import os
import queue
import sys
import threading

from iii import register_worker

URL = os.environ.get("III_URL", "ws://127.0.0.1:49134")
TOPIC = "user.signed-up"
SUBSCRIBERS = ("welcome::email", "welcome::metrics")
USERS = ("ada", "bob")


def main() -> int:
    iii = register_worker(URL)
    received: queue.Queue[tuple[str, dict]] = queue.Queue()
    listening = {function_id: threading.Event() for function_id in SUBSCRIBERS}
    try:
        if not iii.wait_connected(5):
            print(f"could not reach the engine at {URL}", file=sys.stderr)
            return 1

        for function_id in SUBSCRIBERS:
            def handler(event: dict, function_id: str = function_id) -> None:
                if event.get("probe"):
                    listening[function_id].set()
                else:
                    received.put((function_id, event))

            iii.register_function(function_id, handler)
            iii.register_trigger({"type": "subscribe", "function_id": function_id,
                                  "config": {"topic": TOPIC}})

        # register_trigger returns at once and the engine acknowledges only a failed
        # binding, while pub/sub drops events nobody is bound for yet. So publish probes
        # until each subscriber has seen one: from then on, no event is missed.
        for _ in range(50):
            iii.trigger({"function_id": "publish", "payload": {"topic": TOPIC, "data": {"probe": True}}})
            if all(e.wait(0.1) for e in listening.values()):
                break
        else:
            print("the subscribe triggers never became active", file=sys.stderr)
            return 1

        for user in USERS:
            result = iii.trigger({"function_id": "publish",
                                  "payload": {"topic": TOPIC, "data": {"user": user}}})
            print(f"published {user} to {TOPIC!r}: publish returned {result!r}")

        got = set()
        for _ in range(len(SUBSCRIBERS) * len(USERS)):
            try:
                function_id, event = received.get(timeout=5)
            except queue.Empty:
                print(f"only {len(got)} deliveries arrived: {sorted(got)}", file=sys.stderr)
                return 1
            got.add((function_id, event["user"]))
        for function_id, user in sorted(got):
            print(f"{function_id} received user {user}")
        return 0 if len(got) == len(SUBSCRIBERS) * len(USERS) else 1
    finally:
        iii.shutdown()


if __name__ == "__main__":
    sys.exit(main())
