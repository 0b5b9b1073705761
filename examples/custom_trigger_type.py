"""A trigger type of your own: one worker provides it, another binds a function to it.

Shows ``register_trigger_type``: the *provider* worker declares the trigger type ``ticker``
with a handler object; the engine hands it every binding of that type
(``register_trigger(trigger)`` with the binding's ``id``, ``function_id`` and ``config``)
and every removal (``unregister_trigger``). The provider then fires the bound function
itself, here ``times`` calls every ``interval_ms``. The *consumer* worker only registers
``clock::on-tick`` and binds it with ``register_trigger({"type": "ticker", ...})``,
exactly as it would bind a built-in type such as ``state`` or ``subscribe``. Both workers
live in this one script for brevity; they could be two programs in two languages.

Run it (two shells, from the repository's top):

    .venv/bin/iii-supervisor start conf/iii-config.yaml
    .venv/bin/python examples/custom_trigger_type.py

Exits with 0 once the bound function has ticked and the binding was removed, 1 otherwise.
"""
from __future__ import annotations

import os
import sys
import threading
from typing import Any

from iii import InitOptions, register_worker

URL = os.environ.get("III_URL", "ws://127.0.0.1:49134")
_print_lock = threading.Lock()


def say(line: str) -> None:
    """One whole line at a time: both workers print from their own threads."""
    with _print_lock:
        print(line, flush=True)


class Ticker:
    """The provider's handler: one thread per binding, calling its function on a schedule."""

    def __init__(self, iii: Any) -> None:
        self.iii = iii
        self.stops: dict[str, threading.Event] = {}
        self.finished = threading.Event()  # a binding has fired all its ticks
        self.removed = threading.Event()

    def register_trigger(self, trigger: Any) -> None:
        config = trigger.config or {}
        interval_ms, times = int(config.get("interval_ms", 1000)), int(config.get("times", 1))
        if interval_ms <= 0 or times <= 0:
            raise ValueError("interval_ms and times must be positive")  # the binder is told
        say(f"provider: {trigger.function_id} bound: {times} ticks every {interval_ms} ms")
        stop = self.stops[trigger.id] = threading.Event()
        threading.Thread(target=self._run, args=(trigger.function_id, interval_ms / 1000, times, stop),
                         daemon=True).start()

    def unregister_trigger(self, trigger: Any) -> None:
        stop = self.stops.pop(trigger.id, None)
        if stop is not None:
            stop.set()
        say("provider: binding removed")
        self.removed.set()

    def _run(self, function_id: str, interval: float, times: int, stop: threading.Event) -> None:
        for tick in range(1, times + 1):
            if stop.wait(interval):
                return
            answer = self.iii.trigger({"function_id": function_id, "payload": {"tick": tick}})
            say(f"provider: tick {tick} -> {function_id} answered {answer}")
        self.finished.set()


def main() -> int:
    provider = register_worker(URL, InitOptions(worker_name="example-ticker-provider"))
    consumer = register_worker(URL, InitOptions(worker_name="example-ticker-consumer"))
    ticks: list[int] = []
    try:
        if not (provider.wait_connected(5) and consumer.wait_connected(5)):
            print(f"could not reach the engine at {URL}", file=sys.stderr)
            return 1
        ticker = Ticker(provider)
        provider.register_trigger_type({"id": "ticker", "description": "Calls a function on a schedule"},
                                       ticker)

        def on_tick(event: dict) -> dict:
            ticks.append(event["tick"])
            return {"seen": len(ticks)}

        consumer.register_function("clock::on-tick", on_tick)
        binding = consumer.register_trigger({"type": "ticker", "function_id": "clock::on-tick",
                                             "config": {"interval_ms": 100, "times": 3}})
        if not ticker.finished.wait(10) or ticks != [1, 2, 3]:
            print(f"ticks {ticks} arrived, not [1, 2, 3]", file=sys.stderr)
            return 1
        binding.unregister()
        if not ticker.removed.wait(5):
            print("the provider was never told of the removal", file=sys.stderr)
            return 1
        say(f"consumer: clock::on-tick ran for ticks {ticks}")
        return 0
    finally:
        consumer.shutdown()
        provider.shutdown()


if __name__ == "__main__":
    sys.exit(main())
