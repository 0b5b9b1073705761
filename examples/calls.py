"""The ways to call a function: wait for its result, fire and forget, and the errors a call raises.

Shows, with three functions of one small order service:
- ``orders::checkout`` calls ``orders::price`` synchronously from inside its handler (one
  function calling another through the engine) and waits for the total;
- ``orders::audit`` is triggered with ``TriggerAction.Void()``: the call returns ``None``
  at once and the audit runs on its own;
- a handler that raises reaches its caller as ``InvocationError`` (code
  ``invocation_failed``), and a call to a function nobody registered as
  ``InvocationError`` with code ``function_not_found``.

Run it (two shells, from the repository's top):

    .venv/bin/iii-supervisor start conf/iii-config.yaml
    .venv/bin/python examples/calls.py

Exits with 0 once every call behaved as described, 1 otherwise.
"""
from __future__ import annotations

import os
import sys
import threading

from iii import InvocationError, TriggerAction, register_worker

URL = os.environ.get("III_URL", "ws://127.0.0.1:49134")
PRICES = {"pen": 2.5, "book": 12.0}

iii = register_worker(URL)
audited: list[dict] = []
audit_done = threading.Event()


def price(data: dict) -> dict:
    unknown = [item for item in data["items"] if item not in PRICES]
    if unknown:
        raise ValueError(f"no price for {', '.join(unknown)}")
    return {"total": sum(PRICES[item] for item in data["items"])}


def checkout(data: dict) -> dict:
    # A synchronous call from inside a handler: sync handlers run on a thread pool, so
    # blocking here does not hold up the worker.
    quote = iii.trigger({"function_id": "orders::price", "payload": {"items": data["items"]}})
    return {"items": data["items"], "total": quote["total"]}


def audit(data: dict) -> None:
    audited.append(data)
    audit_done.set()


def main() -> int:
    try:
        if not iii.wait_connected(5):
            print(f"could not reach the engine at {URL}", file=sys.stderr)
            return 1
        iii.register_function("orders::price", price, description="Price a list of items")
        iii.register_function("orders::checkout", checkout, description="Price and audit an order")
        iii.register_function("orders::audit", audit, description="Record an order")

        order = iii.trigger({"function_id": "orders::checkout", "payload": {"items": ["pen", "book"]}})
        print(f"sync call: orders::checkout returned total {order['total']} "
              "(it asked orders::price)")

        result = iii.trigger({"function_id": "orders::audit", "payload": order,
                              "action": TriggerAction.Void()})
        print(f"void call: trigger returned {result!r} at once")
        if not audit_done.wait(5):
            print("the void call to orders::audit never ran", file=sys.stderr)
            return 1
        print(f"void call: orders::audit then ran on its own with total {audited[0]['total']}")

        try:
            iii.trigger({"function_id": "orders::price", "payload": {"items": ["kite"]}})
        except InvocationError as err:
            print(f"a raising handler: InvocationError code={err.code} message={err.message!r}")
        try:
            iii.trigger({"function_id": "orders::refund", "payload": {}})
        except InvocationError as err:
            print(f"an unknown function: InvocationError code={err.code}")
        return 0
    finally:
        iii.shutdown()


if __name__ == "__main__":
    sys.exit(main())
