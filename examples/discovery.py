"""Discovery: ask the engine which functions, workers and trigger types it has.

Shows the ``engine::*`` built-ins, called like any other function: this worker (named
``example-catalog``) registers ``catalog::search`` with a description, then finds it with
``engine::functions::list``, sees itself in ``engine::workers::info``, and lists the
trigger types the engine can bind (``engine::triggers::list``: ``state``, ``subscribe``,
``durable:subscriber``, ... as the config's workers provide them).

Run it (two shells, from the repository's top):

    .venv/bin/iii-supervisor start conf/iii-config.yaml
    .venv/bin/python examples/discovery.py

Exits with 0 once the engine has listed the function and the worker, 1 otherwise.
"""
from __future__ import annotations

import os
import sys

from iii import InitOptions, register_worker

URL = os.environ.get("III_URL", "ws://127.0.0.1:49134")
NAME = "example-catalog"


def search(data: dict) -> list[str]:
    return [item for item in ("pen", "pencil", "book") if item.startswith(data.get("prefix", ""))]


def main() -> int:
    iii = register_worker(URL, InitOptions(worker_name=NAME))

    def engine(function_id: str, **payload: object) -> dict:
        return iii.trigger({"function_id": f"engine::{function_id}", "payload": payload})

    try:
        if not iii.wait_connected(5):
            print(f"could not reach the engine at {URL}", file=sys.stderr)
            return 1
        iii.register_function("catalog::search", search, description="Find items by prefix")

        found = engine("functions::list", prefix="catalog::")["functions"]
        for fn in found:
            print(f"function {fn['function_id']}: {fn.get('description')!r} (worker {fn['worker_name']})")
        me = engine("workers::info", name=NAME)
        print(f"worker {me['worker']['name']}: runtime {me['worker']['runtime']}, functions "
              f"{[fn['function_id'] for fn in me['functions']]}")
        types = [t["id"] for t in engine("triggers::list")["triggers"]]
        print(f"trigger types: {', '.join(types)}")
        return 0 if [fn["function_id"] for fn in found] == ["catalog::search"] else 1
    finally:
        iii.shutdown()


if __name__ == "__main__":
    sys.exit(main())
