"""Unregistering: take a function or a trigger back with the reference its registration returned.

Shows that ``register_function`` and ``register_trigger`` return references with an
``unregister()`` method: after ``fn_ref.unregister()`` a call of ``orders::create`` fails
with ``function_not_found``, and after ``trigger.unregister()`` the binding is gone from
the engine's list of registered triggers (``engine::registered-triggers::list``).

Run it (two shells, from the repository's top):

    .venv/bin/iii-supervisor start conf/iii-config.yaml
    .venv/bin/python examples/unregister.py

Exits with 0 once both are gone, 1 otherwise.
"""
from __future__ import annotations

import os
import sys

from iii import InvocationError, register_worker

URL = os.environ.get("III_URL", "ws://127.0.0.1:49134")


def create_order(data: dict) -> dict:
    return {"id": "123", "item": data["item"]}


def main() -> int:
    iii = register_worker(URL)

    def bindings_of(function_id: str) -> list[dict]:
        listing = iii.trigger({"function_id": "engine::registered-triggers::list",
                               "payload": {"function_id": function_id}})
        return listing["registered_triggers"]

    try:
        if not iii.wait_connected(5):
            print(f"could not reach the engine at {URL}", file=sys.stderr)
            return 1

        fn_ref = iii.register_function("orders::create", create_order)
        trigger = iii.register_trigger({"type": "subscribe", "function_id": "orders::create",
                                        "config": {"topic": "orders.requested"}})
        order = iii.trigger({"function_id": "orders::create", "payload": {"item": "pen"}})
        print(f"registered: orders::create answered {order}")
        print(f"registered: {len(bindings_of('orders::create'))} trigger bound to orders::create")

        trigger.unregister()
        left = bindings_of("orders::create")
        print(f"trigger.unregister(): {len(left)} triggers bound to orders::create")

        fn_ref.unregister()
        try:
            iii.trigger({"function_id": "orders::create", "payload": {"item": "pen"}})
        except InvocationError as err:
            print(f"fn_ref.unregister(): calling orders::create now fails with {err.code}")
            return 0 if err.code == "function_not_found" and not left else 1
        print("orders::create still answered after unregister()", file=sys.stderr)
        return 1
    finally:
        iii.shutdown()


if __name__ == "__main__":
    sys.exit(main())
