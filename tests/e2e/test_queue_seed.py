"""The seed's ``orders::create`` example (Enqueue to ``payment``) end to end, on our SDK.

The example's Python block is read from the seed page itself
(``shared/seed/use-functions-and-triggers.md``, block ``trigger_enqueue.py``, through
``tests/seedpage.py``) and run unchanged as its own worker process (``seed/run_seed.py``),
with the context the page's earlier examples give it (``iii = register_worker(III_URL)``,
``uuid``, ``TriggerAction``); without the page beside the repository the test is reported
as skipped. The engine's ``payment`` queue is the one of ``conf/iii-config.yaml`` (FIFO on
``transaction_id``), so the input carries a ``transaction_id``. This process registers
``orders::process-order`` (the example's target) and checks that the job it receives is
the order the example built.
"""
from __future__ import annotations

import json
import queue
import uuid
from typing import Any, Iterator

import pytest

from iii import InitOptions, InvocationError, register_worker
from tests.harness import PAYMENT_QUEUES, QUEUE_READY, WorkerProcess, running_engine
from tests.sdkclient import trigger_when_found
from tests.seedpage import needs_seed_page, seed_worker
from tests.wsclient import RawClient

pytestmark = needs_seed_page


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    with running_engine(queues=PAYMENT_QUEUES, wait_for=QUEUE_READY) as eng:
        yield eng


@pytest.fixture
def seed(engine: Any) -> Iterator[WorkerProcess]:
    w = seed_worker("trigger_enqueue.py", engine.url)
    try:
        yield w
    finally:
        w.stop()


call = trigger_when_found


def test_orders_create_enqueues_to_payment_through_our_sdk(engine: Any, seed: Any) -> None:
    jobs: queue.Queue[Any] = queue.Queue()
    iii = register_worker(engine.url, InitOptions(worker_name="orders-consumer", daemon=True,
                                                  invocation_timeout_ms=10_000))
    try:
        assert iii.wait_connected(10)
        iii.register_function("orders::process-order", lambda order: jobs.put(order) or {"paid": True})
        out = call(iii, "orders::create", {"transaction_id": "tx-1", "items": ["book"], "total": 12})
        assert set(out) == {"orderId", "messageReceiptId"}
        uuid.UUID(out["orderId"])
        uuid.UUID(out["messageReceiptId"])
        order = jobs.get(timeout=5)
        # The example spreads its input into the order, and the engine had added
        # ``_caller_worker_id`` to that input (a sync call with an object payload, spec §5.3);
        # the enqueue adds none (workers-b §1.1 step 4) and, since only the engine sets that
        # key, the copy the payload carried is removed from the job.
        assert "_caller_worker_id" not in order
        assert order == {"id": out["orderId"], "transaction_id": "tx-1", "items": ["book"], "total": 12}
        # FIFO queue: an input without the group field is refused at enqueue, and the
        # example's trigger raises that error back to its caller.
        with pytest.raises(InvocationError) as info:
            call(iii, "orders::create", {"items": []})
        assert "transaction_id" in str(info.value), info.value
        assert jobs.empty()
    finally:
        iii.shutdown()
    stats = json.dumps(RawClient.worker(engine.url).call("engine::queue::topic_stats",
                                                         {"topic": "payment"}))
    assert '"dlq_depth": 0' in stats, stats
