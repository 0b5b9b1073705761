"""The first worker: register a function, call it through the engine, print the answer.

Shows: ``register_worker`` (connects in the background), ``register_function`` and a
synchronous ``trigger`` that waits for the function's result. The call goes out to the
engine and comes back to this same worker, exactly as a call from another worker would.

Run it (two shells, from the repository's top):

    .venv/bin/iii-supervisor start conf/iii-config.yaml
    .venv/bin/python examples/hello_worker.py

It prints the answer and exits with 0; it exits with 1 when it cannot reach the engine
(``III_URL``, default ``ws://127.0.0.1:49134``). With ``--serve`` it keeps serving
``greet::hello`` to other workers until Ctrl-C (or SIGTERM), then exits with 0.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from iii import register_worker

URL = os.environ.get("III_URL", "ws://127.0.0.1:49134")


def hello(data: dict) -> dict:
    name = data.get("name") or "world"
    return {"message": f"Hello, {name}!"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true",
                        help="keep serving greet::hello after the first call, until Ctrl-C")
    parser.add_argument("--connect-timeout", type=float, default=5.0, metavar="SECONDS",
                        help="how long to wait for the engine (default 5)")
    args = parser.parse_args()

    iii = register_worker(URL)  # returns at once; the connection is made in the background
    try:
        if not iii.wait_connected(args.connect_timeout):
            print(f"could not reach the engine at {URL} within {args.connect_timeout:g} s; "
                  "start it with: .venv/bin/iii-supervisor start conf/iii-config.yaml",
                  file=sys.stderr)
            return 1
        print(f"connected to {URL}")

        iii.register_function("greet::hello", hello, description="Say hello to someone")
        result = iii.trigger({"function_id": "greet::hello", "payload": {"name": "iii"}})
        print(f"greet::hello answered: {result['message']}")

        if args.serve:
            stop = threading.Event()
            # SIGINT too: a handler that sets the event lets the wait below end cleanly
            # instead of unwinding through KeyboardInterrupt.
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: stop.set())
            print("serving greet::hello; press Ctrl-C to stop", flush=True)
            stop.wait()
            print("stopped")
        return 0
    finally:
        iii.shutdown()


if __name__ == "__main__":
    sys.exit(main())
