"""The seed's ``orders::create`` example on the official Node SDK (npm ``iii-sdk`` 0.22.1).

``node/queue_orders.mjs`` holds the page's ``trigger-enqueue.ts`` block as written plus the
``orders::process-order`` consumer. The engine has the ``payment`` queue of
``conf/iii-config.yaml`` (FIFO on ``transaction_id``). A raw-protocol client calls
``orders::create``; the example enqueues through ``TriggerAction.Enqueue`` and the job
reaches the Node consumer. A test checks the script against the page
(``shared/seed/use-functions-and-triggers.md``) when the page is beside the repository and
is reported as skipped when it is not; the script itself runs either way.
"""
from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.harness import PAYMENT_QUEUES, QUEUE_READY, WorkerProcess, running_engine
from tests.seedpage import needs_seed_page, seed_block
from tests.wsclient import RawClient

pytestmark = pytest.mark.interop

NODE_DIR = Path(__file__).resolve().parent / "node"
SCRIPT = NODE_DIR / "queue_orders.mjs"


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    with running_engine(queues=PAYMENT_QUEUES, wait_for=QUEUE_READY) as eng:
        yield eng


def node_orders(url: str) -> WorkerProcess:
    """The script as a worker: JSON events on stdout, the first one ``ready``."""
    node = WorkerProcess(["node", str(SCRIPT)], url, cwd=NODE_DIR, stderr_apart=True,
                         env={"PATH": "/usr/local/bin:/usr/bin:/bin"})
    try:
        assert node.next_event(15)["event"] == "ready"
    except BaseException:
        node.stop()
        raise
    return node


@needs_seed_page
def test_script_holds_the_seed_block_verbatim() -> None:
    block = seed_block("trigger-enqueue.ts")
    body = block.split("\n", 2)[2]  # after "import { TriggerAction } from 'iii-sdk'" and a blank
    assert block.startswith("import { TriggerAction } from 'iii-sdk'\n")
    assert body in SCRIPT.read_text()


def test_orders_create_enqueues_to_payment_through_the_node_sdk(engine: Any) -> None:
    node = node_orders(engine.url)
    try:
        with RawClient.worker(engine.url) as w:
            out = w.call_when_found("orders::create", {"transaction_id": "tx-9", "items": ["pen"], "total": 3})
            assert set(out.get("result") or {}) == {"orderId", "messageReceiptId"}, out
            uuid.UUID(out["result"]["orderId"])
            uuid.UUID(out["result"]["messageReceiptId"])
            ev = node.next_event()
            assert ev["event"] == "order"
            order = ev["order"]
            # The example spreads its input (which carried the engine's _caller_worker_id) into
            # the order; only the engine sets that key, so the job's copy is removed.
            assert "_caller_worker_id" not in order
            assert order == {"id": out["result"]["orderId"], "transaction_id": "tx-9",
                             "items": ["pen"], "total": 3}
            # FIFO queue: without the group field the enqueue is refused; the Node example
            # rethrows, so its caller gets an error and nothing is delivered.
            bad = w.call("orders::create", {"items": []}, timeout=10)
            assert "transaction_id" in json.dumps(bad.get("error")), bad
            assert node.events.empty()
    finally:
        node.stop()
