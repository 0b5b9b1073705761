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
from tests.wsclient import RawClient, ok

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
        assert ok(c.call_when_found("state::list", {"scope": "math"})) == [5]  # the page's own add(2, 3)
        ids = {}
        for a, b in ((1, 2), (10, 20), (0.5, 0.25)):
            out = ok(c.call_when_found("math::add", {"a": a, "b": b}))
            assert out["result"] == a + b
            ids[out["id"]] = a + b
        for key, value in ids.items():
            assert ok(c.call("state::get", {"scope": "math", "key": key})) == value
        agg = ok(c.call_when_found("math::aggregation", {}))
        values = [5, 3, 30, 0.75]
        assert agg == {"count": 4, "sum": sum(values), "average": sum(values) / 4}
