"""The seed page's `math::add` and `math::aggregation` Python examples on our SDK against the
real engine with iii-state: every add is stored with ``state::set`` and the aggregation
(``state::list`` of scope ``math``) counts and sums exactly what was stored.

The blocks ``math_add.py`` and ``cron_trigger.py`` are read from the page itself
(``tests/seedpage.py``) and run unchanged as worker processes through ``seed/run_seed.py``;
without the page beside the repository the test is reported as skipped. ``cron_trigger.py``
also binds ``math::aggregation`` to cron every 30 minutes: the test checks that iii-cron
accepted that binding and that the expression fires on the hour and the half hour, and
calls ``math::aggregation`` itself rather than waiting. The same block with a per-second
expression shows the page's handler really fired by cron (its ``Logger`` line), and a
function of our SDK bound the same way gets the §6.4 payload.
"""
from __future__ import annotations

import queue
import sys
import time
from typing import Iterator

import pytest

from tests.cronchecks import (PER_SECOND, check_binding_accepted, check_every_30_minutes, check_payload,
                              check_ticks, page_expression, per_second)
from tests.harness import STATE_READY, STATE_WORKER_YAML, Engine, WorkerProcess, running_engine
from tests.sdkclient import our_worker
from tests.seedchecks import check_math_add_and_aggregation
from tests.seedpage import RUNNER, needs_seed_page, seed_block, seed_worker
from tests.wsclient import RawClient

pytestmark = needs_seed_page


@pytest.fixture
def engine() -> Iterator[Engine]:
    with running_engine(extra_workers_yaml=STATE_WORKER_YAML + "- name: iii-cron\n",
                        wait_for=STATE_READY) as eng:
        yield eng


def test_math_add_and_aggregation_through_our_sdk(engine: Engine) -> None:
    workers = []
    try:
        for title in ("math_add.py", "cron_trigger.py"):
            workers.append(seed_worker(title, engine.url))
        with RawClient.worker(engine.url) as c:
            check_math_add_and_aggregation(c)
            expression = page_expression(seed_block("cron_trigger.py"))
            check_binding_accepted(c, "math::aggregation", expression, workers[1].output)
        check_every_30_minutes(expression)
    finally:
        for w in workers:
            w.stop()


def test_the_cron_example_every_second_really_fires(engine: Engine) -> None:
    """The page's block, only its expression made ``* * * * * *``: cron calls the page's
    ``aggregation``, which logs its result each time (its ``Logger`` writes to stderr)."""
    worker = WorkerProcess([sys.executable, str(RUNNER), "cron_trigger.py"], engine.url,
                           name="cron_trigger.py every second",
                           stdin_text=per_second(seed_block("cron_trigger.py")))
    try:
        worker.wait_line("SEED-READY")
        with RawClient.worker(engine.url) as c:
            check_binding_accepted(c, "math::aggregation", PER_SECOND, worker.output)
        deadline = time.monotonic() + 6
        while worker.output(10**6).count("Math aggregation completed") < 2:
            assert time.monotonic() < deadline, worker.output()
            time.sleep(0.1)
        assert '{"count": 0, "sum": 0, "average": 0}' in worker.output(10**6), worker.output()
    finally:
        worker.stop()


def test_a_per_second_cron_job_gets_the_payload_in_our_sdk(engine: Engine) -> None:
    got: queue.Queue = queue.Queue()
    with our_worker(engine.url, "cron-probe") as iii:
        iii.register_function("cron::probe", lambda payload: got.put(payload))
        trigger = iii.register_trigger({"type": "cron", "function_id": "cron::probe",
                                        "config": {"expression": PER_SECOND}})
        payloads = [got.get(timeout=5) for _ in range(2)]
        trigger.unregister()
    for payload in payloads:
        check_payload(payload, trigger.id)
    check_ticks(payloads)
