"""The seed's ``orders::create`` example on the official Node SDK (npm ``iii-sdk`` 0.22.1).

``node/queue_orders.mjs`` holds the page's ``trigger-enqueue.ts`` block as written (checked
below against ``shared/seed/use-functions-and-triggers.md``) plus the
``orders::process-order`` consumer. The engine has the ``payment`` queue of
``conf/iii-config.yaml`` (FIFO on ``transaction_id``). A raw-protocol client calls
``orders::create``; the example enqueues through ``TriggerAction.Enqueue`` and the job
reaches the Node consumer.
"""
from __future__ import annotations

import json
import re
import subprocess
import threading
import time
import uuid
from pathlib import Path
from queue import Empty, Queue
from typing import Any, Iterator

import pytest

from tests.harness import REPO, start_engine
from tests.wsclient import RawClient

pytestmark = pytest.mark.interop

NODE_DIR = Path(__file__).resolve().parent / "node"
SCRIPT = NODE_DIR / "queue_orders.mjs"
SEED_PAGE = REPO.parent / "shared" / "seed" / "use-functions-and-triggers.md"
PAYMENT = {"payment": {"max_retries": 10, "concurrency": 2, "type": "fifo",
                       "message_group_field": "transaction_id", "backoff_ms": 50}}


def seed_block(title: str) -> str:
    text = SEED_PAGE.read_text()
    m = re.search(r'^( *)```\w+ title="' + re.escape(title) + r'"[^\n]*\n(.*?)^\1```', text,
                  re.S | re.M)
    assert m, f"no block {title} on {SEED_PAGE}"
    indent = len(m.group(1))
    return "".join(line[indent:] for line in m.group(2).splitlines(keepends=True))


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    eng = start_engine(queues=PAYMENT)
    try:
        deadline = time.monotonic() + 10
        with RawClient.worker(eng.url) as w:
            while "error" in w.call("engine::queue::list_topics", {}):
                assert time.monotonic() < deadline, "queue broker never registered its functions"
                time.sleep(0.05)
        yield eng
    finally:
        eng.stop()


class NodeOrders:
    def __init__(self, url: str) -> None:
        self.proc = subprocess.Popen(["node", str(SCRIPT)], cwd=NODE_DIR, env={
            "PATH": "/usr/local/bin:/usr/bin:/bin", "III_URL": url},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.events: Queue[dict] = Queue()
        threading.Thread(target=self._read, daemon=True).start()
        assert self.next(15)["event"] == "ready"

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self.events.put(json.loads(line))

    def next(self, timeout: float = 5.0) -> dict:
        try:
            return self.events.get(timeout=timeout)
        except Empty:
            raise AssertionError(f"no event from node in {timeout}s; stderr: "
                                 f"{self.stop()}") from None

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        return (self.proc.stderr.read() or "")[-3000:]  # type: ignore[union-attr]


def test_script_holds_the_seed_block_verbatim() -> None:
    block = seed_block("trigger-enqueue.ts")
    body = block.split("\n", 2)[2]  # after "import { TriggerAction } from 'iii-sdk'" and a blank
    assert block.startswith("import { TriggerAction } from 'iii-sdk'\n")
    assert body in SCRIPT.read_text()


def call_retrying(w: RawClient, fn: str, data: Any, timeout_s: float = 10.0) -> dict:
    """The Node worker registers asynchronously: retry function_not_found briefly."""
    deadline = time.monotonic() + timeout_s
    while True:
        frame = w.call(fn, data, timeout=10)
        if (frame.get("error") or {}).get("code") != "function_not_found" or time.monotonic() > deadline:
            return frame
        time.sleep(0.05)


def test_orders_create_enqueues_to_payment_through_the_node_sdk(engine: Any) -> None:
    node = NodeOrders(engine.url)
    try:
        with RawClient.worker(engine.url) as w:
            out = call_retrying(w, "orders::create", {"transaction_id": "tx-9", "items": ["pen"], "total": 3})
            assert set(out.get("result") or {}) == {"orderId", "messageReceiptId"}, out
            uuid.UUID(out["result"]["orderId"])
            uuid.UUID(out["result"]["messageReceiptId"])
            ev = node.next()
            assert ev["event"] == "order"
            order = ev["order"]
            assert order.pop("_caller_worker_id") == w.worker_id  # the example spreads its input
            assert order == {"id": out["result"]["orderId"], "transaction_id": "tx-9",
                             "items": ["pen"], "total": 3}
            # FIFO queue: without the group field the enqueue is refused; the Node example
            # rethrows, so its caller gets an error and nothing is delivered.
            bad = w.call("orders::create", {"items": []}, timeout=10)
            assert "transaction_id" in json.dumps(bad.get("error")), bad
            assert node.events.empty()
    finally:
        node.stop()
