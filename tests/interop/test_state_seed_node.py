"""The seed page's Node examples `math::add` and `math::aggregation` on the OFFICIAL npm
`iii-sdk` 0.22.1 (``node/state_seed.mjs``) against our engine with iii-state: each add is
stored with ``state::set``, and the aggregation over ``state::list`` of scope ``math`` counts
and sums exactly what was stored. The engine has no cron worker yet, so the test calls
``math::aggregation`` itself rather than waiting for its 30-minute schedule.
"""
from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.harness import Engine, start_engine
from tests.wsclient import RawClient

pytestmark = pytest.mark.interop

NODE_DIR = Path(__file__).resolve().parent / "node"


@pytest.fixture
def engine() -> Iterator[Engine]:
    eng = start_engine(extra_workers_yaml="- name: iii-state\n  config: {}\n")
    try:
        yield eng
    finally:
        eng.stop()


@pytest.fixture
def node_seed(engine: Engine) -> Iterator[subprocess.Popen[str]]:
    with RawClient.worker(engine.url) as c:
        call(c, "state::list_groups", {})  # iii-state has registered
    proc = subprocess.Popen(["node", str(NODE_DIR / "state_seed.mjs")], cwd=NODE_DIR,
                            env={**os.environ, "III_URL": engine.url}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ready = threading.Event()
    out: list[str] = []

    def read() -> None:
        for line in proc.stdout:
            out.append(line)
            ready.set() if line.startswith("SEED-READY") else None

    threading.Thread(target=read, daemon=True).start()
    try:
        if not ready.wait(20):
            proc.kill()
            raise AssertionError(f"state_seed.mjs not ready in 20 s: {out} {proc.stderr.read()[-3000:]}")
        yield proc
    finally:
        proc.kill()
        proc.wait(5)


def ok(frame: dict[str, Any]) -> Any:
    assert not frame.get("error"), frame
    return frame.get("result")


def call(c: RawClient, function_id: str, data: Any, within: float = 10.0) -> Any:
    """A call, retried while the function's registration is still on its way."""
    deadline = time.monotonic() + within
    while True:
        frame = c.call(function_id, data, timeout=10)
        err = frame.get("error")
        if not err or err.get("code") != "function_not_found" or time.monotonic() > deadline:
            return ok(frame)
        time.sleep(0.05)


def test_math_add_and_aggregation_through_the_node_sdk(engine: Engine, node_seed: Any) -> None:
    with RawClient.worker(engine.url) as c:
        assert call(c, "state::list", {"scope": "math"}) == [5]  # the page's own add(2, 3)
        ids = {}
        for a, b in ((1, 2), (10, 20), (0.5, 0.25)):
            out = call(c, "math::add", {"a": a, "b": b})
            assert out["result"] == a + b
            ids[out["id"]] = a + b
        for key, value in ids.items():
            assert ok(c.call("state::get", {"scope": "math", "key": key})) == value
        agg = call(c, "math::aggregation", {})
        values = [5, 3, 30, 0.75]
        assert agg == {"count": 4, "sum": sum(values), "average": sum(values) / 4}
