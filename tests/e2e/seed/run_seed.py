"""Runs one seed example (saved verbatim next to this file) as a worker process.

Whole scripts (they call ``register_worker`` themselves) run as they are. Fragments rely on
the page's earlier examples for their context, so they run with exactly that context in
their globals: ``os``, ``uuid``, ``Logger``, ``TriggerAction``, ``HttpInvocationConfig`` and
``iii = register_worker(os.environ.get("III_URL", "ws://localhost:49134"))`` as in
math_add.py. After the example's top level has run, prints ``SEED-READY`` and stays up
serving (the SDK's loop thread is non-daemon, as in the official SDK).
Usage: python run_seed.py NAME.py
"""
from __future__ import annotations

import os
import runpy
import sys
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    path = HERE / sys.argv[1]
    source = path.read_text()
    if "register_worker(" in source:
        runpy.run_path(str(path), run_name="__main__")
    else:
        from iii import HttpInvocationConfig, Logger, TriggerAction, register_worker

        context = {"__name__": "__main__", "__file__": str(path), "os": os, "uuid": uuid,
                   "Logger": Logger, "TriggerAction": TriggerAction,
                   "HttpInvocationConfig": HttpInvocationConfig,
                   "iii": register_worker(os.environ.get("III_URL", "ws://localhost:49134"))}
        exec(compile(source, str(path), "exec"), context)
    print("SEED-READY", flush=True)


if __name__ == "__main__":
    main()
