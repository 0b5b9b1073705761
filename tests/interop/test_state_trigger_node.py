"""The seed page's state-trigger.ts on the OFFICIAL npm ``iii-sdk`` 0.22.1, as written: the
block is read from the page at test time, compiled with the TypeScript compiler (its ``!``
is type syntax) and run by ``node/run_ts_seed.mjs``; its HTTP-invoked ``orders::webhook``
bound to state scope ``orders`` key ``status``. A ``state::set`` there makes the engine POST
the state event to a local receiver (``WEBHOOK_URL`` in the worker's environment, the
engine allowed to call 127.0.0.1).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.harness import STATE_WORKER_YAML, WorkerProcess, running_engine
from tests.receiver import LOCAL_SECURITY, Receiver
from tests.seedpage import needs_seed_page, seed_block
from tests.wsclient import RawClient

pytestmark = [pytest.mark.interop, needs_seed_page]

NODE_DIR = Path(__file__).resolve().parent / "node"


def test_the_seed_state_trigger_ts_posts_the_state_event_to_the_webhook() -> None:
    receiver = Receiver()
    try:
        with running_engine(extra_workers_yaml=LOCAL_SECURITY + STATE_WORKER_YAML,
                            wait_for="state::list_groups") as eng:
            worker = WorkerProcess(["node", str(NODE_DIR / "run_ts_seed.mjs"), "state-trigger.ts"], eng.url,
                                   cwd=NODE_DIR, stderr_apart=True, stdin_text=seed_block("state-trigger.ts"),
                                   env=dict(os.environ, WEBHOOK_URL=receiver.url("/orders-webhook-node")))
            try:
                worker.wait_line("SEED-READY", 20)
                with RawClient.declared(eng.url, "seed-state-node") as client:
                    got = None
                    deadline = time.monotonic() + 10
                    while got is None and time.monotonic() < deadline:
                        client.call("state::set", {"scope": "orders", "key": "status", "value": "shipped"})
                        try:
                            got = receiver.next(timeout=0.5)
                        except Exception:
                            pass
                assert got is not None, f"the webhook never received the state event: {worker.output()}"
                event = json.loads(got["body"])
                assert got["path"] == "/orders-webhook-node"
                assert got["headers"]["x-iii-function-path"] == "orders::webhook"
                assert event["new_value"] == "shipped" and event["key"] == "status"
            finally:
                worker.stop()
    finally:
        receiver.close()
