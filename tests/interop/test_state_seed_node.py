"""The seed page's Node examples `math::add` and `math::aggregation` on the OFFICIAL npm
`iii-sdk` 0.22.1 (``node/state_seed.mjs``) against our engine with iii-state: each add is
stored with ``state::set``, and the aggregation over ``state::list`` of scope ``math`` counts
and sums exactly what was stored. The engine has no cron worker yet, so the test calls
``math::aggregation`` itself rather than waiting for its 30-minute schedule.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.harness import STATE_READY, STATE_WORKER_YAML, Engine, WorkerProcess, running_engine
from tests.seedchecks import check_math_add_and_aggregation
from tests.wsclient import RawClient

pytestmark = pytest.mark.interop

NODE_DIR = Path(__file__).resolve().parent / "node"


@pytest.fixture
def engine() -> Iterator[Engine]:
    with running_engine(extra_workers_yaml=STATE_WORKER_YAML, wait_for=STATE_READY) as eng:
        yield eng


@pytest.fixture
def node_seed(engine: Engine) -> Iterator[WorkerProcess]:
    w = WorkerProcess(["node", str(NODE_DIR / "state_seed.mjs")], engine.url, cwd=NODE_DIR,
                      stderr_apart=True)
    try:
        w.wait_line("SEED-READY", 20)
        yield w
    finally:
        w.stop()


def test_math_add_and_aggregation_through_the_node_sdk(engine: Engine, node_seed: Any) -> None:
    with RawClient.worker(engine.url) as c:
        check_math_add_and_aggregation(c)
