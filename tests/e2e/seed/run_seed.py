"""Runs one Python block of the seed page, read from stdin, as a worker process.

The tests read the block from the page itself (``tests/seedpage.py``) and pipe it here
unchanged; the title names it in tracebacks. Whole scripts (they call ``register_worker``
themselves) run as they are, as ``__main__``. Fragments rely on the page's earlier examples
for their context, so they run with exactly that context in their globals: ``os``,
``uuid``, ``Logger``, ``TriggerAction``, ``HttpInvocationConfig`` and
``iii = register_worker(os.environ.get("III_URL", "ws://localhost:49134"))`` as in the
page's ``math_add.py``. After the block's top level has run, prints
``SEED-ENGINE-MODULES <comma-separated>`` (the engine's modules the worker loaded: none is
the SDK's promise, tests/e2e/test_sdk_boundary.py), then ``SEED-READY``, and stays up
serving (the SDK's loop thread is non-daemon, as in the official SDK).
Usage: python run_seed.py TITLE < BLOCK
"""
from __future__ import annotations

import os
import sys
import uuid
from typing import Any

ENGINE_MODULES = ("brokers", "zmq", "lmdb")


def main() -> None:
    title = sys.argv[1]
    source = sys.stdin.read()
    context: dict[str, Any] = {"__name__": "__main__", "__file__": title}
    if "register_worker(" not in source:
        from iii import HttpInvocationConfig, Logger, TriggerAction, register_worker

        context.update(os=os, uuid=uuid, Logger=Logger, TriggerAction=TriggerAction,
                       HttpInvocationConfig=HttpInvocationConfig,
                       iii=register_worker(os.environ.get("III_URL", "ws://localhost:49134")))
    exec(compile(source, title, "exec"), context)
    engine = sorted(m for m in sys.modules if m.split(".")[0] in ENGINE_MODULES)
    print("SEED-ENGINE-MODULES " + ",".join(engine), flush=True)
    print("SEED-READY", flush=True)


if __name__ == "__main__":
    main()
