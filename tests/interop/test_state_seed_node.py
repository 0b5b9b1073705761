"""The seed page's Node examples `math::add` and `math::aggregation` on the OFFICIAL npm
`iii-sdk` 0.22.1 (``node/state_seed.mjs``) against our engine with iii-state: each add is
stored with ``state::set``, and the aggregation over ``state::list`` of scope ``math`` counts
and sums exactly what was stored. The page's cron binding of ``math::aggregation`` (every 30
minutes) is checked as accepted by iii-cron, and the test calls ``math::aggregation`` itself
rather than waiting for it; the same script with a per-second expression shows cron calling
the page's function (its ``Logger`` line on stderr), and a function of the official Node
SDK bound the same way gets the §6.4 payload.

The script keeps the page's two function bodies as written (SDK 0.22.1 needs a stand-in
``Logger`` and a retried first call around them); a test checks them against the page
when it is beside the repository and is reported as skipped when it is not, while the
script itself runs either way.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from tests.cronchecks import (PER_SECOND, check_binding_accepted, check_every_30_minutes, check_payload,
                              check_ticks, page_expression, per_second)
from tests.harness import STATE_READY, STATE_WORKER_YAML, Engine, WorkerProcess, running_engine
from tests.interop.sdkworkers import SdkWorker
from tests.seedchecks import check_math_add_and_aggregation
from tests.seedpage import needs_seed_page, seed_block
from tests.wsclient import RawClient

pytestmark = pytest.mark.interop

NODE_DIR = Path(__file__).resolve().parent / "node"
SCRIPT = NODE_DIR / "state_seed.mjs"


@needs_seed_page
def test_script_holds_the_seed_function_bodies_verbatim() -> None:
    script = SCRIPT.read_text()
    add = seed_block("math-add.ts")
    # the registration as written; the page's imports and its top-level call are adapted
    registration = add[add.index("iii.registerFunction("):add.index("\nawait iii.trigger(")]
    assert "'math::add'" in registration and registration in script
    assert seed_block("cron-trigger.ts") in script


@pytest.fixture
def engine() -> Iterator[Engine]:
    with running_engine(extra_workers_yaml=STATE_WORKER_YAML + "- name: iii-cron\n",
                        wait_for=STATE_READY) as eng:
        yield eng


@pytest.fixture
def node_seed(engine: Engine) -> Iterator[WorkerProcess]:
    w = WorkerProcess(["node", str(SCRIPT)], engine.url, cwd=NODE_DIR, stderr_apart=True)
    try:
        w.wait_line("SEED-READY", 20)
        yield w
    finally:
        w.stop()


def test_math_add_and_aggregation_through_the_node_sdk(engine: Engine, node_seed: Any) -> None:
    with RawClient.worker(engine.url) as c:
        check_math_add_and_aggregation(c)
        expression = page_expression(SCRIPT.read_text())
        check_binding_accepted(c, "math::aggregation", expression, lambda: "".join(node_seed.errors))
    check_every_30_minutes(expression)


def test_the_cron_example_every_second_really_fires(engine: Engine) -> None:
    """``state_seed.mjs`` with only its expression made ``* * * * * *``, run from stdin in
    the script's directory (so that ``iii-sdk`` resolves): cron calls the page's function."""
    w = WorkerProcess(["node", "--input-type=module", "-"], engine.url, cwd=NODE_DIR,
                      stderr_apart=True, stdin_text=per_second(SCRIPT.read_text()),
                      name="state_seed.mjs every second")
    try:
        w.wait_line("SEED-READY", 20)
        with RawClient.worker(engine.url) as c:
            check_binding_accepted(c, "math::aggregation", PER_SECOND, lambda: "".join(w.errors))
        deadline = time.monotonic() + 6
        while "".join(w.errors).count("Math aggregation completed") < 2:
            assert time.monotonic() < deadline, w.output()
            time.sleep(0.1)
    finally:
        w.stop()


def test_a_per_second_cron_job_gets_the_payload_in_the_node_sdk(
        engine: Engine, spawn: Callable[..., SdkWorker]) -> None:
    w = spawn("node", [{"op": "register", "function_id": "cron::probe"},
                       {"op": "bind", "trigger_type": "cron", "function_id": "cron::probe",
                        "config": {"expression": PER_SECOND}}])
    calls = [w.expect(lambda e: e.get("event") == "called" and e.get("function_id") == "cron::probe",
                      5, "a cron call") for _ in range(2)]
    payloads = [e["data"] for e in calls]
    for payload in payloads:
        check_payload(payload)
    assert payloads[0]["job_id"] == payloads[1]["job_id"]
    check_ticks(payloads)
