"""State: the engine's key-value store (``state::*``) and a trigger that fires on changes.

Shows ``state::set``, ``state::get``, ``state::update`` (an atomic ``increment`` op),
``state::list``, ``state::delete`` on the scope ``example-inventory``, and a ``state``
trigger bound to that scope: the engine calls ``inventory::on-change`` with one event
(``state:created`` / ``state:updated`` / ``state:deleted``, old and new value) per write.
Values are stored durably by the ``iii-state`` worker of ``conf/iii-config.yaml``.

Run it (two shells, from the repository's top):

    .venv/bin/iii-supervisor start conf/iii-config.yaml
    .venv/bin/python examples/state.py

Exits with 0 once every write has been answered and its event received, 1 otherwise.
"""
from __future__ import annotations

import os
import queue
import sys
import threading

from iii import register_worker

URL = os.environ.get("III_URL", "ws://127.0.0.1:49134")
SCOPE = "example-inventory"
PROBE = "_probe"


def main() -> int:
    iii = register_worker(URL)
    events: queue.Queue[dict] = queue.Queue()
    listening = threading.Event()
    try:
        if not iii.wait_connected(5):
            print(f"could not reach the engine at {URL}", file=sys.stderr)
            return 1

        def state(fn: str, **payload: object) -> object:
            return iii.trigger({"function_id": f"state::{fn}", "payload": {"scope": SCOPE, **payload}})

        # A run that stopped half-way may have left values behind; start from an empty scope
        # (before the trigger is bound, so this makes no events).
        for key in ("apples", "pears", PROBE):
            state("delete", key=key)

        def on_change(event: dict) -> None:
            if event["key"] == PROBE:
                listening.set()
            else:
                events.put(event)

        iii.register_function("inventory::on-change", on_change)
        trigger = iii.register_trigger({"type": "state", "function_id": "inventory::on-change",
                                        "config": {"scope": SCOPE}})

        # register_trigger returns at once and the engine acknowledges only a failed
        # binding; a write made before the binding reaches iii-state fires nothing. So
        # write a probe key until its event arrives: from then on, every write fires.
        for attempt in range(50):
            state("set", key=PROBE, value=attempt)
            if listening.wait(0.1):
                break
        else:
            print("the state trigger never became active", file=sys.stderr)
            return 1
        state("delete", key=PROBE)

        print("set:", state("set", key="apples", value={"count": 3}))
        print("set:", state("set", key="pears", value={"count": 1}))
        print("get apples:", state("get", key="apples"))
        updated = state("update", key="apples", ops=[{"type": "increment", "path": "count", "by": 2}])
        print("update apples (+2):", updated)
        print("list:", sorted(v["count"] for v in state("list")))
        print("delete pears, it was:", state("delete", key="pears"))
        state("delete", key="apples")

        # One event per write, in write order for each key (the two keys' events may
        # interleave differently from run to run).
        expected = [("apples", "state:created"), ("pears", "state:created"),
                    ("apples", "state:updated"), ("pears", "state:deleted"),
                    ("apples", "state:deleted")]
        seen = []
        for _ in expected:
            try:
                event = events.get(timeout=5)
            except queue.Empty:
                print(f"only {len(seen)} of {len(expected)} state events arrived", file=sys.stderr)
                return 1
            seen.append((event["key"], event["event_type"]))
            print(f"trigger: {event['event_type']} {event['key']}: "
                  f"{event['old_value']} -> {event['new_value']}")
        trigger.unregister()
        if sorted(seen) != sorted(expected):
            print(f"unexpected events: {seen}", file=sys.stderr)
            return 1
        return 0
    finally:
        iii.shutdown()


if __name__ == "__main__":
    sys.exit(main())
