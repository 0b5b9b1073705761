"""The seed page's Node examples `math::add` and `math::aggregation` on the OFFICIAL npm
`iii-sdk` 0.22.1 (``node/state_seed.mjs``) against our engine with iii-state: each add is
stored with ``state::set``, and the aggregation over ``state::list`` of scope ``math`` counts
and sums exactly what was stored. The engine has no cron worker yet, so the test calls
``math::aggregation`` itself rather than waiting for its 30-minute schedule.

The script keeps the page's two function bodies as written (SDK 0.22.1 needs a stand-in
``Logger`` and a retried first call around them); a test checks them against the page
when it is beside the repository and is reported as skipped when it is not, while the
script itself runs either way.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.harness import STATE_READY, STATE_WORKER_YAML, Engine, WorkerProcess, running_engine
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
    with running_engine(extra_workers_yaml=STATE_WORKER_YAML, wait_for=STATE_READY) as eng:
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
