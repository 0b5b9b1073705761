"""The seed page's `math::add` and `math::aggregation` Python examples on our SDK against the
real engine with iii-state: every add is stored with ``state::set`` and the aggregation
(``state::list`` of scope ``math``) counts and sums exactly what was stored.

The examples run unchanged as worker processes through ``seed/run_seed.py`` (saved by the SDK
work). ``cron_trigger.py`` also binds a cron trigger; the engine has no cron worker yet, so
the test calls ``math::aggregation`` itself instead of waiting for the schedule.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.harness import Engine, start_engine
from tests.wsclient import RawClient

SEED = Path(__file__).resolve().parent / "seed"


class SeedWorker:
    """One seed example as a worker process, ready once it printed ``SEED-READY``."""

    def __init__(self, name: str, url: str) -> None:
        env = {**os.environ, "III_URL": url, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, str(SEED / "run_seed.py"), name], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        ready = threading.Event()

        def read() -> None:
            for line in self.proc.stdout:
                self.lines.append(line)
                if line.startswith("SEED-READY"):
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(15):
            self.stop()
            raise AssertionError(f"{name} not ready in 15 s:\n{''.join(self.lines)}")

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(5)


@pytest.fixture
def engine() -> Iterator[Engine]:
    eng = start_engine(extra_workers_yaml="- name: iii-state\n  config: {}\n")
    try:
        yield eng
    finally:
        eng.stop()


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


def test_math_add_and_aggregation_through_our_sdk(engine: Engine) -> None:
    with RawClient.worker(engine.url) as c:
        call(c, "state::list_groups", {})  # iii-state has registered
    workers = [SeedWorker("math_add.py", engine.url), SeedWorker("cron_trigger.py", engine.url)]
    try:
        with RawClient.worker(engine.url) as c:
            stored = call(c, "state::list", {"scope": "math"})
            assert stored == [5]  # the example's own top-level math::add(2, 3)
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
    finally:
        for w in workers:
            w.stop()
